"""Figures of the input-embedding experiment on random sentences
(``gradlens.lenses.embedding_batch``): the KL curves, distance travelled against the distances
between vocabulary tokens, the displacement per dimension, and where the tokens went (heading
cosine, cos(g, e)).

Decoded tokens are user text: labels go through ``gradlens.figures.lenses.token_label``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gradlens.figures.style import COLORS, finish

if TYPE_CHECKING:
    from gradlens.lenses.embedding import Moves
    from gradlens.lenses.embedding_batch import BatchOptimization

#: Bins of the histograms.
BINS = 60
_STEP = {"adam": "Adam step", "sgd": "SGD step"}


def kl_curves(batch: BatchOptimization) -> go.Figure:
    """Each sentence's KL per step (thin lines) and their mean (thick)."""
    steps = np.arange(batch.steps + 1)
    fig = go.Figure()
    for b in range(batch.batch):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=batch.kl[:, b],
                mode="lines",
                line={"color": "rgba(31,119,180,0.28)", "width": 1},
                name="one sentence",
                legendgroup="each",
                showlegend=b == 0,
                hovertemplate=f"sentence {b} ({int(batch.lengths[b])} tokens)<br>"
                "step %{x}: KL %{y:.4f}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=batch.mean_kl,
            mode="lines",
            line={"color": COLORS["full"], "width": 3},
            name=f"mean of {batch.batch}",
            hovertemplate="step %{x}: mean KL %{y:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title=_STEP.get(batch.optimizer, "step"))
    fig.update_yaxes(title="KL(target ‖ sentence)", rangemode="tozero")
    title = (
        f"KL to the target's next-token distribution: {batch.mean_kl[0]:.3f} → "
        f"{batch.mean_kl[-1]:.3f} (mean of {batch.batch} sentences)"
    )
    return finish(fig, title, 400)


def _median_line(fig: go.Figure, x: float, color: str, text: str, y: float) -> None:
    fig.add_vline(x=x, line={"color": color, "dash": "dash"})
    fig.add_annotation(
        x=x, y=y, yref="paper", text=text, showarrow=False, xanchor="left", font={"color": color}
    )


def distance_histograms(batch: BatchOptimization) -> go.Figure:
    """Distance travelled per token beside the distances between random pairs of vocabulary
    embeddings (both as shares of their counts), with both medians; Adam's first-step distance
    lr·√d marked."""
    moved = batch.moves.distance
    fig = go.Figure()
    top = float(max(moved.max(), batch.pair_distance.max()))
    bins = {"start": 0.0, "end": top * 1.001, "size": top / BINS or 1.0}
    for values, name, color in (
        (batch.pair_distance, "between two random vocabulary tokens", COLORS["bm25"]),
        (moved, "travelled by a sentence token", COLORS["greedy"]),
    ):
        fig.add_trace(
            go.Histogram(
                x=values,
                xbins=bins,
                histnorm="probability",
                name=f"{name} ({len(values)}; median {np.median(values):.2f})",
                marker_color=color,
                opacity=0.6,
                hovertemplate="%{x}: %{y:.1%}<extra></extra>",
            )
        )
    _median_line(fig, batch.typical_distance, COLORS["bm25"], "median", 1.04)
    _median_line(fig, float(np.median(moved)), COLORS["greedy"], "median", 1.04)
    if batch.optimizer == "adam":
        _median_line(fig, batch.first_step_expected, COLORS["current"], "lr·√d", 0.93)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="L2 distance")
    fig.update_yaxes(title="share", tickformat=".0%")
    fig = finish(fig, "Distance travelled by each token vs between two vocabulary tokens", 420)
    fig.update_layout(
        margin={"t": 110},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0.0, "xanchor": "left"},
    )
    return fig


def displacement_histogram(batch: BatchOptimization) -> go.Figure:
    """Every coordinate of e_end − e_start (N tokens × d dimensions)."""
    values = np.asarray(batch.displacement, dtype=np.float64).ravel()
    fig = go.Figure(
        go.Histogram(
            x=values,
            nbinsx=2 * BINS,
            marker_color=COLORS["projection"],
            hovertemplate="%{x}: %{y} coordinates<extra></extra>",
            name="coordinates",
        )
    )
    n, d = batch.displacement.shape
    fig.update_xaxes(title=f"e_end − e_start, one coordinate ({n} tokens × {d} dimensions)")
    fig.update_yaxes(title="coordinates")
    return finish(fig, "Displacement per dimension", 360)


def move_cosines(moves: Moves) -> go.Figure:
    """Two histograms: the heading's cosine cos(e_end − e_start, e_v − e_start) of the token v
    each displacement points at most, and cos(g, e_start) of the first gradient."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("heading cosine", "cos(g, e_start), first gradient"),
    )
    for col, values, color, axis in (
        (1, moves.heading_cosine, COLORS["original"], "max_v cos(e_end − e_start, e_v − e_start)"),
        (2, moves.grad_cosine, COLORS["greedy"], "cos(g, e_start)"),
    ):
        finite = values[np.isfinite(values)]
        fig.add_trace(
            go.Histogram(
                x=finite,
                nbinsx=BINS // 2,
                marker_color=color,
                showlegend=False,
                hovertemplate="%{x}: %{y} tokens<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title=axis, row=1, col=col)
    fig.update_yaxes(title="tokens", row=1, col=1)
    return finish(fig, "Where the tokens went", 340)
