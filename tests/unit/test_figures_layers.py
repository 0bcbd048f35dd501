"""Layer × kind figures (gradlens.figures.layers) on a tiny hand-built model, and the per-cell
intervals they show (gradlens.selection.cells) against one component at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlens.figures import (
    depth_lines,
    kind_means,
    kind_means_bar,
    layer_kind_grid,
    params_scatter,
)
from gradlens.models.naming import KINDS
from gradlens.selection import correct, cosines
from gradlens.selection.cells import CellIntervals, cell_intervals
from gradlens.selection.trust import clopper_pearson, paired_diff_ci
from tests.unit.test_trust import run_arrays, tiny_instance

# two blocks of q / down, an embedding and a head; the kinds are listed out of KINDS order
NAMES = ["L1.down", "embed", "L0.q", "L0.down", "lm_head", "L1.q"]
LAYERS = [1, None, 0, 0, None, 1]
KIND = ["down", "embed", "q", "down", "lm_head", "q"]
VALUES = np.array([0.91, 0.62, 0.97, 0.955, 0.99, 0.93])
N_PARAMS = np.array([4096.0, 65536.0, 1024.0, 4096.0, 65536.0, 1024.0])


def grid(**kw):
    args = dict(
        values=VALUES,
        layers=LAYERS,
        kinds=KIND,
        names=NAMES,
        n_params=N_PARAMS,
        chance=0.25,
        full=0.98,
        selected={2},
        title="t",
    )
    return layer_kind_grid(**(args | kw))


def test_grid_puts_every_component_once_at_its_kind_and_layer():
    fig = grid()
    assert len(fig.data) == 1
    tr = fig.data[0]
    assert tr.type == "scatter"  # not a heatmap: Streamlit reports clicks on scatter points
    assert list(tr.customdata) == list(range(len(NAMES)))
    cells = list(zip(tr.x, tr.y, strict=True))
    assert len(set(cells)) == len(NAMES)
    want = [(k, "model" if lay is None else f"L{lay}") for k, lay in zip(KIND, LAYERS)]
    assert cells == want
    np.testing.assert_allclose(tr.marker.color, VALUES)


def test_grid_axes_are_string_categories_with_model_last():
    fig = grid()
    y = fig.layout.yaxis
    assert y.type == "category"
    assert all(isinstance(c, str) for c in y.categoryarray)
    assert list(y.categoryarray) == ["L0", "L1", "model"]
    assert all(isinstance(v, str) for v in fig.data[0].y)
    assert list(fig.layout.xaxis.categoryarray) == [k for k in KINDS if k in KIND]


def test_grid_colour_scale_fits_the_data_range():
    tr = grid().data[0]
    assert tr.marker.cmin == pytest.approx(VALUES.min())
    assert tr.marker.cmax == pytest.approx(VALUES.max())
    # a run where every component scores 0.95-1.0 still spans the whole colour scale
    high = np.linspace(0.95, 1.0, len(NAMES))
    tr = grid(values=high).data[0]
    assert (tr.marker.cmin, tr.marker.cmax) == pytest.approx((0.95, 1.0))


def test_grid_marks_chance_and_full_and_outlines_the_selection():
    fig = grid()
    bar = fig.data[0].marker.colorbar
    labels = list(bar.ticktext)
    assert "full 0.98" in labels  # inside [0.62, 0.99]
    assert not any(t.startswith("chance") for t in labels)  # 0.25 is outside the range
    note = fig.layout.annotations[0].text
    assert "chance 0.2500" in note and "full gradient 0.9800" in note
    assert list(bar.tickvals) == sorted(bar.tickvals)
    widths = list(fig.data[0].marker.line.width)
    assert widths[2] > max(w for i, w in enumerate(widths) if i != 2)
    hover = fig.data[0].hovertext[2]
    assert "L0.q" in hover and "0.9700" in hover and "1,024" in hover


def test_grid_height_and_marker_size_follow_the_layer_count():
    small = grid()
    layers = [i // 2 for i in range(60)]
    big = layer_kind_grid(
        np.linspace(0, 1, 60),
        layers,
        ["q", "down"] * 30,
        [f"L{i // 2}.{k}" for i, k in enumerate(["q", "down"] * 30)],
        None,
        0.2,
        0.9,
    )
    assert big.layout.height > small.layout.height
    assert big.data[0].marker.size < small.data[0].marker.size
    assert "unknown" in big.data[0].hovertext[0]
    assert list(big.layout.yaxis.categoryarray) == [f"L{i}" for i in range(30)]


def test_grid_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        layer_kind_grid(VALUES, LAYERS[:-1], KIND, NAMES, None, 0.2, 0.9)


def test_kind_means_equal_a_groupby_and_the_bars_show_them():
    means = kind_means(VALUES, KIND)
    want = pd.DataFrame({"kind": KIND, "v": VALUES}).groupby("kind")["v"].mean()
    pd.testing.assert_series_equal(
        means.sort_index(), want.sort_index(), check_names=False, check_index_type=False
    )
    assert list(means.index) == [k for k in KINDS if k in KIND]
    other = kind_means(VALUES[::-1], KIND)
    fig = kind_means_bar({"a": means, "b": other})
    assert [t.name for t in fig.data] == ["a", "b"]
    assert fig.layout.barmode == "group"
    np.testing.assert_allclose(fig.data[0].y, means.to_numpy())
    np.testing.assert_allclose(fig.data[1].y, other.reindex(means.index).to_numpy())
    assert list(fig.data[0].x) == list(means.index)


def test_depth_lines_one_line_per_kind_and_markers_for_model_wide():
    fig = depth_lines(VALUES, LAYERS, KIND, "d")
    lines = {t.name: t for t in fig.data}
    assert set(lines) == {"q", "down", "embed (model-wide)", "lm_head (model-wide)"}
    np.testing.assert_allclose(lines["q"].x, [0, 1])
    np.testing.assert_allclose(lines["q"].y, [0.97, 0.93])
    assert lines["embed (model-wide)"].x[0] < 0 < 1 < lines["lm_head (model-wide)"].x[0]
    assert "embed" in fig.layout.xaxis.ticktext and "head" in fig.layout.xaxis.ticktext


def test_params_scatter_log_x_and_every_component():
    fig = params_scatter(VALUES, N_PARAMS, KIND, NAMES, "p")
    assert fig.layout.xaxis.type == "log"
    seen = sorted(int(c) for t in fig.data for c in t.customdata)
    assert seen == list(range(len(NAMES)))
    for t in fig.data:
        for c, x, y in zip(t.customdata, t.x, t.y, strict=True):
            assert (x, y) == (N_PARAMS[c], VALUES[c])


def test_kind_medians_equal_a_groupby_and_the_axis_says_median():
    medians = kind_means(VALUES, KIND, "median")
    want = pd.DataFrame({"kind": KIND, "v": VALUES}).groupby("kind")["v"].median()
    np.testing.assert_allclose(medians.to_numpy(), want.reindex(medians.index).to_numpy())
    fig = kind_means_bar({"a": medians}, "median")
    assert fig.layout.yaxis.title.text == "median single-component accuracy"
    assert fig.layout.title.text.startswith("Median")
    with pytest.raises(ValueError, match="statistic"):
        kind_means(VALUES, KIND, "max")


def test_cell_intervals_equal_one_component_at_a_time():
    dots, qsq, csq, target, valid = tiny_instance(3, n=40, k=6)
    arrays = run_arrays(dots, qsq, csq, target, valid)
    got = cell_intervals(arrays, draws=300, seed=5)
    full = correct(cosines(dots, qsq, csq, np.arange(6)), target, valid)
    assert got.n == 40 and got.full == full.mean()
    for c in range(6):
        one = correct(cosines(dots, qsq, csq, [c]), target, valid)
        assert got.hits[c] == one.sum()
        assert (got.ci_lo[c], got.ci_hi[c]) == clopper_pearson(int(one.sum()), 40)
        lo, hi = paired_diff_ci(one, full, draws=300, seed=5)
        assert (got.diff_lo[c], got.diff_hi[c]) == pytest.approx((lo, hi), abs=1e-12)
        assert got.distinct[c] == (lo > 0 or hi < 0)
    np.testing.assert_array_equal(got.accuracy, got.hits / 40)


def test_grid_hover_gives_each_cells_intervals_and_the_veil_covers_the_others():
    cells = CellIntervals(
        n=100,
        hits=np.round(VALUES * 100).astype(int),
        ci_lo=VALUES - 0.05,
        ci_hi=VALUES + 0.01,
        diff_lo=np.array([0.01, -0.4, -0.02, -0.1, -0.01, -0.08]),
        diff_hi=np.array([0.05, -0.3, 0.03, -0.01, 0.02, -0.02]),
        full=0.9,
    )
    plain = grid(cells=cells)
    assert len(plain.data) == 1  # no veil unless asked
    hover = plain.data[0].hovertext
    assert "[0.920, 0.980]" in hover[2] and "97/100" in hover[2]
    assert "[-0.020, +0.030]" in hover[2] and "not distinguishable" in hover[2]
    assert "better" in hover[0]
    assert "worse" in hover[1] and "worse" in hover[3]
    assert plain.layout.annotations[0].text.endswith("<br>4 of 6 differ from the full gradient")
    veil = grid(cells=cells, fade=True).data[1]
    faded = [c for c in range(len(NAMES)) if not cells.distinct[c]]
    assert faded == [2, 4]
    assert list(zip(veil.x, veil.y)) == [
        (KIND[c], "model" if LAYERS[c] is None else f"L{LAYERS[c]}") for c in faded
    ]
    assert veil.hoverinfo == "skip" and veil.customdata is None
