"""Greedy selection curves (paper's Figs. 4/5) with their baselines."""

from __future__ import annotations

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


def greedy_curve(
    curve: pd.DataFrame,
    metric: str = "accuracy",
    baselines: Mapping[str, float] | None = None,
    current: tuple[float, float] | None = None,
    heldout: bool = True,
    title: str | None = None,
) -> go.Figure:
    """One greedy curve: ``curve`` has step, component, accuracy, fidelity, param_fraction
    [, heldout_accuracy] (one row per step); ``baselines`` name -> value are horizontal lines
    (keys containing "full", "BM25", "chance" or ":" get their colour); ``current`` marks the
    current subset at (x, y)."""
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
                    name="k-fold held-out curve",
                    line={"color": COLORS["heldout"], "dash": "dot"},
                    hovertemplate="held-out %{y:.4f}<extra></extra>",
                )
            )
    for name, value in (baselines or {}).items():
        if value is None or not np.isfinite(value):
            continue
        key = next((k for k in ("full", "BM25", "chance") if k in name), None)
        color = COLORS.get({"full": "full", "BM25": "bm25", "chance": "chance"}.get(key, ""))
        color = color or COLORS["projection"]
        fig.add_hline(
            y=value,
            line={"color": color, "dash": "dash", "width": 1},
            annotation_text=f"{name} {value:.4f}",
            annotation_position="bottom right",
            annotation_font_color=color,
        )
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
    return finish(fig, title or f"Greedy selection by {metric}")


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
    fidelity), and the exact full gradient as a line."""
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
                textposition="top center",
                name="random projection (all components)",
                marker={"color": COLORS["projection"], "size": 12, "symbol": "diamond"},
                hovertemplate="%{text}: %{y:.4f}<extra></extra>",
            )
        )
    if full is not None and np.isfinite(full):
        fig.add_hline(
            y=full,
            line={"color": COLORS["full"], "dash": "dash", "width": 1},
            annotation_text=f"full gradient {full:.4f}",
            annotation_position="bottom right",
        )
    fig.update_xaxes(title="fraction of parameters (selection) or of dimensions (projection)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(title=METRIC_LABEL.get(metric, metric))
    return finish(fig, title or f"Select vs project: {metric}")
