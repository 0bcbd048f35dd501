"""`gradlens import --from DIR`: a folder written by `gradlens export` comes back as the same run
(every table, bit for bit); the same files again are a no-op, changed files replace the run in
one transaction, and bad folders exit 2 with one line naming the file."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.store import restore
from gradlens.store.database import EXPORT_TABLES, Store
from tests.helpers import (
    export_with_one_curve_value_changed,
    synthetic_import_args,
    synthetic_selected_db,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(database, export folder) of the synthetic run after `select`."""
    tmp = tmp_path_factory.mktemp("restore-src")
    db = synthetic_selected_db(tmp, "src.duckdb")
    out = tmp / "export"
    assert main(["export", "--db", str(db), "--run", "syn", "--out", str(out)]) == 0
    return db, out


def _restore(db, folder) -> int:
    return main(["import", "--db", str(db), "--from", str(folder)])


def _tables(db, run: str = "syn") -> dict[str, pd.DataFrame]:
    """Every exported table of the run, rows sorted (order-free comparison)."""
    with Store(db, read_only=True) as s:
        run_id = s.resolve(run)["run_id"]
        frames = {
            t: s.con.execute(f"SELECT * FROM {t} WHERE run_id = ?", [run_id]).df()
            for t in EXPORT_TABLES
        }
    return {
        t: f.sort_values(list(f.columns), ignore_index=True, na_position="first")
        for t, f in frames.items()
    }


def _restored_rows(db) -> list[tuple]:
    with Store(db, read_only=True) as s:
        return s.con.execute("SELECT run_id, digest FROM restored").fetchall()


def _fails(capsys, argv, *words) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert all(w in err[0] for w in words), err[0]
    return err[0]


def test_restore_is_the_same_run(exported, tmp_path, capsys):
    src, folder = exported
    db = tmp_path / "fresh.duckdb"
    assert _restore(db, folder) == 0
    out = capsys.readouterr().out
    assert "run=syn restored" in out and "dots=90" in out
    want, got = _tables(src), _tables(db)
    for table in EXPORT_TABLES:
        assert len(got[table]) == len(want[table]) > 0, table
        pd.testing.assert_frame_equal(got[table], want[table], check_exact=True, obj=table)
    a, b = queries.load_arrays(src, "syn"), queries.load_arrays(db, "syn")
    for name in ("dots", "query_sq", "cand_sq", "target", "valid"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    assert list(a.query_ids) == list(b.query_ids) and list(a.names) == list(b.names)
    pd.testing.assert_frame_equal(queries.curves(db, "syn"), queries.curves(src, "syn"))
    i, j = queries.run_info(src, "syn"), queries.run_info(db, "syn")
    assert (j.run_id, j.name, j.status) == (i.run_id, i.name, "complete")
    assert j.config == i.config and j.stats == i.stats and j.created_at == i.created_at
    assert [r[0] for r in _restored_rows(db)] == [i.run_id]


def test_same_files_again_is_a_no_op(exported, tmp_path, capsys):
    _, folder = exported
    db = tmp_path / "x.duckdb"
    assert _restore(db, folder) == 0
    before = _tables(db)
    capsys.readouterr()
    assert _restore(db, folder) == 0
    out = capsys.readouterr().out
    assert "already restored" in out and "nothing to do" in out
    after = _tables(db)
    for table in EXPORT_TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)
    assert len(_restored_rows(db)) == 1


def test_a_changed_file_replaces_the_run(exported, tmp_path, capsys):
    _, folder = exported
    db = tmp_path / "x.duckdb"
    assert _restore(db, folder) == 0
    digest = _restored_rows(db)[0][1]
    changed = export_with_one_curve_value_changed(folder, tmp_path / "changed")
    capsys.readouterr()
    assert _restore(db, changed) == 0
    assert "run=syn replaced" in capsys.readouterr().out
    got = _tables(db)
    shipped = pq.read_metadata(changed / "selection_curves.parquet").num_rows
    assert len(got["selection_curves"]) == shipped  # replaced, not appended
    assert 0.123 in set(got["selection_curves"]["accuracy"])
    assert len(got["dots"]) == 90 and len(got["runs"]) == 1
    rows = _restored_rows(db)
    assert len(rows) == 1 and rows[0][1] != digest
    assert _restore(db, folder) == 0  # the original files again: replaced back
    assert 0.123 not in set(_tables(db)["selection_curves"]["accuracy"])


