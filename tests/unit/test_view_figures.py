"""The dashboard's pure parts: view state <-> URL, word diffs, and the figure builders' data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlens.figures import candidate_bars, greedy_curve, select_vs_project, share_bars
from gradlens.figures.curves import FOLD_PREFIX, NULL_BAND_NAME
from gradlens.figures.style import COLORS
from gradlens.figures.textdiff import diff_markdown, escape_markdown, word_diff
from gradlens.runs.viewstate import ViewState


def test_view_state_round_trips_through_query_params() -> None:
    v = ViewState(
        run="para", method="sjlt:0.01", subset=(5, 2, 9), query="q_1", objective="fidelity"
    )
    params = v.to_params()
    assert all(isinstance(x, str) for x in params.values())
    assert params["subset"] == "5,2,9"
    assert ViewState.from_params(params) == v
    assert ViewState().to_params() == {}
    bad = ViewState.from_params({"subset": "1,x", "objective": "nope", "run": ""})
    assert bad == ViewState()
    assert ViewState.from_params({"subset": "3,3"}).subset == ()


def test_word_diff_and_markdown_escaping() -> None:
    ops = word_diff("the cat sat on the mat", "the dog sat on a mat")
    assert ("same", "the") in ops and ("del", "cat") in ops and ("add", "dog") in ops
    rebuilt_a = " ".join(t for op, t in ops if op != "add")
    rebuilt_b = " ".join(t for op, t in ops if op != "del")
    assert rebuilt_a == "the cat sat on the mat" and rebuilt_b == "the dog sat on a mat"
    hostile = "<script>alert(1)</script> **bold** [link](x) :red[x] $x$"
    escaped = escape_markdown(hostile)
    for ch in "<>*[]():$":
        assert f"\\{ch}" in escaped
    md = diff_markdown("a b", "a c")
    assert ":red-background[~~b~~]" in md and ":green-background[c]" in md


def _curve(k: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "step": np.arange(1, k + 1),
            "component_idx": np.arange(k),
            "component": [f"L{i}.q" for i in range(k)],
            "accuracy": np.linspace(0.5, 0.9, k),
            "fidelity": np.linspace(0.8, 1.0, k),
            "param_fraction": np.linspace(0.1, 1.0, k),
            "heldout_accuracy": np.linspace(0.4, 0.8, k),
        }
    )


def test_greedy_curve_traces_carry_the_data() -> None:
    curve = _curve()
    band = pd.DataFrame({"step": [3, 1, 2], "band_lo": [0.3, 0.1, 0.2], "band_hi": [0.5, 0.3, 0.4]})
    lines = {"full gradient": 0.7, "chance": 0.2, "greedy (held out, whole procedure)": 0.55}
    lines["full gradient (sjlt:0.01)"] = 0.65
    fig = greedy_curve(curve, baselines=lines, current=(0.3, 0.6), null_band=band)
    names = [t.name for t in fig.data]
    assert names == [
        "greedy (accuracy, in-sample)",
        FOLD_PREFIX,
        NULL_BAND_NAME,
        "full gradient 0.7000",
        "chance 0.2000",
        "greedy (held out, whole procedure) 0.5500",
        "full gradient (sjlt:0.01) 0.6500",
        "current subset",
    ]
    assert list(fig.data[0].y) == list(curve["accuracy"])
    assert list(fig.data[0].x) == list(curve["param_fraction"])
    assert fig.layout.xaxis.type == "log"
    # the band: band_hi at steps 1..3 left to right, then band_lo back, at those steps' x
    x3 = list(curve["param_fraction"][:3])
    assert list(fig.data[2].x) == x3 + x3[::-1]
    assert list(fig.data[2].y) == [0.3, 0.4, 0.5, 0.3, 0.2, 0.1]
    # each baseline spans the curve's x range at its value, in its meaning's colour
    for trace, value in zip(fig.data[3:7], lines.values(), strict=True):
        assert list(trace.y) == [value, value] and list(trace.x) == [0.1, 1.0]
    assert [t.line.color for t in fig.data[3:7]] == [
        COLORS["full"],
        COLORS["chance"],
        COLORS["heldout"],
        COLORS["projection"],
    ]
    assert not fig.layout.annotations  # values are in the legend, not at the right edge
    # without parameter counts the x axis is the step; fidelity has no band and no held-out curve
    fig = greedy_curve(curve.assign(param_fraction=np.nan), metric="fidelity", null_band=band)
    assert list(fig.data[0].x) == list(curve["step"]) and len(fig.data) == 1
    fig = greedy_curve(curve.assign(param_fraction=np.nan), null_band=band)
    assert list(fig.data[2].x) == [1, 2, 3, 3, 2, 1]


def test_select_vs_project_and_failure_figures() -> None:
    proj = pd.DataFrame(
        {"method": ["sjlt:0.01"], "fraction": [0.01], "accuracy": [0.8], "fidelity": [0.9]}
    )
    fig = select_vs_project({"greedy": _curve()}, proj, 0.7)
    names = ["greedy", "random projection (all components)", "full gradient 0.7000"]
    assert [t.name for t in fig.data] == names
    assert list(fig.data[1].x) == [0.01] and list(fig.data[1].y) == [0.8]
    # the full gradient spans the projections' and the curve's x, named in the legend
    assert list(fig.data[2].x) == [0.01, 1.0] and list(fig.data[2].y) == [0.7, 0.7]
    assert not fig.layout.annotations
    contrib = pd.DataFrame(
        {"component": [f"c{i}" for i in range(40)], "contribution": np.linspace(-1, 1, 40)}
    )
    fig = share_bars(contrib, float(contrib["contribution"].sum()), top=10)
    bars = fig.data[0]
    assert len(bars.y) == 11 and "30 others" in bars.y
    assert np.isclose(sum(bars.x), contrib["contribution"].sum())
    assert fig.layout.xaxis.title.text.startswith("contribution to the margin")
    cands = pd.DataFrame(
        {
            "candidate_id": ["a", "b"],
            "cosine": [0.1, 0.2],
            "bm25": [3.0, 2.0],
            "role": ["original", "retrieved"],
        }
    )
    fig = candidate_bars(cands)
    assert list(fig.data[0].y) == [0.1, 0.2]
