"""Figures of the pair inspector (``gradlens.lenses.pairs``): the per-component cosine of two
examples' gradients as a layer × kind grid read on a diverging scale, and per-token bars (each
target token's share of its example's gradient and the cosine of its gradient with the other
example's gradient).

Decoded tokens are user text: every label goes through ``gradlens.figures.lenses.token_label``
(HTML-escaped, since plotly reads a subset of HTML in text and hover labels; whitespace made
visible)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradlens.figures.layers import layer_kind_grid, row_label
from gradlens.figures.lenses import token_label
from gradlens.figures.style import COLORS, finish

#: Diverging scale of a cosine: red = opposed (-1), white = orthogonal (0), blue = aligned (+1).
COSINE_SCALE = "RdBu"
#: Colour of a cell whose cosine is undefined (a zero gradient in either example).
UNDEFINED_COLOR = "#d9d9d9"
_SERIES = {
    "share": ("share of its example's gradient", COLORS["greedy"]),
    "cosine_other": ("cosine with the other example's gradient", COLORS["current"]),
}


def pair_cosine_grid(
    components: pd.DataFrame, full: float, title: str = "Cosine of the two gradients, per component"
) -> go.Figure:
    """Per-component cosines (``components``: component, layer, kind, n_params, cosine — as
    ``PairComparison.component_cosines()``; cosine in [-1, 1], NaN = undefined) as the layer ×
    kind grid of ``layer_kind_grid``, on a fixed diverging scale -1 … +1 centred on 0; the colour
    bar marks the full-gradient cosine ``full``. Undefined cells are grey."""
    cosines = components["cosine"].to_numpy(dtype=np.float64)
    layers = [None if pd.isna(v) else int(v) for v in components["layer"]]
    kinds, names = list(components["kind"]), list(components["component"])
    n_params = components["n_params"].to_numpy(dtype=np.float64)
    values = np.asarray(cosines, dtype=np.float64)
    defined = np.isfinite(values)
    fig = layer_kind_grid(
        np.where(defined, values, 0.0),
        layers,
        kinds,
        names,
        n_params,
        chance=None,
        full=full,
        title=title,
        color_range=(-1.0, 1.0),
    )
    sizes = np.full(len(values), np.nan) if n_params is None else np.asarray(n_params, float)
    trace = fig.data[0]
    trace.hovertext = [
        f"<b>{html.escape(str(names[c]))}</b><br>"
        + (f"cosine {values[c]:+.4f}" if defined[c] else "cosine undefined (zero gradient)")
        + (f"<br>parameters {int(sizes[c]):,}" if np.isfinite(sizes[c]) else "")
        for c in range(len(values))
    ]
    trace.marker.colorscale = COSINE_SCALE
    trace.marker.cmid = 0.0
    trace.marker.colorbar.title.text = "cosine"
    fig.layout.annotations[0].text = (
        f"full-gradient cosine {full:+.4f} · colour: −1 opposed (red), 0 orthogonal, "
        "+1 aligned (blue)" + (" · grey: undefined (zero gradient)" if not defined.all() else "")
    )
    if not defined.all():
        idx = np.flatnonzero(~defined)
        fig.add_trace(
            go.Scatter(
                x=[kinds[c] for c in idx],
                y=[row_label(layers[c]) for c in idx],
                mode="markers",
                marker={
                    "symbol": "square",
                    "size": trace.marker.size,
                    "color": UNDEFINED_COLOR,
                    "line": {"color": "rgba(255,255,255,0.6)", "width": 0.5},
                },
                customdata=idx,
                hovertext=[trace.hovertext[c] for c in idx],
                hovertemplate="%{hovertext}<extra></extra>",
                showlegend=False,
            )
        )
    return fig


def _token_axis(frame: pd.DataFrame) -> list[str]:
    """``34·␣pizza``: the position keeps repeated tokens apart."""
    return [
        f"{int(p)}·{token_label(str(t), 14)}" for p, t in zip(frame["position"], frame["token"])
    ]


def token_bars(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    labels: tuple[str, str] = ("A", "B"),
    title: str = "Each target token's gradient: its share, and its cosine with the other example",
) -> go.Figure:
    """Two rows of grouped bars, one per example: for each loss-bearing token its share of its
    example's gradient (the shares sum to 1) and the cosine of its gradient with the other
    example's gradient. Frames as ``TokenDecomposition.frame()`` gives them (position, token,
    share, cosine_other, contribution, gap); ``labels`` name the examples (plain text)."""
    la, lb = (html.escape(str(x), quote=False) for x in labels)
    fig = make_subplots(
        rows=2,
        cols=1,
        vertical_spacing=0.22,
        subplot_titles=(
            f"tokens of {la} (cosine with {lb}'s gradient)",
            f"tokens of {lb} (cosine with {la}'s gradient)",
        ),
    )
    for row, frame in ((1, frame_a), (2, frame_b)):
        x = _token_axis(frame)
        extra = np.stack(
            [frame["share"], frame["cosine_other"], frame["contribution"], frame["gap"]], axis=1
        )
        for col, (name, color) in _SERIES.items():
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=frame[col].to_numpy(dtype=np.float64),
                    name=name,
                    marker_color=color,
                    legendgroup=col,
                    showlegend=row == 1,
                    customdata=extra,
                    hovertemplate="%{x}<br>share %{customdata[0]:.4f}<br>cosine with the other "
                    "%{customdata[1]:+.4f}<br>part of the full cosine %{customdata[2]:+.4f}<br>"
                    "part of 1 − cosine %{customdata[3]:+.4f}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        fig.update_xaxes(type="category", tickangle=-45 if len(x) > 12 else 0, row=row, col=1)
        fig.update_yaxes(zeroline=True, zerolinecolor="#888", row=row, col=1)
    n = max(len(frame_a), len(frame_b))
    finish(fig, title, height=600 + (80 if n > 12 else 0))
    # the legend under the plots: above them it would run into the first subplot's title
    fig.update_layout(
        barmode="group",
        bargap=0.3,
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0.0, "xanchor": "left"},
        margin={"t": 80, "b": 110},
    )
    return fig


def token_cosine_heatmap(
    cosines: np.ndarray,
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    labels: tuple[str, str] = ("A", "B"),
    identical: float = 0.999,
) -> go.Figure:
    """The token matrix: cos(g_t(a), g_u(b)) float[n_a, n_b], a's loss-bearing tokens as rows
    (top to bottom in order), b's as columns, on the fixed diverging scale -1 … +1; each cell
    shows its cosine, ``=`` where it is ≥ ``identical``. Frames: position and token of each
    example's tokens (``TokenDecomposition.frame()``); ``labels`` name the examples."""
    cos = np.asarray(cosines, dtype=np.float64)
    la, lb = (html.escape(str(x), quote=False) for x in labels)
    ya, xb = _token_axis(frame_a), _token_axis(frame_b)
    text = [[("= " if v >= identical else "") + f"{v:+.3f}" for v in row] for row in cos]
    fig = go.Figure(
        go.Heatmap(
            z=cos,
            x=xb,
            y=ya,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 12},
            zmin=-1.0,
            zmax=1.0,
            zmid=0.0,
            colorscale=COSINE_SCALE,
            colorbar={"title": {"text": "cosine"}},
            xgap=2,
            ygap=2,
            hovertemplate=f"{la}'s %{{y}} · {lb}'s %{{x}}<br>cosine %{{z:+.4f}}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title=f"{lb}'s loss-bearing tokens", side="bottom")
    fig.update_yaxes(type="category", title=f"{la}'s loss-bearing tokens", autorange="reversed")
    height = 200 + 44 * len(ya)
    title = f"Per-token gradients: cosine of each token of {la} with each token of {lb}"
    return finish(fig, title, max(height, 320))
