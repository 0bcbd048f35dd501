"""Per-component accuracy by layer and kind: the clickable layer × kind grid, kind means (paper's
Table 1), accuracy vs depth (Fig. 3) and accuracy vs parameter count (Fig. 2); the same grid
coloured by a model's parameter counts.

The grid is a ``go.Scatter`` of square markers, not a ``go.Heatmap``: Streamlit returns click
events for scatter points only (streamlit#8760), and each point carries its component index as
``customdata``."""

from __future__ import annotations

import html
import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from gradlens.figures.style import COLORS, finish, note_below
from gradlens.models.naming import KINDS
from gradlens.selection.cells import CellIntervals

MODEL_ROW = "model"
#: The veil over cells not distinguishable from the full gradient.
VEIL = "rgba(255,255,255,0.7)"
#: Colour scale of the grid (perceptually uniform; light = high).
GRID_SCALE = "Viridis"
#: Input-side model-wide kinds (drawn before layer 0 on the depth plot); the rest go after.
_INPUT_SIDE = ("embed", "pos_embed")
_SETTING_COLORS = (COLORS["greedy"], COLORS["current"], COLORS["original"], COLORS["projection"])
#: Kind colours by role: attention blues/purples, MLP warm and green, model-wide greys/pink.
KIND_COLORS = {
    "embed": "#7f7f7f",
    "pos_embed": "#bcbd22",
    "q": "#1f77b4",
    "k": "#17becf",
    "v": "#9467bd",
    "qkv": "#1f77b4",
    "o": "#393b79",
    "xq": "#6baed6",
    "xk": "#9edae5",
    "xv": "#c5b0d5",
    "xo": "#6b6ecf",
    "gate": "#ff7f0e",
    "up": "#d62728",
    "fc_in": "#d62728",
    "down": "#2ca02c",
    "fc_out": "#2ca02c",
    "lm_head": "#e377c2",
}

#: Per-component values [K] (accuracies).
Values = Sequence[float] | np.ndarray


def kind_color(kind: str) -> str:
    """A fixed colour per kind (the same on every figure)."""
    if kind in KIND_COLORS:
        return KIND_COLORS[kind]
    palette = qualitative.Dark24
    return palette[sum(map(ord, kind)) % len(palette)]


def kind_order(kinds: Sequence[str]) -> list[str]:
    """The distinct kinds in ``KINDS`` order (unknown kinds after, sorted)."""
    present = set(kinds)
    return [k for k in KINDS if k in present] + sorted(present - set(KINDS))


def _is_missing(layer: object) -> bool:
    return layer is None or layer is pd.NA or (isinstance(layer, float) and math.isnan(layer))


def row_label(layer: object) -> str:
    """y label of a component's row: ``L3`` for depth 3, ``model`` for model-wide ones."""
    return MODEL_ROW if _is_missing(layer) else f"L{int(layer)}"


def row_order(layers: Sequence[object]) -> list[str]:
    """Row labels top to bottom: layers by increasing depth, then ``model`` (if any)."""
    depths = sorted({int(x) for x in layers if not _is_missing(x)})
    rows = [f"L{d}" for d in depths]
    return rows + ([MODEL_ROW] if any(_is_missing(x) for x in layers) else [])


def _fmt_params(n: float) -> str:
    if n is None or not np.isfinite(n):
        return "unknown"
    return f"{int(n):,}"


def _color_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-9:  # one value: a small band around it, so the bar still has a scale
        lo, hi = lo - 0.005, hi + 0.005
    return lo, hi


