"""Round trips lose nothing: the same compute command twice gives bit-identical dots, norms and
projections; `export` then `import --from` reproduces a computed run (every method) and its
headline table bit for bit."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.runs.services import run_headline
from gradlens.store.database import Store
from tests.conftest import DEMO

PROJECT = "sjlt:0.5,kron:0.5"
KEYS = {"dots": ["query_id", "candidate_id", "component_idx"]}
KEYS["norms"] = ["split", "example_id", "component_idx"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt-data")
    train = (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()[:6]
    para = (DEMO / "paraphrased.jsonl").read_text(encoding="utf-8").splitlines()[:6:2]
    (root / "train.jsonl").write_text("\n".join(train) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text("\n".join(para) + "\n", encoding="utf-8")
    return root


def _compute(tiny_model_dir, data, db) -> None:
    argv = ["compute", "--model", str(tiny_model_dir), "--train", str(data / "train.jsonl")]
    argv += ["--queries", str(data / "queries.jsonl"), "--db", str(db), "--run", "rt"]
    argv += ["--candidates", "3", "--project", PROJECT, "--no-progress"]
    assert main(argv) == 0


@pytest.fixture(scope="module")
def twice(tmp_path_factory, tiny_model_dir, data):
    """Two databases written by the same compute command (and `select`)."""
    dbs = []
    for i in range(2):
        db = tmp_path_factory.mktemp(f"rt-{i}") / "run.duckdb"
        _compute(tiny_model_dir, data, db)
        assert main(["select", "--db", str(db), "--run", "rt"]) == 0
        dbs.append(db)
    return dbs


def _table(db, table: str) -> pd.DataFrame:
    with Store(db, read_only=True) as s:
        run_id = s.resolve("rt")["run_id"]
        frame = s.con.execute(f"SELECT * FROM {table} WHERE run_id = ?", [run_id]).df()
    return frame.sort_values(["method", *KEYS[table]], ignore_index=True)


def _methods(db) -> list[str]:
    with Store(db, read_only=True) as s:
        return s.methods(s.resolve("rt")["run_id"])


def _assert_same_bits(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    assert len(a) == len(b) > 0, what
    pd.testing.assert_frame_equal(a, b, check_exact=True, obj=what)
    for col in a.columns:
        if a[col].dtype.kind == "f":
            assert a[col].to_numpy().tobytes() == b[col].to_numpy().tobytes(), (what, col)


def _headline(db) -> pd.DataFrame:
    methods = _methods(db)
    arrays = {m: queries.load_arrays(db, "rt", m) for m in methods}
    exact = arrays.pop("exact")
    return run_headline(exact, arrays, folds=3, seed=0)


def test_same_command_twice_is_bit_identical(twice):
    first, second = twice
    assert _methods(first) == _methods(second) == sorted(["exact", *PROJECT.split(",")])
    for table in ("dots", "norms"):
        _assert_same_bits(_table(first, table), _table(second, table), table)


def test_export_then_import_reproduces_the_run_bit_for_bit(twice, tmp_path, capsys):
    src = twice[0]
    folder = tmp_path / "exported"
    assert main(["export", "--db", str(src), "--run", "rt", "--out", str(folder)]) == 0
    db = tmp_path / "restored.duckdb"
    assert main(["import", "--db", str(db), "--from", str(folder)]) == 0
    capsys.readouterr()
    for table in ("dots", "norms"):
        _assert_same_bits(_table(src, table), _table(db, table), table)
    for method in _methods(src):
        a, b = queries.load_arrays(src, "rt", method), queries.load_arrays(db, "rt", method)
        for name in ("dots", "query_sq", "cand_sq", "target", "valid", "bm25"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), (method, name)
    pd.testing.assert_frame_equal(_headline(src), _headline(db), check_exact=True)
    # select's stored rows travel with the export
    stored = queries.stored_headline(src, "rt")
    assert stored is not None
    pd.testing.assert_frame_equal(queries.stored_headline(db, "rt"), stored, check_exact=True)
    for procedure in ("greedy_peak", "best_single"):
        band = queries.null_band(src, "rt", procedure=procedure)
        pd.testing.assert_frame_equal(queries.null_band(db, "rt", procedure=procedure), band)
    pd.testing.assert_frame_equal(queries.costs(db, "rt"), queries.costs(src, "rt"))
    # the CLI's own headline text, too
    assert main(["select", "--db", str(src), "--run", "rt"]) == 0
    want = capsys.readouterr().out
    assert main(["select", "--db", str(db), "--run", "rt"]) == 0
    got = capsys.readouterr().out
    assert _without_timings(got) == _without_timings(want)


def _without_timings(text: str) -> list[str]:
    """The select report without the times of its cost table (each row's step name kept)."""
    head, _, costs = text.partition("cost (measured")
    steps = [re.split(r"\s{2,}", line.strip())[0] for line in costs.splitlines()[1:]]
    return head.splitlines() + steps
