"""Greedy selection curves (paper's Figs. 4/5) with their baselines."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gradlens.figures.style import COLORS, finish

METRIC_LABEL = {"accuracy": "retrieval accuracy", "fidelity": "fidelity to the full gradient"}


def _x(curve: pd.DataFrame) -> tuple[str, str, str]:
    """x column, axis title and axis type: parameter fraction (log) when known, else step."""
    if "param_fraction" in curve and curve["param_fraction"].notna().all():
        return "param_fraction", "fraction of parameters in the subset", "log"
    return "step", "components in the subset", "linear"


#: The k-fold curve's legend name: each fold's own greedy prefix of size k, scored on that
#: fold's held-out queries (not a held-out figure for the prefix shown; its maximum over k is
#: optimistic).
FOLD_PREFIX = "fold prefixes of size k (held out)"
NULL_BAND_NAME = "null: greedy on permuted originals (5–95 %)"
#: Baseline colour by a word its name contains (first match; a projection's method label has
#: a colon); the projection colour otherwise.
_BASELINE_COLORS = (
    (":", "projection"),
    ("held out", "heldout"),
    ("full", "full"),
    ("BM25", "bm25"),
    ("chance", "chance"),
)


def _baseline_color(name: str) -> str:
    key = next((c for word, c in _BASELINE_COLORS if word in name), "projection")
    return COLORS[key]


def greedy_curve(
    curve: pd.DataFrame,
    metric: str = "accuracy",
    baselines: Mapping[str, float] | None = None,
    current: tuple[float, float] | None = None,
    heldout: bool = True,
    title: str | None = None,
    null_band: pd.DataFrame | None = None,
) -> go.Figure:
    """One greedy curve: ``curve`` has step, component, accuracy, fidelity, param_fraction
    [, heldout_accuracy] (one row per step); ``baselines`` name -> value are horizontal lines
    named in the legend with their value (coloured by ``_BASELINE_COLORS``); ``null_band``
    (step, band_lo, band_hi: the permutation null of the greedy prefix of each size, accuracy
    only) is a shaded band at the curve's x of the same step; ``current`` marks the current
    subset at (x, y) and is always the last trace."""
    xcol, xtitle, xtype = _x(curve)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=curve[xcol],
            y=curve[metric],
            mode="lines+markers",
            name=f"greedy ({metric}, in-sample)",
            line={"color": COLORS["greedy"]},
            marker={"size": 4},
            customdata=np.stack([curve["step"], curve.get("component", curve["step"])], axis=1),
            hovertemplate="step %{customdata[0]}: +%{customdata[1]}<br>"
            + metric
            + " %{y:.4f}<br>x %{x:.3g}<extra></extra>",
        )
    )
    if heldout and metric == "accuracy" and "heldout_accuracy" in curve:
        held = curve["heldout_accuracy"]
        if held.notna().any():
            fig.add_trace(
                go.Scatter(
                    x=curve[xcol],
                    y=held,
                    mode="lines",
                    name=FOLD_PREFIX,
                    line={"color": COLORS["heldout"], "dash": "dot"},
                    hovertemplate="fold prefixes, held out: %{y:.4f}<extra></extra>",
                )
            )
    if null_band is not None and metric == "accuracy" and not null_band.empty:
        fig.add_trace(_band_trace(curve, xcol, null_band))
    span = curve[xcol].dropna()
    for name, value in (baselines or {}).items():
        if value is not None and np.isfinite(value) and not span.empty:
            fig.add_trace(_baseline_trace(name, value, (span.min(), span.max())))
    if current is not None:
        fig.add_trace(
            go.Scatter(
                x=[current[0]],
                y=[current[1]],
                mode="markers",
                name="current subset",
                marker={"color": COLORS["current"], "size": 13, "symbol": "star"},
                hovertemplate="current subset: %{y:.4f}<extra></extra>",
            )
        )
    fig.update_xaxes(title=xtitle, type=xtype)
    fig.update_yaxes(title=METRIC_LABEL.get(metric, metric))
    finish(fig, title or f"Greedy selection by {metric}", height=480)
    # many named lines: the legend goes under the plot, where it has the width
    fig.update_layout(
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0.0, "xanchor": "left"},
        margin={"b": 130},
    )
    return fig


def _band_trace(curve: pd.DataFrame, xcol: str, band: pd.DataFrame) -> go.Scatter:
    """The null band as one closed polygon: band_hi left to right, band_lo back."""
    at = curve[list(dict.fromkeys(["step", xcol]))].merge(band, on="step").sort_values("step")
    x = list(at[xcol]) + list(at[xcol][::-1])
    y = list(at["band_hi"]) + list(at["band_lo"][::-1])
    return go.Scatter(
        x=x,
        y=y,
        mode="lines",
        fill="toself",
        fillcolor="rgba(127,127,127,0.18)",
        line={"width": 0, "color": "rgba(127,127,127,0.4)"},
        name=NULL_BAND_NAME,
        hoverinfo="skip",
    )


def _baseline_trace(name: str, value: float, span: tuple[float, float]) -> go.Scatter:
    """A dashed horizontal line across the curve's x range, named with its value."""
    color = _baseline_color(name)
    return go.Scatter(
        x=list(span),
        y=[value, value],
        mode="lines",
        name=f"{name} {value:.4f}",
        line={"color": color, "dash": "dash", "width": 1.5},
        hovertemplate=f"{html.escape(name)} {value:.4f}<extra></extra>",
    )


def select_vs_project(
    greedy: Mapping[str, pd.DataFrame],
    projections: pd.DataFrame,
    full: float,
    metric: str = "accuracy",
    title: str | None = None,
) -> go.Figure:
    """Select vs project (paper's Figs. 4/5): greedy curves by method (label -> curve frame, as
    in ``greedy_curve``) against the parameter fraction, each projection's full-gradient
    ``metric`` at its dimension fraction (``projections``: method, fraction, accuracy,
    fidelity), and the exact full gradient as a line named in the legend with its value."""
    fig = go.Figure()
    palette = [COLORS["greedy"], COLORS["projection"], "#8c564b", "#e377c2"]
    for i, (label, curve) in enumerate(greedy.items()):
        xcol, _, _ = _x(curve)
        fig.add_trace(
            go.Scatter(
                name=label,
                line={"color": palette[i % len(palette)]},
                x=curve[xcol],
                y=curve[metric],
                mode="lines",
                customdata=curve.get("component", curve["step"]),
                hovertemplate="+%{customdata}: %{y:.4f} at %{x:.3g}<extra>" + label + "</extra>",
            )
        )
    if not projections.empty:
        fig.add_trace(
            go.Scatter(
                x=projections["fraction"],
                y=projections[metric],
                mode="markers+text",
                text=projections["method"],
                textposition="bottom center",
                name="random projection (all components)",
                marker={"color": COLORS["projection"], "size": 12, "symbol": "diamond"},
                hovertemplate="%{text}: %{y:.4f}<extra></extra>",
            )
        )
    xs = [c[_x(c)[0]] for c in greedy.values()] + [projections.get("fraction", pd.Series())]
    span = pd.concat(xs).dropna()
    if full is not None and np.isfinite(full) and not span.empty:
        fig.add_trace(_baseline_trace("full gradient", full, (span.min(), span.max())))
    fig.update_xaxes(title="fraction of parameters (selection) or of dimensions (projection)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(title=METRIC_LABEL.get(metric, metric))
    return finish(fig, title or f"Select vs project: {metric}")