def _colorbar_ticks(lo: float, hi: float, chance: float, full: float) -> tuple[list, list]:
    """Five ticks over [lo, hi], with chance and the full gradient's accuracy marked where they
    fall inside the range (a plain tick too close to a marked one is dropped)."""
    span = hi - lo
    marks = [
        (v, f"{label} {v:.2f}")
        for v, label in ((chance, "chance"), (full, "full"))
        if v is not None and np.isfinite(v) and lo <= v <= hi
    ]
    plain = [
        (v, f"{v:.3f}")
        for v in np.linspace(lo, hi, 5)
        if all(abs(v - m) > 0.09 * span for m, _ in marks)
    ]
    ticks = sorted(plain + marks)
    return [float(v) for v, _ in ticks], [t for _, t in ticks]


def layer_kind_grid(
    values: Sequence[float] | np.ndarray,
    layers: Sequence[int | None],
    kinds: Sequence[str],
    names: Sequence[str],
    n_params: Sequence[float] | np.ndarray | None,
    chance: float,
    full: float,
    selected: Collection[int] = (),
    title: str = "Single-component accuracy",
    color_range: tuple[float, float] | None = None,
    cells: CellIntervals | None = None,
    fade: bool = False,
) -> go.Figure:
    """Per-component ``values`` [K] as a layer × kind grid of square markers.

    x: kind (``KINDS`` order, kinds present only); y: ``L<depth>`` rows top to bottom, then a
    ``model`` row for model-wide components (string categories). Colour: the value on a scale
    fitted to the data's range; the colour bar marks ``chance`` and ``full`` (the full
    gradient's accuracy) where they fall inside it, and a note under the grid states both
    (``color_range`` overrides the fitted range, e.g. one scale for two grids side by side).
    Each point's ``customdata`` is its component index; ``selected`` components are outlined.
    With ``cells`` (``selection.cells``; ``values`` are then its accuracies) the hover gives each
    cell's Clopper–Pearson interval and its paired interval against the full gradient, and
    ``fade`` veils the cells whose paired interval includes 0 (a second trace, without hover,
    so that clicks reach the square under it).
    """
    values = np.asarray(values, dtype=np.float64)
    k = len(values)
    if not len(layers) == len(kinds) == len(names) == k:
        raise ValueError("values, layers, kinds and names must have the same length")
    sizes = np.full(k, np.nan) if n_params is None else np.asarray(n_params, dtype=np.float64)
    cols = kind_order(kinds)
    rows = row_order(layers)
    lo, hi = _color_range(values) if color_range is None else _color_range(np.array(color_range))
    chosen = {int(c) for c in selected}
    outlined = np.array([c in chosen for c in range(k)], dtype=bool)
    # cell size in px: big squares for a few layers, small ones (still legible) for 30+
    n_rows = max(len(rows), 1)
    cell = float(np.clip(620 / n_rows, 17, 52))
    hover = _grid_hover(names, values, sizes, cells)
    marker = _grid_marker(values, cell, (lo, hi), _colorbar_ticks(lo, hi, chance, full), outlined)
    ys = [row_label(x) for x in layers]
    fig = go.Figure(_grid_trace(list(kinds), ys, hover, marker))
    if fade and cells is not None:
        veiled = np.flatnonzero(~cells.distinct)
        fig.add_trace(_veil_trace([kinds[c] for c in veiled], [ys[c] for c in veiled], cell))
    fig.update_xaxes(
        **_categories(cols),
        side="top",
        automargin=True,
        tickfont={"size": 11},
        range=[-0.6, len(cols) - 0.4],
    )
    fig.update_yaxes(**_categories(rows), autorange="reversed")
    finish(fig, title, height=int(n_rows * cell + 140))
    # the notes go under the grid: the kind labels (top) may need the room above it
    note = _grid_note(chance, full, (lo, hi), shared=color_range is not None)
    if cells is not None:  # a line of its own: a half-width grid cannot hold both
        note += f"<br>{int(cells.distinct.sum())} of {k} differ from the full gradient"
    note_below(fig, note)
    fig.update_layout(
        title={"y": 1.0, "yref": "container", "yanchor": "top", "pad": {"t": 12}},
        margin={"l": 60, "r": 20, "t": 90, "b": 52 if cells is not None else 36},
        clickmode="event+select",
        dragmode=False,
    )
    return fig


