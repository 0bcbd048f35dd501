"""The Layer heatmaps and Runs pages under Streamlit's AppTest, on a real DuckDB file holding two
imports of the same synthetic tables (the two values of its ``setting`` column)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from dashboard import common
from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.runs.report import headline_strings
from gradlens.selection import per_component_accuracy
from gradlens.selection.cells import cell_intervals
from tests.conftest import REPO
from tests.helpers import synthetic_import_args

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


def import_args(tmp_path, db, setting: str, run: str) -> list[str]:
    """``synthetic_import_args`` for one value of the synthetic tables' ``setting`` column."""
    args = synthetic_import_args(tmp_path, db)
    args[args.index("--run") + 1] = run
    args[args.index("--filter") + 1] = f"setting={setting}"
    return args


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A DuckDB file with runs ``syn`` (setting a) and ``syn_b`` (setting b), both selected."""
    tmp = tmp_path_factory.mktemp("heatmaps")
    db = tmp / "two.duckdb"
    assert main(synthetic_import_args(tmp, db)) == 0
    assert main(import_args(tmp, db, "b", "syn_b")) == 0
    for run in ("syn", "syn_b"):
        assert main(["select", "--db", str(db), "--run", run, "--null-draws", "5"]) == 0
    return db


@pytest.fixture
def one_run(tmp_path):
    db = tmp_path / "one.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    return db


def app(db, monkeypatch, page: str) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def decode(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ``{"dtype", "bdata"}`` (plotly >= 6)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


def squares(at: AppTest) -> list[dict]:
    """Every trace of square markers on the page: the grids and their veils."""
    out = []
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        out += [t for t in spec["data"] if t.get("marker", {}).get("symbol") == "square"]
    return out


def grids(at: AppTest) -> list[dict]:
    """The layer × kind grid traces on the page (square markers carrying component indices)."""
    return [t for t in squares(at) if "customdata" in t]


def veils(at: AppTest) -> list[dict]:
    """The veils over the cells not distinguishable from the full gradient (no hover)."""
    return [t for t in squares(at) if t.get("hoverinfo") == "skip"]


# -- Layer heatmaps ---------------------------------------------------------------------------
def test_heatmap_grid_shows_single_component_accuracy(one_run, monkeypatch):
    at = app(one_run, monkeypatch, "views/heatmaps.py")
    (grid,) = grids(at)
    a = queries.load_arrays(one_run, "syn")
    want = per_component_accuracy(*a.core, valid=a.valid)
    custom = decode(grid["customdata"]).astype(int)
    assert sorted(custom) == list(range(len(want)))
    np.testing.assert_allclose(decode(grid["marker"]["color"])[np.argsort(custom)], want)
    assert all(isinstance(y, str) for y in grid["y"])
    # one run only: nothing to compare with
    assert not any(s.label in ("Compare with", "Other setting") for s in at.selectbox)
    assert at.download_button  # the kind-means table downloads as CSV


def test_heatmap_hover_and_veil_follow_each_components_intervals(one_run, monkeypatch):
    at = app(one_run, monkeypatch, "views/heatmaps.py")
    a = queries.load_arrays(one_run, "syn")
    cells = cell_intervals(a)
    (grid,) = grids(at)
    custom = decode(grid["customdata"]).astype(int)
    for pos, c in enumerate(custom):
        hover = grid["hovertext"][pos]
        assert f"[{cells.ci_lo[c]:.3f}, {cells.ci_hi[c]:.3f}]" in hover
        assert f"{cells.hits[c]}/{a.shape[0]} queries" in hover
        assert f"[{cells.diff_lo[c]:+.3f}, {cells.diff_hi[c]:+.3f}]" in hover
    (veil,) = veils(at)
    where = {(x, y) for x, y in zip(grid["x"], grid["y"], strict=True)}
    faded = {(grid["x"][p], grid["y"][p]) for p, c in enumerate(custom) if not cells.distinct[c]}
    assert set(zip(veil["x"], veil["y"], strict=True)) == faded and faded <= where
    note = f"{int(cells.distinct.sum())} of {len(custom)} differ from the full gradient"
    assert note in json.dumps(json.loads(at.get("plotly_chart")[0].proto.spec)["layout"])
    at.checkbox(key="heatmap_fade").uncheck().run()
    assert not at.exception, at.exception
    assert not veils(at) and len(grids(at)) == 1


def test_heatmap_pick_sets_the_subset(one_run, monkeypatch):
    at = app(one_run, monkeypatch, "views/heatmaps.py")
    at.session_state["heatmap_pick"] = 2
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["gl_view"].subset == (2,)
    assert "heatmap_pick" not in at.session_state
    (grid,) = grids(at)
    widths = decode(grid["marker"]["line"]["width"])
    custom = decode(grid["customdata"]).astype(int)
    assert widths[list(custom).index(2)] == widths.max() > np.delete(widths, 2).max()
    # the picker follows the subset; picking another component through it replaces the subset
    picker = next(s for s in at.selectbox if s.label == "Pick a component")
    assert picker.value == 2
    picker.set_value(4).run()
    assert not at.exception, at.exception
    assert at.session_state["gl_view"].subset == (4,)
    # an out-of-range pick is dropped
    at.session_state["heatmap_pick"] = 99
    at.run()
    assert at.session_state["gl_view"].subset == (4,)


def test_heatmap_compare_with_stores_the_choice(tmp_path, monkeypatch):
    db = tmp_path / "mixed.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    # a second run from different source tables: not the same data, so only "Compare with"
    other = tmp_path / "other"
    other.mkdir()
    assert main(import_args(other, db, "b", "other")) == 0
    at = app(db, monkeypatch, "views/heatmaps.py")
    assert len(grids(at)) == 1
    box = next(s for s in at.selectbox if s.label == "Compare with")
    box.set_value("other").run()
    assert not at.exception, at.exception
    assert at.session_state["gl_view"].compare == "other"
    assert len(grids(at)) == 2


def test_heatmaps_two_settings_side_by_side(two_runs, monkeypatch):
    at = app(two_runs, monkeypatch, "views/heatmaps.py")
    shown = grids(at)
    assert len(shown) == 2
    for run, grid in zip(("syn", "syn_b"), shown, strict=True):
        a = queries.load_arrays(two_runs, run)
        want = per_component_accuracy(*a.core, valid=a.valid)
        order = np.argsort(decode(grid["customdata"]).astype(int))
        np.testing.assert_allclose(decode(grid["marker"]["color"])[order], want)
    assert not any(s.label == "Compare with" for s in at.selectbox)
    table = at.dataframe[0].value.set_index("kind")
    assert list(table.columns) == ["syn", "syn_b"]  # one column per setting
    for run in ("syn", "syn_b"):
        a = queries.load_arrays(two_runs, run)
        single = per_component_accuracy(*a.core, valid=a.valid)
        want = pd.Series(single).groupby(a.kinds).mean()
        np.testing.assert_allclose(table[run].to_numpy(), want.reindex(table.index).to_numpy())


# -- Runs -------------------------------------------------------------------------------------
def test_runs_page_lists_runs_and_compares_headlines(two_runs, monkeypatch):
    at = app(two_runs, monkeypatch, "views/runs.py")
    table = at.dataframe[0].value
    assert sorted(table["name"]) == ["syn", "syn_b"]
    assert set(table["status"]) == {"complete"}
    assert {"queries", "components", "methods", "model", "data", "seconds"} <= set(table.columns)
    assert "setting=b" in table.set_index("name").loc["syn_b", "data"]
    both = at.dataframe[1].value
    assert {"syn accuracy", "syn_b accuracy", "syn 95% CI", "syn_b 95% CI"} <= set(both.columns)
    assert {"syn reading", "syn_b reading"} <= set(both.columns)
    for run in ("syn", "syn_b"):
        stored = headline_strings(queries.stored_headline(two_runs, run)).set_index("metric")
        shown = both.set_index("metric")
        for col in ("accuracy", "95% CI", "reading"):
            assert list(shown[f"{run} {col}"]) == list(stored.loc[shown.index, col])
    full = both.set_index("metric").loc["full gradient"]
    a = queries.load_arrays(two_runs, "syn")
    from gradlens.selection import accuracy

    assert full["syn accuracy"] == f"{accuracy(*a.core, range(a.shape[2]), a.valid):.4f}"


def test_runs_page_deletes_a_run(tmp_path, monkeypatch):
    db = tmp_path / "del.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    assert main(import_args(tmp_path, db, "b", "syn_b")) == 0
    at = app(db, monkeypatch, "views/runs.py")
    # never selected: the comparison says what to run instead of computing a headline
    hint = next(i.value for i in at.info if "No stored headline" in i.value)
    assert all(common.select_hint(str(db), r) in hint for r in ("syn", "syn_b"))
    button = at.button(key="runs_delete")
    assert button.disabled
    at.selectbox(key="runs_delete_pick").set_value("syn_b").run()
    at.checkbox(key="runs_delete_confirm").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception, at.exception
    assert list(queries.list_runs(db)["name"]) == ["syn"]
    assert "Deleted run syn_b" in at.success[0].value
    assert sorted(at.dataframe[0].value["name"]) == ["syn"]
    assert at.checkbox(key="runs_delete_confirm").value is False


def test_runs_page_reports_a_locked_database(tmp_path, monkeypatch):
    import subprocess
    import sys

    db = tmp_path / "locked.duckdb"
    assert main(synthetic_import_args(tmp_path, db)) == 0
    at = app(db, monkeypatch, "views/runs.py")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
            " time.sleep(120)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        at.selectbox(key="runs_delete_pick").set_value("syn").run()
        at.checkbox(key="runs_delete_confirm").check().run()
        at.button(key="runs_delete").click().run()
        assert not at.exception, at.exception
        assert "held by another process" in at.error[0].value
    finally:
        holder.kill()
        holder.wait()
    assert list(queries.list_runs(db)["name"]) == ["syn"]


def test_runs_page_without_a_complete_run(tmp_path, monkeypatch):
    from gradlens.store.database import Store

    db = tmp_path / "half.duckdb"
    with Store(db) as store:
        store.begin_run("r0", "half", {"source": "import", "dots": "d.parquet"})
    at = app(db, monkeypatch, "views/runs.py")
    table = at.dataframe[0].value
    assert list(table["name"]) == ["half"] and list(table["status"]) == ["running"]
    assert "no complete run" in at.info[0].value
    # and the delete still works without a complete run
    at.selectbox(key="runs_delete_pick").set_value("half").run()
    at.checkbox(key="runs_delete_confirm").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception, at.exception
    assert queries.list_runs(db).empty
    assert any("holds no run" in i.value for i in at.info)
