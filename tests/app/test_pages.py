"""Every explore page under Streamlit's AppTest on a real DuckDB run, driven through session
state (AppTest cannot click plotly charts): stepping, step back and the URL, the failure table
and its per-component bars against plain numpy, and the overview's figures against
gradlens.selection computed here."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from dashboard import common
from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.runs.viewstate import ViewState
from gradlens.selection import (
    BEST_SINGLE_HELDOUT,
    EPS,
    FULL,
    GREEDY_HELDOUT,
    GREEDY_PEAK,
    NOT_SELECTED,
    greedy_select,
    headline_row,
    headline_rows,
)
from tests.conftest import REPO
from tests.helpers import synthetic_selected_db

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

PAGES = ["overview", "greedy", "heatmaps", "failures", "project", "runs"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return synthetic_selected_db(tmp_path_factory.mktemp("pages"))


def app(db, monkeypatch, page: str | None = None, view: ViewState | None = None) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    if view is not None:
        for key, value in view.to_params().items():
            at.query_params[key] = value
    if page is not None:
        at.switch_page(f"views/{page}.py")
    return at.run()


def chart_data(at: AppTest, key_part: str) -> list[dict]:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if key_part in chart.proto.id or key_part in json.dumps(
            spec.get("layout", {}).get("title")
        ):
            return spec["data"]
    raise AssertionError(f"no chart {key_part!r}")


def values(encoded) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed-array form {dtype, bdata (base64)}."""
    if isinstance(encoded, dict):
        return np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"])
    return np.asarray(encoded, dtype=float)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(db, monkeypatch, page):
    at = app(db, monkeypatch, page)
    assert not at.exception, at.exception


def test_greedy_stepping_matches_greedy_select_and_step_back_restores(db, monkeypatch):
    a = queries.load_arrays(db, "syn")
    ref = [s.component_idx for s in greedy_select(*a.core, valid=a.valid)]
    at = app(db, monkeypatch, "greedy")
    at.button(key="step_forward").click().run()
    at.button(key="step_forward").click().run()
    assert not at.exception
    assert at.session_state["gl_view"].subset == tuple(ref[:2])
    assert at.query_params["subset"] == ",".join(map(str, ref[:2]))
    at.button(key="step_back").click().run()
    assert at.session_state["gl_view"].subset == tuple(ref[:1])
    assert at.query_params["subset"] == str(ref[0])
    at.button(key="run_to_end").click().run()
    assert at.session_state["gl_view"].subset == tuple(ref)
    at.button(key="reset").click().run()
    assert at.session_state["gl_view"].subset == ()


def test_greedy_chart_draws_the_stored_null_band_and_whole_procedure_estimate(db, monkeypatch):
    from gradlens.figures.curves import FOLD_PREFIX, NULL_BAND_NAME

    at = app(db, monkeypatch, "greedy")
    assert not at.exception
    traces = {t["name"]: t for t in chart_data(at, "greedy_chart")}
    band = queries.null_band(db, "syn")
    curve = queries.curves(db, "syn")
    curve = curve[curve["objective"] == "accuracy"]
    xcol = "param_fraction" if curve["param_fraction"].notna().all() else "step"
    x = list(curve.set_index("step", drop=False).loc[band["step"], xcol])
    drawn = traces[NULL_BAND_NAME]
    np.testing.assert_allclose(values(drawn["x"]), x + x[::-1])
    want = list(band["band_hi"]) + list(band["band_lo"][::-1])
    np.testing.assert_allclose(values(drawn["y"]), want)
    held = headline_row(queries.stored_headline(db, "syn"), GREEDY_HELDOUT).accuracy
    line = traces[f"greedy, whole procedure held out {held:.4f}"]
    np.testing.assert_allclose(values(line["y"]), [held, held])
    assert FOLD_PREFIX in traces
    assert "fold prefixes of size k, held out" in [m.label for m in at.metric]


def test_a_copied_url_reopens_the_same_view(db, monkeypatch):
    view = ViewState(run="syn", subset=(2, 0), objective="fidelity")
    at = app(db, monkeypatch, "greedy", view)
    assert not at.exception
    assert at.session_state["gl_view"] == view
    assert at.query_params["subset"] == "2,0"


def numpy_failures(a, subset):
    """Queries whose original does not strictly beat every other valid candidate."""
    num = a.dots[:, :, subset].sum(-1)
    den = np.sqrt(a.query_sq[:, subset].sum(-1)[:, None] * a.cand_sq[:, :, subset].sum(-1)) + EPS
    cos = np.where(a.valid, num / den, -np.inf)
    own = cos[np.arange(len(cos)), a.target]
    cos[np.arange(len(cos)), a.target] = -np.inf
    return set(a.query_ids[~(own > cos.max(1))])


def test_failure_table_and_bars_against_numpy(db, monkeypatch):
    a = queries.load_arrays(db, "syn")
    subset = (1, 3)
    wrong = numpy_failures(a, list(subset))
    assert wrong, "the synthetic run should have failures for this subset"
    query = sorted(wrong)[0]
    at = app(db, monkeypatch, "failures", ViewState(run="syn", subset=subset, query=query))
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["query_id"]) == wrong
    margin = float(table.set_index("query_id").loc[query, "margin"])
    bars = chart_data(at, "vote")[0]
    assert np.isclose(values(bars["x"]).sum(), margin, atol=1e-12)