def _grid_hover(
    names: Sequence[str], values: np.ndarray, sizes: np.ndarray, cells: CellIntervals | None
) -> list[str]:
    """Each square's hover: name, accuracy, parameters; with ``cells`` the accuracy's
    Clopper–Pearson interval (hits/N) and the paired interval of (component − full gradient)
    with its verdict."""
    out = []
    for c in range(len(values)):
        text = f"<b>{html.escape(str(names[c]))}</b><br>accuracy {values[c]:.4f}"
        if cells is not None:
            text += (
                f" [{cells.ci_lo[c]:.3f}, {cells.ci_hi[c]:.3f}]<br>"
                f"{cells.hits[c]}/{cells.n} queries (Clopper–Pearson 95 %)<br>"
                f"minus full gradient ({cells.full:.4f}): "
                f"[{cells.diff_lo[c]:+.3f}, {cells.diff_hi[c]:+.3f}] (paired bootstrap): "
                + _verdict(cells.diff_lo[c], cells.diff_hi[c])
            )
        out.append(text + f"<br>parameters {_fmt_params(sizes[c])}")
    return out


def _verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "better"
    return "worse" if hi < 0 else "not distinguishable"


def _veil_trace(x: list[str], y: list[str], cell: float) -> go.Scatter:
    """Translucent white squares over the cells not distinguishable from the full gradient."""
    return go.Scatter(
        x=x,
        y=y,
        mode="markers",
        marker={"symbol": "square", "size": cell * 0.9, "color": VEIL, "line": {"width": 0}},
        hoverinfo="skip",
        showlegend=False,
        name="not distinguishable from the full gradient",
    )


def _grid_marker(
    values: np.ndarray,
    cell: float,
    color_range: tuple[float, float],
    ticks: tuple[list, list],
    outlined: np.ndarray,
) -> dict:
    """The grid's square markers: coloured by ``values`` over ``color_range``, the colour bar
    at ``ticks`` (values, labels), ``outlined`` [K] ones drawn with a thick border."""
    return {
        "symbol": "square",
        "size": cell * 0.9,
        "color": values,
        "colorscale": GRID_SCALE,
        "cmin": color_range[0],
        "cmax": color_range[1],
        "line": {
            "color": np.where(outlined, COLORS["current"], "rgba(255,255,255,0.6)").tolist(),
            "width": np.where(outlined, 4.0, 0.5).tolist(),
        },
        "colorbar": {
            "title": {"text": "accuracy", "side": "right"},
            "tickvals": ticks[0],
            "ticktext": ticks[1],
            "thickness": 14,
            "len": 1.0,
        },
    }


def _grid_trace(x: list[str], y: list[str], hover: list[str], marker: dict) -> go.Scatter:
    """One square marker per component at (kind, row), its index as ``customdata``."""
    return go.Scatter(
        x=x,
        y=y,
        mode="markers",
        customdata=np.arange(len(x)),
        hovertext=hover,
        hovertemplate="%{hovertext}<extra></extra>",
        marker=marker,
        # a click selects points; keep every square opaque rather than fading the others
        selected={"marker": {"opacity": 1.0}},
        unselected={"marker": {"opacity": 1.0}},
        showlegend=False,
    )


def _grid_note(chance: float, full: float, color_range: tuple[float, float], shared: bool) -> str:
    """``chance 0.1000 · full gradient 0.8100 · colour 0.100–0.900 (this run's range)``,
    leaving out what is not finite."""
    notes = []
    if chance is not None and np.isfinite(chance):
        notes.append(f"chance {chance:.4f}")
    if full is not None and np.isfinite(full):
        notes.append(f"full gradient {full:.4f}")
    scope = "shared range" if shared else "this run's range"
    notes.append(f"colour {color_range[0]:.3f}–{color_range[1]:.3f} ({scope})")
    return " · ".join(notes)


