"""`gradlens select` as a reviewer reads it: `--json` (one object, every field typed, NaN as
null), intervals by row type (Clopper–Pearson for rows not selected, held-out intervals never
narrower at 0/N and N/N, none for in-sample rows) and a cost table whose every time is traced to
a time stored with the run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gradlens import selection as sel
from gradlens.cli import main
from gradlens.runs import read
from gradlens.runs.costs import COST_COLUMNS
from gradlens.selection.headline import HEADLINE_COLUMNS
from gradlens.selection.trust import clopper_pearson, permutation_null
from gradlens.store.database import Store
from tests.cli.test_compute import run as compute_run
from tests.cli.test_compute import small_data  # noqa: F401  (fixture)
from tests.helpers import synthetic_import_args

TYPES = {"not_selected", "selected_in_sample", "held_out"}


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def test_select_json_is_one_object_with_typed_fields(tmp_path, capsys):
    db = tmp_path / "x.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    capsys.readouterr()
    argv = ["select", "--db", str(db), "--run", "syn", "--folds", "2", "--null-draws", "5"]
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # the whole of stdout is one JSON object (NaN would not parse)
    assert out.strip().count("\n") == 0 and set(doc) == {"run", "headline", "costs"}
    with Store(db, read_only=True) as s:
        assert doc["run"] == {"name": "syn", "run_id": s.resolve("syn")["run_id"]}
    ids = [r["id"] for r in doc["headline"]]
    assert ids == ["full", "best_single", "best_single_heldout", "greedy_peak", "greedy_heldout",
                   "bm25"]  # fmt: skip
    for r in doc["headline"]:
        assert set(HEADLINE_COLUMNS) <= set(r)
        assert all(isinstance(r[c], str) for c in ("id", "metric", "detail"))
        assert r["type"] in TYPES and r["in_sample"] is (r["type"] == "selected_in_sample")
        assert _number(r["accuracy"]) and 0 <= r["accuracy"] <= 1
        if r["in_sample"]:  # no interval of its own; its null and its held-out row instead
            assert r["ci_lo"] is None and r["ci_hi"] is None and r["ci_method"] is None
            assert _number(r["null_hi"]) and r["heldout_id"] in ids
        else:
            assert r["ci_lo"] <= r["accuracy"] <= r["ci_hi"] and isinstance(r["ci_method"], str)
            assert r["null_hi"] is None and r["heldout_id"] is None
        paired = r["id"] != "full"
        assert (_number(r["diff_lo"]) and _number(r["diff_hi"])) == paired
        assert r["diff_lo"] is None or r["diff_lo"] <= r["diff_hi"]
        assert r["k"] is None or _number(r["k"])
        assert r["param_fraction"] is None or _number(r["param_fraction"])
    for c in doc["costs"]:
        assert set(c) == set(COST_COLUMNS) and isinstance(c["step"], str)
        assert c["seconds"] is None or _number(c["seconds"])
        assert isinstance(c["includes"], str) and isinstance(c["extrapolated"], bool)
    first = doc["costs"][0]  # an imported run: its dots were never timed here
    assert first["step"] == "dot-product precomputation" and first["seconds"] is None
    assert "not measured" in first["includes"]
    # the JSON is the stored table, field by field
    stored = read.stored_headline(db, "syn")
    for r, (_, s) in zip(doc["headline"], stored.iterrows(), strict=True):
        for c in HEADLINE_COLUMNS:
            want = s[c]
            if want is None or (isinstance(want, float) and math.isnan(want)):
                assert r[c] is None, c
            else:
                assert r[c] == want, c
    # the text report says the same numbers
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"{doc['headline'][0]['accuracy']:.4f}" in text and "null 95%" in text


def _instance(n: int, b: int, k: int, retrieved: bool, seed: int = 0):
    """Random dots where every component puts the original first (``retrieved``) or last."""
    rng = np.random.default_rng(seed)
    dots = rng.uniform(0.1, 0.5, size=(n, b, k))
    target = rng.integers(0, b, n)
    dots[np.arange(n), target] += 1.0 if retrieved else -1.0
    return dots, np.ones((n, k)), np.ones((n, b, k)), target


@pytest.mark.parametrize("retrieved", [True, False])
def test_intervals_at_the_boundary(retrieved):
    n = 124
    dots, qsq, csq, target = _instance(n, 5, 6, retrieved)
    table = sel.headline(dots, qsq, csq, target, [f"c{i}" for i in range(6)], null_draws=3)
    rows = {r.id: r for r in sel.headline_rows(table)}
    edge = 0.025 ** (1 / n)  # Clopper–Pearson at N/N, in closed form: 0.97067
    assert edge == pytest.approx(0.9707, abs=5e-5)
    for r in rows.values():
        assert r.accuracy == (1.0 if retrieved else 0.0)
        if r.in_sample:
            assert math.isnan(r.ci_lo) and math.isnan(r.ci_hi)
            continue
        if retrieved:
            assert r.ci_hi == 1.0
            lo_cp = edge
            assert (
                (r.ci_lo == pytest.approx(lo_cp, abs=1e-9))
                if r.type == "not_selected"
                else (r.ci_lo <= lo_cp + 1e-12)
            )
        else:
            assert r.ci_lo == 0.0
            hi_cp = 1 - edge
            assert (
                (r.ci_hi == pytest.approx(hi_cp, abs=1e-9))
                if r.type == "not_selected"
                else (r.ci_hi >= hi_cp - 1e-12)
            )
    assert rows["best_single_heldout"].type == rows["greedy_heldout"].type == "held_out"


def test_not_selected_intervals_are_clopper_pearson_of_the_count():
    rng = np.random.default_rng(3)
    n, b, k = 90, 4, 7
    dots = rng.normal(size=(n, b, k))
    qsq, csq = rng.uniform(1, 2, (n, k)), rng.uniform(1, 2, (n, b, k))
    target = rng.integers(0, b, n)
    bm = rng.random((n, b))
    projected = {"sjlt:0.5": (dots * rng.uniform(0.5, 1.5, dots.shape), qsq, csq)}
    table = sel.headline(
        dots, qsq, csq, target, [f"c{i}" for i in range(k)], bm25=bm, projected=projected,
        null_draws=2,
    )  # fmt: skip
    arrays = {"full": (dots, qsq, csq), "project:sjlt:0.5": projected["sjlt:0.5"]}
    for r in sel.headline_rows(table):
        if r.type != "not_selected":
            continue
        if r.id == "bm25":
            hits = sum(bm[i, target[i]] > np.delete(bm[i], target[i]).max() for i in range(n))
        else:  # the plain loop: cosine of every candidate, original strictly first
            d, q, c = arrays[r.id]
            hits = 0
            for i in range(n):
                cos = [d[i, j].sum() / (math.sqrt(q[i].sum() * c[i, j].sum()) + 1e-12)
                       for j in range(b)]  # fmt: skip
                hits += all(cos[target[i]] > cos[j] for j in range(b) if j != target[i])
        assert r.accuracy * n == pytest.approx(hits, abs=1e-9)
        lo, hi = clopper_pearson(hits, n)
        assert abs(r.ci_lo - lo) <= 1e-9 and abs(r.ci_hi - hi) <= 1e-9
        assert r.ci_method == "clopper-pearson"


@pytest.fixture(scope="module")
def projected_run(tmp_path_factory, tiny_model_dir, small_data):  # noqa: F811
    """A computed run with a projection, after `select`."""
    db = tmp_path_factory.mktemp("costs") / "costs.duckdb"
    compute_run(tiny_model_dir, *small_data, db, project="sjlt:0.5")
    assert main(["select", "--db", str(db), "--run", _run_name(db), "--folds", "2"]) == 0
    return db


def _run_name(db) -> str:
    with Store(db, read_only=True) as s:
        return s.con.execute("SELECT name FROM runs").fetchone()[0]


def _expected(stats: dict, timings, n_queries: int) -> dict[str, float]:
    """Every cost row's seconds, from the stored times by the rows' own definitions."""
    t = {(r.what, r.objective): r.seconds for r in timings.itertuples() if r.method == "exact"}
    u = stats["uncached_projection"]
    measured = u["pass_seconds"] + u["densify_seconds"] + u["project_seconds"]["sjlt:0.5"]
    return {
        "dot-product precomputation": stats["seconds"]
        - stats["projection_seconds"]["sjlt:0.5"]
        - u["wall_seconds"],
        "greedy selection (accuracy)": t[("greedy", "accuracy")],
        "greedy selection (fidelity)": t[("greedy", "fidelity")],
        "held-out greedy (accuracy)": t[("greedy_heldout", "accuracy")],
        "held-out greedy curve (fidelity)": t[("kfold_curve", "fidelity")],
        "held-out best single component": t[("best_single_heldout", "accuracy")],
        "permutation null": t[("null", "accuracy")],
        "random projection sjlt:0.5, with caching": stats["projection_seconds"]["sjlt:0.5"],
        "random projection sjlt:0.5, without caching": measured / u["queries"] * n_queries,
    }


def test_every_cost_row_is_a_stored_time(projected_run):
    db = projected_run
    name = _run_name(db)
    info = read.run_info(db, name)
    u = info.stats["uncached_projection"]
    # the paper's procedure on 3 of the 4 queries: 1 + b fresh passes each (b = 3)
    assert u["queries"] == 3 and u["examples"] == 3 * (1 + 3)
    assert min(u["pass_seconds"], u["densify_seconds"], u["project_seconds"]["sjlt:0.5"]) > 0
    costs = read.costs(db, name)
    want = _expected(info.stats, read.select_timings(db, name), info.n_queries)
    assert list(costs["step"]) == list(want)
    for row in costs.itertuples():
        assert row.seconds == pytest.approx(want[row.step], rel=1e-12), row.step
        assert row.extrapolated == row.step.endswith("without caching")
    # change every stored time: every row follows (no row holds a constant)
    stats = info.stats | {"seconds": info.stats["seconds"] + 100.0}
    stats["projection_seconds"] = {"sjlt:0.5": 7.0}
    stats["uncached_projection"] = u | {"pass_seconds": 30.0, "densify_seconds": 3.0}
    with Store(db) as s:
        s.con.execute(
            "UPDATE runs SET stats = ? WHERE run_id = ?", [json.dumps(stats), info.run_id]
        )
        s.con.execute("UPDATE select_timings SET seconds = seconds * 3 + 1")
    changed = read.costs(db, name)
    want = _expected(stats, read.select_timings(db, name), info.n_queries)
    for before, after in zip(costs.itertuples(), changed.itertuples(), strict=True):
        assert after.seconds == pytest.approx(want[after.step], rel=1e-12), after.step
        assert after.seconds != before.seconds, after.step


def test_select_reuses_its_greedy_runs_without_changing_the_curves(tmp_path):
    """select computes the accuracy greedy and the seed's k-fold run once (for the headline) and
    stores them as the curves: equal to computing each curve on its own."""
    db = tmp_path / "x.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "3", "--seed", "4"]) == 0
    a = read.load_arrays(db, "syn")
    stored = read.curves(db, "syn")
    for objective in ("accuracy", "fidelity"):
        curve = stored[stored["objective"] == objective]
        steps = sel.greedy_select(
            *a.core, objective=objective, n_params=a.known_n_params, valid=a.valid
        )
        assert curve["component_idx"].tolist() == [s.component_idx for s in steps]
        assert curve["accuracy"].tolist() == [s.accuracy for s in steps]
        held = sel.kfold_greedy(*a.core, folds=3, seed=4, objective=objective, valid=a.valid)
        assert curve["heldout_accuracy"].tolist() == held.accuracy.tolist()
    for procedure, x in (("greedy_peak", "step"), ("best_single", "component_idx")):
        band = read.null_band(db, "syn", procedure=procedure)
        null = permutation_null(a, procedure, draws=20, seed=4)
        first = 1 if procedure == "greedy_peak" else 0
        assert band[x].tolist() == list(range(first, a.shape[2] + first))
        assert band["band_lo"].tolist() == null.band_lo.tolist()
        assert band["band_hi"].tolist() == null.band_hi.tolist()
        row = procedure  # the row ids are the procedures' names
        assert read.stored_headline(db, "syn").set_index("id").loc[row, "null_hi"] == null.null_hi


def test_without_held_out_rows_in_sample_rows_point_nowhere():
    dots, qsq, csq, target = _instance(6, 3, 4, retrieved=True)
    table = sel.headline(dots, qsq, csq, target, list("abcd"), folds=7, null_draws=2)
    assert list(table["id"]) == ["full", "best_single", "greedy_peak"]  # 7 folds > 6 queries
    assert table["heldout_id"].isna().all()


def test_files_and_exports_from_before_the_added_tables(tmp_path, capsys):
    """A database written before ``headline``, ``null_bands`` and ``select_timings`` existed is
    read (nothing stored yet), exported (the tables empty, with their columns) and restored;
    an export folder without their files restores too."""
    import duckdb
    import pyarrow.parquet as pq

    from gradlens.store.database import ADDED_TABLES

    db = tmp_path / "old.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    con = duckdb.connect(str(db))
    for table in ADDED_TABLES:
        con.execute(f"DROP TABLE {table}")
    con.close()
    assert read.stored_headline(db, "syn") is None and read.null_band(db, "syn") is None
    assert read.costs(db, "syn")["seconds"].iloc[1:].isna().all()  # select never ran
    out = tmp_path / "export"
    assert main(["export", "--db", str(db), "--run", "syn", "--out", str(out)]) == 0
    with Store(tmp_path / "fresh.duckdb") as s:  # a writer creates them: their columns
        want = {t: s.con.sql(f"SELECT * FROM {t}").to_arrow_table().schema for t in ADDED_TABLES}
    for table in ADDED_TABLES:
        written = pq.read_table(out / f"{table}.parquet")
        assert written.num_rows == 0 and written.schema.names == want[table].names
        assert written.schema.types == want[table].types
    assert main(["import", "--db", str(tmp_path / "a.duckdb"), "--from", str(out)]) == 0
    for table in ADDED_TABLES:
        (out / f"{table}.parquet").unlink()
    assert main(["import", "--db", str(tmp_path / "b.duckdb"), "--from", str(out)]) == 0
    assert read.stored_headline(tmp_path / "b.duckdb", "syn") is None
    capsys.readouterr()