def test_overview_shows_the_stored_headline_typed_with_its_methods_and_costs(db, monkeypatch):
    from dashboard.widgets import TYPES
    from gradlens.runs.report import cost_strings, format_interval
    from gradlens.selection import accuracy
    from gradlens.selection.trust import clopper_pearson

    a = queries.load_arrays(db, "syn")
    n, _, k = a.shape
    rows = headline_rows(queries.stored_headline(db, "syn"))
    by_id = {r.id: r for r in rows}
    at = app(db, monkeypatch)
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["full gradient"] == f"{accuracy(*a.core, np.arange(k), a.valid):.4f}"
    assert shown["greedy, held out"] == f"{by_id[GREEDY_HELDOUT].accuracy:.4f}"
    assert shown["best single, held out"] == f"{by_id[BEST_SINGLE_HELDOUT].accuracy:.4f}"
    peak = max(s.accuracy for s in greedy_select(*a.core, valid=a.valid))
    assert by_id[GREEDY_PEAK].accuracy == pytest.approx(peak, abs=1e-12)
    table = at.dataframe[0].value
    assert list(table["metric"]) == [r.metric for r in rows]
    assert list(table["type"]) == [TYPES[r.type] for r in rows]
    columns = (table["95% CI"], table["CI method"], table["reading"])
    for r, shown_ci, method, reading in zip(rows, *columns, strict=True):
        if r.type == NOT_SELECTED:  # exact: recomputed from the row's count
            hits = round(r.accuracy * n)
            assert method == "clopper-pearson"
            assert shown_ci == format_interval(*clopper_pearson(hits, n))
        elif r.in_sample:  # no interval of its own, never better or worse than the full gradient
            assert method == "none (in-sample)" and shown_ci == "–"
            assert "better" not in reading and "worse" not in reading
        if not r.in_sample and r.id != FULL:
            assert ("better" in reading) == (r.diff_lo > 0)
            assert ("worse" in reading) == (r.diff_hi < 0)
    costs = queries.costs(db, "syn")
    shown_costs = at.table[0]  # the second: the run's details
    assert list(shown_costs.value.index) == list(costs["step"])
    assert list(shown_costs.value["time"]) == list(cost_strings(costs)["time"])


def _paper_subsample(tmp_path, n_queries: int = 120):
    from tests.unit.test_paper_reference import paper_dir

    d = paper_dir()
    if not (d / "dots.parquet").exists():
        pytest.skip(f"paper reference data not found at {d}")
    dots = pd.read_parquet(d / "dots.parquet")
    norms = pd.read_parquet(d / "norms.parquet")
    keep = set(sorted(dots["query_id"].unique())[:n_queries])
    dots = dots[dots["query_id"].isin(keep)]
    used = set(dots["query_id"]) | set(dots["candidate_id"])
    norms = norms[norms["example_id"].isin(used)]
    dots.to_parquet(tmp_path / "dots.parquet")
    norms.to_parquet(tmp_path / "norms.parquet")
    return tmp_path / "dots.parquet", tmp_path / "norms.parquet", d / "n_params.json"


def test_paper_subsample_overview_matches_selection(tmp_path, monkeypatch):
    from gradlens.selection import accuracy

    dots, norms, n_params = _paper_subsample(tmp_path)
    db = tmp_path / "paper.duckdb"
    for setting in ("paraphrased", "model_generated"):
        args = ["import", "--db", str(db), "--run", setting, "--dots", str(dots)]
        args += [
            "--norms",
            str(norms),
            "--n-params",
            str(n_params),
            "--filter",
            f"setting={setting}",
        ]
        assert main(args) == 0
    at = app(db, monkeypatch)
    assert not at.exception
    # before select: each run says what to run, and nothing is computed for it
    assert not at.metric
    hints = " ".join(i.value for i in at.info)
    assert all(common.select_hint(str(db), s) in hints for s in ("paraphrased", "model_generated"))
    for setting in ("paraphrased", "model_generated"):
        assert main(["select", "--db", str(db), "--run", setting, "--null-draws", "5"]) == 0
    common.refresh()  # the file's version is cached for 5 s; the selects may have taken less
    at = app(db, monkeypatch)
    assert not at.exception
    values = [m.value for m in at.metric]
    flags = " ".join(box.value for box in [*at.warning, *at.info])
    for setting in ("paraphrased", "model_generated"):
        a = queries.load_arrays(db, setting)
        full = accuracy(*a.core, np.arange(a.shape[2]), a.valid)
        peak = max(s.accuracy for s in greedy_select(*a.core, valid=a.valid))
        assert f"{full:.4f}" in values
        assert f"**greedy peak (in-sample)** {peak:.4f}" in flags


def test_select_vs_project_shows_the_runs_cost_rows(db, monkeypatch):
    from gradlens.runs.report import cost_strings

    at = app(db, monkeypatch, "project")
    assert not at.exception
    want = cost_strings(queries.costs(db, "syn")).set_index("step")
    pd.testing.assert_frame_equal(at.table[0].value, want, check_names=False)