def kind_means(
    values: Sequence[float] | np.ndarray, kinds: Sequence[str], statistic: str = "mean"
) -> pd.Series:
    """``statistic`` (``mean`` or ``median``) of ``values`` per kind, in ``KINDS`` order (the
    paper's Table 1 columns)."""
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    groups = pd.Series(np.asarray(values, dtype=np.float64)).groupby(list(kinds))
    s = groups.agg(statistic)
    out = s.reindex(kind_order(kinds))
    out.index.name = "kind"
    return out


def kind_means_bar(
    tables: Mapping[str, pd.Series], statistic: str = "mean", title: str | None = None
) -> go.Figure:
    """Grouped bars: one group per kind (``KINDS`` order), one bar per setting (label -> Series
    of the ``statistic`` of accuracy indexed by kind, as ``kind_means`` gives)."""
    axis = f"{statistic} single-component accuracy"
    kinds = kind_order([k for s in tables.values() for k in s.index])
    fig = go.Figure()
    for i, (label, series) in enumerate(tables.items()):
        y = series.reindex(kinds)
        fig.add_trace(
            go.Bar(
                x=kinds,
                y=y.to_numpy(dtype=np.float64),
                name=str(label),
                marker_color=_SETTING_COLORS[i % len(_SETTING_COLORS)],
                hovertemplate="%{x}: %{y:.4f}<extra>" + html.escape(str(label)) + "</extra>",
            )
        )
    fig.update_layout(barmode="group", bargap=0.25)
    fig.update_xaxes(title="component kind", type="category")
    fig.update_yaxes(title=axis)
    return finish(fig, title or f"{axis.capitalize()} per kind", height=380)


def _categories(order: Sequence[str]) -> dict:
    """A category axis in exactly this order, without grid lines or a title."""
    return {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": list(order),
        "showgrid": False,
        "title": None,
    }


def depth_lines(
    values: Values, layers: Sequence[int | None], kinds: Sequence[str], title: str = "By depth"
) -> go.Figure:
    """Single-component accuracy against layer, one line per kind (paper's Fig. 3). Model-wide
    components are markers: embeddings before the first layer, the rest after the last."""
    values = np.asarray(values, dtype=np.float64)
    depth = np.array([np.nan if _is_missing(x) else float(x) for x in layers])
    kinds = list(kinds)
    has_depth = np.isfinite(depth)
    lo = float(depth[has_depth].min()) if has_depth.any() else 0.0
    hi = float(depth[has_depth].max()) if has_depth.any() else 0.0
    fig = go.Figure()
    for kind in kind_order(kinds):
        idx = [c for c, kd in enumerate(kinds) if kd == kind and has_depth[c]]
        if not idx:
            continue
        idx.sort(key=lambda c: depth[c])
        fig.add_trace(
            go.Scatter(
                x=depth[idx],
                y=values[idx],
                mode="lines+markers" if len(idx) > 1 else "markers",
                name=kind,
                line={"color": kind_color(kind), "width": 1.5},
                marker={"size": 5},
                customdata=np.array(idx),
                hovertemplate=f"{html.escape(kind)} L%{{x}}: %{{y:.4f}}<extra></extra>",
            )
        )
    step = max(1, math.ceil((hi - lo + 1) / 8))  # at most ~9 labelled layers
    ticks: list[tuple[float, str]] = []
    for c in np.flatnonzero(~has_depth):
        kind = kinds[c]
        x = lo - step if kind in _INPUT_SIDE else hi + step
        ticks.append((x, "embed" if kind in _INPUT_SIDE else "head"))
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[values[c]],
                mode="markers",
                name=f"{kind} (model-wide)",
                marker={"color": kind_color(kind), "size": 11, "symbol": "diamond"},
                customdata=[int(c)],
                hovertemplate=f"{html.escape(kind)}: %{{y:.4f}}<extra>model-wide</extra>",
            )
        )
    if has_depth.any():
        ticks += [(float(d), str(int(d))) for d in np.arange(lo, hi + 1, step)]
    ticks = sorted(dict(ticks).items())
    fig.update_xaxes(
        title="layer (depth)",
        tickvals=[t for t, _ in ticks],
        ticktext=[label for _, label in ticks],
        zeroline=False,
    )
    fig.update_yaxes(title="single-component accuracy")
    return _legend_below(finish(fig, title, height=440))