def test_a_failed_restore_leaves_the_old_run(exported, tmp_path, capsys, monkeypatch):
    _, folder = exported
    db = tmp_path / "x.duckdb"
    assert _restore(db, folder) == 0
    before, restored_before = _tables(db), _restored_rows(db)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    norms = pq.read_table(broken / "norms.parquet")
    pq.write_table(norms.slice(0, norms.num_rows - 1), broken / "norms.parquet")
    the_run = restore._the_run

    def vanish_after_checks(con, files):  # the last table disappears mid-restore
        run = the_run(con, files)
        (broken / "selection_curves.parquet").unlink()
        return run

    monkeypatch.setattr(restore, "_the_run", vanish_after_checks)
    capsys.readouterr()
    _fails(capsys, ["import", "--db", str(db), "--from", str(broken)], "cannot restore")
    after = _tables(db)
    for table in EXPORT_TABLES:
        pd.testing.assert_frame_equal(after[table], before[table], obj=table)
    assert _restored_rows(db) == restored_before


def test_name_used_by_another_run(exported, tmp_path, capsys):
    _, folder = exported
    db = tmp_path / "x.duckdb"
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert main(synthetic_import_args(other, db)) == 0  # another path: another run_id, 'syn'
    capsys.readouterr()
    _fails(capsys, ["import", "--db", str(db), "--from", str(folder)], "'syn'", "already used")


