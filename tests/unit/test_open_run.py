"""``gradlens.open_run``: each accessor of a Run equals the direct computation on the run's
arrays, on a tiny imported run and on the shipped demo restored with ``import --from``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import gradlens
from gradlens import selection as sel
from gradlens.errors import GradLensError
from gradlens.options import SelectOptions
from gradlens.runs.read import load_arrays, run_info, stored_headline
from gradlens.runs.services import import_run, run_headline, select_run
from gradlens.store.restore import restore_run
from tests.conftest import DEMO
from tests.unit.test_paper_reference import PARAMS, synthetic, write

ARRAY_FIELDS = ("dots", "query_sq", "cand_sq", "target", "valid", "bm25")


@pytest.fixture
def db(tmp_path):
    """A database with the synthetic run ``syn`` (setting a, parameter counts known)."""
    dots, norms, _ = synthetic()
    dp, np_ = write(tmp_path, dots, norms, "parquet")
    nj = tmp_path / "n_params.json"
    nj.write_text(json.dumps({p: 10 * (i + 1) for i, p in enumerate(PARAMS)}))
    path = tmp_path / "r.duckdb"
    import_run(str(path), "syn", str(dp), str(np_), str(nj), ["setting=a"])
    return path


def test_open_run_accessors_equal_the_direct_computation(db):
    run = gradlens.open_run(db, "syn")
    assert run.name == "syn" and run.info == run_info(db, "syn")
    want = load_arrays(db, "syn")
    for field in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(run.arrays, field), getattr(want, field))
    assert run.arrays is run.arrays  # read once
    a = run.arrays
    for objective in ("accuracy", "fidelity"):
        direct = sel.greedy_select(
            *a.core, objective=objective, n_params=a.known_n_params, valid=a.valid
        )
        assert run.greedy(objective=objective, method="exact") == direct
    steps = run.greedy()
    assert steps[-1].param_fraction == pytest.approx(1.0)
    assert [s.subset for s in steps] == [
        tuple(s.component_idx for s in steps[: i + 1]) for i in range(len(steps))
    ]
    for subset in ([0], list(steps[1].subset), list(range(a.shape[2]))):
        pd.testing.assert_frame_equal(run.failures(subset), sel.failures(a, subset))


def test_open_run_headline_is_selects(db):
    computed = gradlens.open_run(db, "syn").headline()  # before select: computed
    pd.testing.assert_frame_equal(computed, run_headline(load_arrays(db, "syn")), check_exact=True)
    selected = select_run(SelectOptions(db=str(db), run="syn")).table
    pd.testing.assert_frame_equal(computed, selected, check_exact=True)
    run = gradlens.open_run(db, "syn")
    table = run.headline()  # after select: the stored rows, read back equal
    pd.testing.assert_frame_equal(table, selected, check_exact=True)
    stored = stored_headline(db, "syn")
    assert (stored["folds"] == 5).all() and (stored["seed"] == 0).all()
    assert (stored["null_draws"] == 20).all()
    assert list(table["id"]) == [
        "full", "best_single", "best_single_heldout", "greedy_peak", "greedy_heldout", "bm25",
    ]  # fmt: skip
    table.loc[0, "accuracy"] = -1.0  # a caller's edit does not reach the next call
    assert run.headline().loc[0, "accuracy"] != -1.0


def test_open_run_refuses_what_is_not_there(db):
    with pytest.raises(GradLensError):
        gradlens.open_run(db, "no such run")
    run = gradlens.open_run(db, "syn")
    with pytest.raises(GradLensError, match="sjlt:0.01"):
        run.greedy(method="sjlt:0.01")


def test_the_restored_demo_headline_has_every_id(tmp_path):
    shipped = DEMO / "runs" / "paraphrased"
    if not (shipped / "dots.parquet").exists():
        pytest.skip(f"shipped demo run not found at {shipped}")
    db = tmp_path / "demo.duckdb"
    restore_run(db, shipped)
    run = gradlens.open_run(db, "paraphrased")
    rows = sel.headline_rows(run.headline())
    assert [r.id for r in rows] == [
        "full", "best_single", "best_single_heldout", "greedy_peak", "greedy_heldout", "bm25",
        "project:sjlt:0.01",
    ]  # fmt: skip
    assert [r.type for r in rows] == [
        "not_selected", "selected_in_sample", "held_out", "selected_in_sample", "held_out",
        "not_selected", "not_selected",
    ]  # fmt: skip
    full = sel.headline_row(run.headline(), sel.FULL)
    assert full.accuracy == sel.accuracy(*run.arrays.core, np.arange(211), run.arrays.valid)