def _legend_below(fig: go.Figure) -> go.Figure:
    """A legend of many kinds under the plot, where it cannot run into the title."""
    fig.update_layout(
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0.0, "xanchor": "left"},
        margin={"b": 120},
    )
    return fig


def params_scatter(
    values: Sequence[float] | np.ndarray,
    n_params: Sequence[float] | np.ndarray,
    kinds: Sequence[str],
    names: Sequence[str],
    title: str = "Accuracy vs parameter count",
) -> go.Figure:
    """Single-component accuracy against the component's parameter count (log x), coloured by
    kind (paper's Fig. 2); ``customdata`` = component index."""
    values = np.asarray(values, dtype=np.float64)
    sizes = np.asarray(n_params, dtype=np.float64)
    kinds = list(kinds)
    fig = go.Figure()
    for kind in kind_order(kinds):
        idx = [c for c, kd in enumerate(kinds) if kd == kind]
        fig.add_trace(
            go.Scatter(
                x=sizes[idx],
                y=values[idx],
                mode="markers",
                name=kind,
                marker={"color": kind_color(kind), "size": 8, "opacity": 0.85},
                customdata=np.array(idx),
                hovertext=[html.escape(str(names[c])) for c in idx],
                hovertemplate="%{hovertext}: %{y:.4f}<br>%{x:,} parameters<extra></extra>",
            )
        )
    fig.update_xaxes(title="parameters in the component", type="log", tickformat="~s", dtick="D2")
    fig.update_yaxes(title="single-component accuracy")
    return _legend_below(finish(fig, title, height=440))


def human_count(n: float) -> str:
    """``28.3M``, ``884.7k``, ``512`` (short parameter counts for axis ticks)."""
    n = float(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def params_grid(weights: pd.DataFrame, title: str = "Parameters per component") -> go.Figure:
    """A model's weight matrices (``gradlens.models.info.weight_table``: component, layer, kind,
    shape, n_params) as the layer × kind grid of ``layer_kind_grid``, coloured by log10 of each
    component's parameter count (colour bar labelled in counts)."""
    n = weights["n_params"].to_numpy(dtype=np.float64)
    layers = [None if pd.isna(x) else int(x) for x in weights["layer"]]
    fig = layer_kind_grid(
        np.log10(np.maximum(n, 1.0)),
        layers,
        list(weights["kind"]),
        list(weights["component"]),
        n,
        chance=math.nan,
        full=math.nan,
        title=title,
    )
    marker = fig.data[0].marker
    lo, hi = float(marker.cmin), float(marker.cmax)
    ticks = np.linspace(lo, hi, 5) if hi - lo > 0.02 else np.array([(lo + hi) / 2])
    hover = [
        f"<b>{html.escape(str(r.component))}</b><br>{html.escape(str(r.kind))}, "
        f"{html.escape(str(r.shape))}<br>{int(r.n_params):,} parameters"
        for r in weights.itertuples(index=False)
    ]
    fig.update_traces(
        hovertext=hover,
        marker_colorbar={
            "title": {"text": "parameters (log scale)", "side": "right"},
            "tickvals": [float(t) for t in ticks],
            "ticktext": [human_count(10**t) for t in ticks],
        },
    )
    fig.layout.annotations = ()
    note_below(
        fig,
        f"{len(weights)} components, {int(n.sum()):,} parameters · colour: log10 of the count",
    )
    return fig