def _copy(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    return bad


def test_bad_folders_exit_2_with_one_line(exported, tmp_path, capsys):
    _, folder = exported
    db = str(tmp_path / "x.duckdb")
    imp = ["import", "--db", db, "--from"]
    _fails(capsys, imp + [str(tmp_path / "nope")], "nope", "not found")

    bad = _copy(folder, tmp_path)
    (bad / "runs.parquet").unlink()
    _fails(capsys, imp + [str(bad)], "runs.parquet", "not found")

    shutil.rmtree(bad)
    bad = _copy(folder, tmp_path)
    runs = pq.read_table(bad / "runs.parquet").to_pandas()
    two = pd.concat([runs, runs.assign(run_id="other", name="other")])
    pq.write_table(pa.Table.from_pandas(two, preserve_index=False), bad / "runs.parquet")
    _fails(capsys, imp + [str(bad)], "runs.parquet", "exactly one run", "found 2")

    shutil.rmtree(bad)
    bad = _copy(folder, tmp_path)
    dots = pq.read_table(bad / "dots.parquet")
    pq.write_table(dots.drop_columns(["dot"]), bad / "dots.parquet")
    _fails(capsys, imp + [str(bad)], "dots.parquet", "columns differ", "missing: dot DOUBLE")

    shutil.rmtree(bad)
    bad = _copy(folder, tmp_path)
    idx = dots.schema.get_field_index("dot")
    as_text = dots.set_column(idx, "dot", pa.array(dots.column("dot").to_numpy().astype(str)))
    pq.write_table(as_text, bad / "dots.parquet")
    _fails(capsys, imp + [str(bad)], "dots.parquet", "unexpected: dot VARCHAR")

    shutil.rmtree(bad)
    bad = _copy(folder, tmp_path)
    (bad / "norms.parquet").write_text("not parquet")
    _fails(capsys, imp + [str(bad)], "norms.parquet", "cannot read as Parquet")

    shutil.rmtree(bad)
    bad = _copy(folder, tmp_path)
    shutil.copy(folder / "dots.parquet", bad / "extra.parquet")
    _fails(capsys, imp + [str(bad)], "extra.parquet", "not a table")

    shutil.rmtree(bad)
    bad = _copy(folder, tmp_path)
    cands = pq.read_table(bad / "candidates.parquet").to_pandas()
    cands.loc[0, "run_id"] = "someone-else"
    pq.write_table(pa.Table.from_pandas(cands, preserve_index=False), bad / "candidates.parquet")
    _fails(capsys, imp + [str(bad)], "candidates.parquet", "someone-else")
    assert queries.list_runs(db).empty  # nothing of a bad folder was written


def test_from_excludes_the_long_table_options(exported, tmp_path, capsys):
    _, folder = exported
    db = str(tmp_path / "x.duckdb")
    _fails(capsys, ["import", "--db", db, "--from", str(folder), "--run", "x"], "--from", "--run")
    _fails(capsys, ["import", "--db", db, "--run", "x"], "--from DIR", "missing: --dots, --norms")
    _fails(capsys, ["import", "--db", db], "missing: --run, --dots, --norms")


def test_restore_run_python_api(exported, tmp_path):
    _, folder = exported
    db = tmp_path / "x.duckdb"
    first = restore.restore_run(db, folder)
    assert not first.already and not first.replaced and first.rows["runs"] == 1
    again = restore.restore_run(db, folder)
    assert again.already and again.run_id == first.run_id and again.digest == first.digest
    assert np.isfinite(first.seconds)


def _with_index(db, run: str = "syn") -> str:
    """Give the database's run an index (random vectors, 2 components, every example of the
    run's examples table) the way a compute job records one; returns its run id."""
    from gradlens.store.index import (
        IndexWriter,
        method_slug,
        publish_folder,
        record_method,
        work_index_dir,
    )

    with Store(db, read_only=True) as s:
        run_id = s.resolve(run)["run_id"]
        ex = s.frame("examples", run_id)
    ids = {s: sorted(ex.loc[ex["split"] == s, "example_id"]) for s in ("train", "query")}
    folder = work_index_dir(db, run_id) / method_slug("sjlt:d4")
    writer = IndexWriter(folder, "sjlt:d4", (0, 3), (4, 2), {s: len(v) for s, v in ids.items()})
    rng = np.random.default_rng(0)
    for split, rows in ids.items():
        for r in range(len(rows)):
            writer.write(split, r, [rng.standard_normal(4), rng.standard_normal(2)])
    description = writer.finalize()
    writer.close()
    publish_folder(folder, db, run_id, "sjlt:d4")
    with Store(db) as s, s.transaction():
        record_method(s, run_id, description, ids)
    return run_id


def test_an_index_comes_back_bit_for_bit_and_goes_with_an_export_without_one(tmp_path, capsys):
    from gradlens.store.index import index_methods, run_index_dir

    src = synthetic_selected_db(tmp_path, "src.duckdb")
    run_id = _with_index(src)
    out = tmp_path / "export"
    assert main(["export", "--db", str(src), "--run", "syn", "--out", str(out)]) == 0
    db = tmp_path / "x.duckdb"
    assert _restore(db, out) == 0
    assert "index_files=6 index_rows=" in capsys.readouterr().out
    assert index_methods(db, "syn") == ["sjlt:d4"]
    here, there = run_index_dir(src, run_id), run_index_dir(db, run_id)
    names = sorted(p.relative_to(here) for p in here.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(there) for p in there.rglob("*") if p.is_file())
    assert all((here / n).read_bytes() == (there / n).read_bytes() for n in names)
    plain = tmp_path / "plain"  # the same run exported without its index
    shutil.copytree(out, plain)
    shutil.rmtree(plain / "index")
    assert _restore(db, plain) == 0
    assert index_methods(db, "syn") == [] and not there.exists()
    (out / "index" / "index_files.parquet").write_bytes(b"not parquet")
    capsys.readouterr()
    assert _restore(db, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "index_files.parquet: cannot read as Parquet" in err[0]
