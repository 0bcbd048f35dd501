"""Shared look of the figures: one template, colours per series, margins."""

from __future__ import annotations

import plotly.graph_objects as go

TEMPLATE = "plotly_white"
#: Colours by meaning, the same on every page.
COLORS = {
    "greedy": "#1f77b4",
    "heldout": "#17becf",
    "full": "#d62728",
    "bm25": "#7f7f7f",
    "chance": "#bcbd22",
    "projection": "#9467bd",
    "current": "#ff7f0e",
    "original": "#2ca02c",
    "wrong": "#d62728",
}


def finish(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    """Apply the template, a title and compact margins."""
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.0, "xanchor": "left"},
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
    )
    return fig


def note_below(fig: go.Figure, text: str) -> None:
    """A small grey note under the plot area (left-aligned)."""
    fig.add_annotation(
        text=text,
        xref="paper",
        yref="paper",
        x=0.0,
        y=0.0,
        xanchor="left",
        yanchor="top",
        yshift=-6,
        showarrow=False,
        font={"size": 11, "color": "#555"},
    )
