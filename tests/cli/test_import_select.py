"""`gradlens import` + `gradlens select` through the CLI: the DB round trip, the headline table,
stored selection curves; on the paper's released dots when ../shared/paper is present."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradlens.cli import main
from gradlens.runs.read import load_arrays
from gradlens.selection import accuracy, per_component_accuracy
from gradlens.store.database import Store
from tests.helpers import synthetic_import_args
from tests.unit.test_paper_reference import PARAMS, PUBLISHED, paper_dir, synthetic, write


def test_import_then_select_synthetic(tmp_path, capsys):
    db = tmp_path / "x.duckdb"
    args = synthetic_import_args(tmp_path, db)
    assert main(args) == 0
    assert "imported" in capsys.readouterr().out
    assert main(args) == 0  # same tables again: a no-op
    assert "nothing to do" in capsys.readouterr().out
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    out = capsys.readouterr().out
    assert "full gradient" in out and "greedy peak (in-sample)" in out and "cost" in out
    with Store(db, read_only=True) as s:
        run_id = s.resolve("syn")["run_id"]
        curves = s.con.execute(
            "SELECT objective, count(*) FROM selection_curves WHERE run_id = ? GROUP BY 1",
            [run_id],
        ).fetchall()
    k = len(PARAMS)
    assert dict(curves) == {"accuracy": k, "fidelity": k}


def test_import_bad_filter_exits_2(tmp_path, capsys):
    dots, norms, _ = synthetic()
    dp, np_ = write(tmp_path, dots, norms, "parquet")
    rc = main(
        [
            "import",
            "--db",
            str(tmp_path / "x.duckdb"),
            "--run",
            "r",
            "--dots",
            str(dp),
            "--norms",
            str(np_),
            "--filter",
            "setting",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "COL=VALUE" in err[0]


@pytest.mark.parametrize("setting", list(PUBLISHED))
def test_paper_numbers_through_the_cli(setting, tmp_path, capsys):
    d = paper_dir()
    if not (d / "dots.parquet").exists():
        pytest.skip(f"paper reference data not found at {d}")
    db = tmp_path / "paper.duckdb"
    assert (
        main(
            [
                "import",
                "--db",
                str(db),
                "--run",
                setting,
                "--dots",
                str(d / "dots.parquet"),
                "--norms",
                str(d / "norms.parquet"),
                "--n-params",
                str(d / "n_params.json"),
                "--filter",
                f"setting={setting}",
            ]
        )
        == 0
    )
    full, best_name, best_acc, peak = PUBLISHED[setting]
    arrays = load_arrays(db, setting)
    args = (arrays.dots, arrays.query_sq, arrays.cand_sq, arrays.target)
    k = arrays.dots.shape[2]
    assert round(accuracy(*args, np.arange(k)), 4) == full
    single = per_component_accuracy(*args)
    published = json.loads((d / f"component_accuracy_{setting}.json").read_text())
    params = list(arrays.components["param_name"])
    assert all(abs(single[params.index(n)] - v) < 1e-12 for n, v in published.items())
    assert params[int(np.argmax(single))] == best_name
    assert main(["select", "--db", str(db), "--run", setting]) == 0
    out = capsys.readouterr().out
    assert f"{full:.4f}" in out and f"{peak:.3f}" in out
