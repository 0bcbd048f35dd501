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

from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.runs.viewstate import ViewState
from gradlens.selection import EPS, greedy_select
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


def test_overview_shows_what_selection_computes(db, monkeypatch):
    from gradlens.selection import accuracy

    a = queries.load_arrays(db, "syn")
    at = app(db, monkeypatch)
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    k = a.shape[2]
    assert shown["full gradient"] == f"{accuracy(*a.core, np.arange(k), a.valid):.4f}"
    peak = max(s.accuracy for s in greedy_select(*a.core, valid=a.valid))
    assert shown["greedy peak (in-sample)"] == f"{peak:.4f}"


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
    values = [m.value for m in at.metric]
    for setting in ("paraphrased", "model_generated"):
        a = queries.load_arrays(db, setting)
        full = accuracy(*a.core, np.arange(a.shape[2]), a.valid)
        peak = max(s.accuracy for s in greedy_select(*a.core, valid=a.valid))
        assert f"{full:.4f}" in values and f"{peak:.4f}" in values
