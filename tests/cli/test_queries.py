"""The read side (gradlens.runs.read) on a real DuckDB file: what select wrote comes back, the
arrays equal the imported tables', and export handles any path."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.store.database import EXPORT_TABLES
from gradlens.store.importer import read_long_tables
from tests.helpers import synthetic_import_args


def test_read_side_round_trip(tmp_path, capsys):
    db = tmp_path / "q.duckdb"
    args = synthetic_import_args(tmp_path, db)
    assert main(args) == 0
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    capsys.readouterr()
    runs = queries.list_runs(db)
    assert list(runs["name"]) == ["syn"] and runs["status"].iloc[0] == "complete"
    info = queries.run_info(db, "syn")
    arrays = queries.load_arrays(db, "syn")
    assert (info.n_queries, info.n_candidates, info.n_components) == arrays.shape
    assert info.methods == ("exact",) and info.complete
    dots_path, norms_path = args[args.index("--dots") + 1], args[args.index("--norms") + 1]
    flt = args[args.index("--filter") + 1].split("=")
    want = read_long_tables(dots_path, norms_path, filters={flt[0]: flt[1]}).to_arrays()
    for name in ("dots", "query_sq", "cand_sq", "target", "valid"):
        np.testing.assert_array_equal(getattr(arrays, name), getattr(want, name))
    curves = queries.curves(db, "syn")
    assert set(curves["objective"]) == {"accuracy", "fidelity"}
    assert len(curves) == 2 * arrays.shape[2]
    ex = queries.examples(db, "syn", ids=[arrays.query_ids[0]])
    assert set(ex["split"]) == {"query", "train"}


def test_export_writes_every_table_to_a_path_with_a_quote(tmp_path, capsys):
    db = tmp_path / "q.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    out = tmp_path / "it's here"
    assert main(["export", "--db", str(db), "--run", "syn", "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.stem for p in out.glob("*.parquet")) == sorted(EXPORT_TABLES)
    assert pq.read_table(out / "selection_curves.parquet").num_rows > 0
