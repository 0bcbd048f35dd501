"""Figures of the lenses on single gradients: the backward lens (layer × token heatmap, rank of
the first MLP matrix's gradient, the shift by cell and by layer; over many prompts the paper's
Fig. 4 and the shift's top-1 shares) and input-embedding gradients (norms, an animated
optimisation, distance travelled vs the typical vocabulary distance).

Decoded tokens are user text: every label goes through ``token_label`` (HTML-escaped, since
plotly reads a subset of HTML in text and hover labels; whitespace made visible)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from gradlens.figures.style import COLORS, finish
from gradlens.models.tokens import show_newlines, show_whitespace

if TYPE_CHECKING:
    import pandas as pd

    from gradlens.lenses.backward import BackwardLens
    from gradlens.lenses.embedding import InputGradients, Optimization

#: Colour scale of the backward-lens heatmap (light = large gradient).
LENS_SCALE = "Viridis"


def token_label(token: str, width: int = 12, spaces: bool = True) -> str:
    """A decoded token made safe and visible for plotly: whitespace shown
    (``gradlens.models.tokens``; with ``spaces=False`` only newlines, for whole prompts), cut to
    ``width`` characters (``…``), HTML-escaped; ``∅`` for an empty string."""
    shown = show_whitespace(token) if spaces else show_newlines(token)
    if len(shown) > width:
        shown = shown[: width - 1] + "…"
    return html.escape(shown, quote=False)


def _token_list(tokens: Sequence[str], width: int = 16) -> str:
    return ", ".join(token_label(t, width) for t in tokens) if tokens else "–"


def position_labels(tokens: Sequence[str], width: int = 12) -> list[str]:
    """Axis labels ``0·The``: the position keeps repeated tokens apart."""
    return [f"{i}·{token_label(t, width)}" for i, t in enumerate(tokens)]


def rank_check(ff1_rank: Sequence[int] | np.ndarray, n: int) -> str:
    """``every layer ≤ n = 7 ✓``, or the layers whose rank exceeds n with ✗."""
    over = [i for i, r in enumerate(ff1_rank) if int(r) > n]
    if not over:
        return f"every layer ≤ n = {n} ✓"
    if len(over) == 1:
        return f"layer {over[0]} exceeds n = {n} ✗"
    return f"layers {', '.join(map(str, over))} exceed n = {n} ✗"


# -- backward lens -------------------------------------------------------------------------------
def backward_lens_heatmap(lens: BackwardLens) -> go.Figure:
    """Layer × position, coloured by log10 ‖δ_t‖ (blank where no gradient reaches a cell),
    each cell labelled with the token −δ_t promotes most; hover: top-k promoted / demoted,
    the imprint of x_t and the target's rank."""
    L, n = lens.vjp_norm.shape
    with np.errstate(divide="ignore"):
        z = np.where(lens.vjp_norm > 0, np.log10(lens.vjp_norm), np.nan)
    target = token_label(lens.target_tokens[0], 16) if lens.target_tokens else "?"
    text, hover = [], []
    for layer in range(L):
        row_text, row_hover = [], []
        for t in range(n):
            top = lens.vjp_top[layer][t]
            row_text.append(token_label(top[0], 10) if top else "")
            rank = int(lens.target_rank[layer, t])
            row_hover.append(
                f"layer {layer}, position {t} ({token_label(lens.tokens[t], 16)})<br>"
                f"‖δ‖ = {lens.vjp_norm[layer, t]:.3g}<br>"
                f"promoted: {_token_list(top)}<br>"
                f"demoted: {_token_list(lens.vjp_bottom[layer][t])}<br>"
                f"imprint (x_t): {_token_list(lens.imprint_top[layer][t])}<br>"
                f"rank of {target}: {rank if rank else '– (no gradient)'}"
            )
        text.append(row_text)
        hover.append(row_hover)
    title = f"Logit lens of −δ: promoted tokens (loss {lens.loss:.3f} on {target})"
    scale = {"colorscale": LENS_SCALE, "colorbar": {"title": {"text": "log₁₀ ‖δ‖"}}}
    return _layer_position_map(z, text, hover, lens.tokens, title, scale)


def _layer_position_map(
    z: np.ndarray,
    text: list[list[str]],
    hover: list[list[str]],
    tokens: Sequence[str],
    title: str,
    scale: dict,
) -> go.Figure:
    """A layer × position heatmap of ``z`` [L, n] (NaN: blank) with ``text`` in each cell,
    ``hover`` labels, the positions' tokens on the x axis; ``scale``: the Heatmap's colour
    arguments."""
    L, n = z.shape
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(n)),
            y=list(range(L)),
            text=text,
            texttemplate="%{text}",
            textfont={"size": 10},
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
            xgap=1,
            ygap=1,
            **scale,
        )
    )
    fig.update_xaxes(
        tickmode="array",
        tickvals=list(range(n)),
        ticktext=position_labels(tokens),
        side="bottom",
        title="prompt position",
    )
    fig.update_yaxes(title="layer", dtick=1 if L <= 16 else 2)
    return finish(fig, title, max(360, 120 + 22 * L))


def ff1_rank_figure(lens: BackwardLens) -> go.Figure:
    """Rank of each layer's first-MLP-matrix gradient beside n (the lemma's bound)."""
    n = lens.n_tokens
    layers = np.arange(len(lens.ff1_rank))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=lens.ff1_rank,
            mode="lines+markers",
            name="rank of ∇W₁",
            line={"color": COLORS["greedy"]},
            hovertemplate="layer %{x}: rank %{y}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=np.full(len(layers), n),
            mode="lines",
            name=f"n = {n} tokens",
            line={"color": COLORS["full"], "dash": "dash"},
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(title="layer", dtick=1 if len(layers) <= 16 else 2)
    fig.update_yaxes(
        title="numeric rank (float32)", range=[0, max(n, int(lens.ff1_rank.max())) + 1]
    )
    return finish(
        fig,
        f"Rank of the first MLP matrix's gradient: = n in {int((lens.ff1_rank == n).sum())} of "
        f"{len(layers)} layers ({rank_check(lens.ff1_rank, n)})",
        340,
    )


def _short_rank(rank: int) -> str:
    """``#7``, ``#12k``: a rank that fits in a heatmap cell."""
    return f"#{rank}" if rank < 1000 else f"#{rank // 1000}k"


def target_cosine_heatmap(lens: BackwardLens) -> go.Figure:
    """Layer × position, coloured by the shift: the cosine of the raw −δ_t with the target's
    output embedding (blank where no gradient reaches a cell), each cell labelled with the
    target's rank by that cosine over the vocabulary; hover: the cosine and both ranks."""
    L, n = lens.target_cosine.shape
    reached = lens.vjp_norm > 0
    z = np.where(reached, lens.target_cosine, np.nan)
    bound = float(np.nanmax(np.abs(z))) if reached.any() else 1.0
    target = token_label(lens.target_tokens[0], 16) if lens.target_tokens else "?"
    text, hover = [], []
    for layer in range(L):
        text.append(
            [
                _short_rank(int(r)) if ok else ""
                for r, ok in zip(lens.target_cosine_rank[layer], reached[layer])
            ]
        )
        hover.append(
            [
                f"layer {layer}, position {t} ({token_label(lens.tokens[t], 16)})<br>"
                f"cos(−δ, {target}) = {lens.target_cosine[layer, t]:.3f}<br>"
                f"rank by cosine: {int(lens.target_cosine_rank[layer, t])}<br>"
                f"rank in the logit lens: {int(lens.target_rank[layer, t])}"
                if reached[layer, t]
                else f"layer {layer}, position {t}: no gradient"
                for t in range(n)
            ]
        )
    title = f"The shift: cos(−δ, embedding of {target}), cell: rank"
    scale = {"colorscale": "RdBu", "zmid": 0.0, "zmin": -bound, "zmax": bound}
    scale["colorbar"] = {"title": {"text": "cosine"}}
    return _layer_position_map(z, text, hover, lens.tokens, title, scale)


def shift_figure(lens: BackwardLens) -> go.Figure:
    """At the prompt's last position, by layer: the shift's cosine (left axis) and the target's
    rank by that cosine and in the logit lens of −δ (right axis, log, 1 on top)."""
    frame = lens.shift_frame()
    t = lens.answer_position
    target = token_label(lens.target_tokens[0], 16) if lens.target_tokens else "?"
    ranks = np.stack([frame["cosine_rank"], frame["logit_lens_rank"]], axis=-1)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=frame["layer"],
            y=frame["target_cosine"],
            mode="lines+markers",
            name=f"cos(−δ, {target})",
            line={"color": COLORS["greedy"]},
            customdata=ranks,
            hovertemplate="layer %{x}: cosine %{y:.3f}<br>rank by cosine %{customdata[0]}"
            "<br>rank in the logit lens %{customdata[1]}<extra></extra>",
        )
    )
    for column, name, color in (
        ("cosine_rank", "rank by cosine", COLORS["original"]),
        ("logit_lens_rank", "rank in the logit lens", COLORS["wrong"]),
    ):
        fig.add_trace(
            go.Scatter(
                x=frame["layer"],
                y=frame[column],
                yaxis="y2",
                mode="lines",
                name=name,
                line={"color": color, "dash": "dot", "width": 1.5},
                hovertemplate=f"layer %{{x}}: {name} %{{y}}<extra></extra>",
            )
        )
    fig.update_layout(
        yaxis={"title": "cosine"},
        yaxis2={
            "title": "rank of the target (log, 1 on top)",
            "overlaying": "y",
            "side": "right",
            "type": "log",
            "autorange": "reversed",
            "showgrid": False,
            "tickvals": [10**e for e in range(len(str(int(ranks.max()))))],
            "tickformat": ",d",
        },
    )
    fig.update_xaxes(title="layer", dtick=1 if len(frame) <= 16 else 2)
    title = f"The shift at the last prompt position ({t}·{token_label(lens.tokens[t], 16)})"
    fig = finish(fig, title, 360)
    fig.update_layout(margin={"r": 70})
    return fig


def fig4_figure(stats: Mapping[str, pd.DataFrame]) -> go.Figure:
    """The Backward Lens paper's Fig. 4: per source (a lens-ranks CSV), the share of prompts
    whose FF1 gradient has rank n, by normalised layer index."""
    fig = go.Figure()
    palette = qualitative.D3
    for i, (label, stat) in enumerate(stats.items()):
        fig.add_trace(
            go.Scatter(
                x=stat["layer_index"],
                y=stat["share_rank_n"],
                mode="lines+markers",
                name=html.escape(label),
                line={"color": palette[i % len(palette)]},
                customdata=np.stack([stat["layer"], stat["prompts"]], axis=-1),
                hovertemplate="layer %{customdata[0]} (index %{x:.2f}): rank = n for %{y:.1%} "
                "of %{customdata[1]} prompts<extra></extra>",
            )
        )
    fig.update_xaxes(title="normalised layer index ℓ / (L − 1)", range=[-0.02, 1.02])
    fig.update_yaxes(title="prompts with rank(∇FF1) = n", tickformat=".0%", range=[0, 1.05])
    return _legend_below(fig, "The paper's Fig. 4: rank(∇FF1) = prompt length n")


def shift_share_figure(stats: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Per source and layer, the share of prompts whose target is the top token at the last
    position by the shift's cosine (solid) and by the logit lens of −δ (dotted)."""
    fig = go.Figure()
    palette = qualitative.D3
    for i, (label, stat) in enumerate(stats.items()):
        for column, reading, dash in (
            ("share_cosine_top", "by cosine", "solid"),
            ("share_lens_top", "in the logit lens", "dot"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=stat["layer_index"],
                    y=stat[column],
                    mode="lines",
                    name=f"{html.escape(label)}: {reading}",
                    line={"color": palette[i % len(palette)], "dash": dash},
                    customdata=np.stack([stat["layer"], stat["median_cosine"]], axis=-1),
                    hovertemplate=f"layer %{{customdata[0]}}: top {reading} for %{{y:.1%}}"
                    "<br>median cosine %{customdata[1]:.3f}<extra></extra>",
                )
            )
    fig.update_xaxes(title="normalised layer index ℓ / (L − 1)", range=[-0.02, 1.02])
    fig.update_yaxes(title="share of prompts, target top-1", tickformat=".0%", range=[0, 1.05])
    return _legend_below(fig, "The target first at the last position")


def _legend_below(fig: go.Figure, title: str) -> go.Figure:
    """``finish`` for a half-width figure: its legend under the plot, not beside the title."""
    fig = finish(fig, title, 420)
    fig.update_layout(
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0.0, "xanchor": "left"},
        margin={"b": 120},
    )
    return fig


# -- input embeddings ----------------------------------------------------------------------------
def grad_norm_bars(grads: InputGradients) -> go.Figure:
    """‖∂L/∂e_t‖ per token; hover: the tokens nearest to −∂L/∂e_t and to the move e_v − e_t."""
    labels = position_labels(grads.tokens)
    hover = [
        f"{labels[t]}<br>‖∂L/∂e‖ = {grads.grad_norm[t]:.4g}<br>"
        f"nearest to −∂L/∂e: {_token_list(grads.nearest[t])}<br>"
        f"best move e_v − e_t: {_token_list(grads.nearest_direction[t])}"
        for t in range(grads.n_tokens)
    ]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=grads.grad_norm,
            marker_color=COLORS["greedy"],
            hovertext=hover,
            hovertemplate="%{hovertext}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="token")
    fig.update_yaxes(title="‖∂L/∂e_t‖")
    if grads.target_kind == "token":
        target = f"target token {token_label(grads.target, 20)}"
    else:
        target = f"target prompt “{token_label(grads.target, 60, spaces=False)}”"
    return finish(fig, f"Input-embedding gradient per token ({target})", 380)


def optimization_animation(opt: Optimization) -> go.Figure:
    """Animated bars (one frame per optimiser step): each token's distance from its start, labelled
    with its nearest vocabulary token; the typical vocabulary distance as a dashed line."""
    labels = position_labels(opt.tokens)
    top = max(float(opt.distance.max()), opt.typical_distance) * 1.2 or 1.0
    colors = [
        "#bbbbbb" if frozen else COLORS["projection"] for frozen in np.asarray(opt.frozen, bool)
    ]

    def bars(s: int) -> go.Bar:
        return go.Bar(
            x=labels,
            y=opt.distance[s],
            text=[token_label(t, 10) for t in opt.nearest[s]],
            textposition="outside",
            marker_color=colors,
            name="distance travelled",
            showlegend=False,
            hovertemplate="%{x}: moved %{y:.3f}<br>nearest now: %{text}<extra></extra>",
        )

    def title(s: int) -> str:
        return f"Optimising the input embeddings: step {s}, loss {opt.loss[s]:.4f}"

    frames = [
        go.Frame(data=[bars(s)], traces=[0], name=str(s), layout={"title": {"text": title(s)}})
        for s in range(opt.steps + 1)
    ]
    last = opt.steps  # shown first (a still of step 0 would be all zeros); Play starts at 0
    line = {"color": COLORS["full"], "dash": "dash"}
    legend_entry = go.Scatter(  # the line itself is a shape (full width); this names it
        x=[None],
        y=[None],
        mode="lines",
        name=f"typical vocabulary distance {opt.typical_distance:.2f}",
        line=line,
    )
    fig = go.Figure(data=[bars(last), legend_entry], frames=frames)
    fig.add_hline(y=opt.typical_distance, line=line)
    fig.update_xaxes(type="category", title="token (label: nearest vocabulary token by cosine)")
    fig.update_yaxes(title="L2 distance from the start", range=[0, top])
    fig.update_layout(updatemenus=[_play_pause()], sliders=[_step_slider(opt.steps, last)])
    fig = finish(fig, title(last), 480)
    fig.update_layout(margin={"b": 150})
    return fig


def _play_pause() -> dict:
    """Play (every frame from step 0, 300 ms each) and Pause buttons under the plot."""
    play = {"frame": {"duration": 300, "redraw": True}, "fromcurrent": False}
    return {
        "type": "buttons",
        "direction": "left",
        "showactive": False,
        "x": 0.0,
        "y": -0.24,
        "xanchor": "left",
        "yanchor": "top",
        "buttons": [
            {"label": "▶ Play", "method": "animate", "args": [None, play]},
            {
                "label": "❚❚ Pause",
                "method": "animate",
                "args": [[None], {"mode": "immediate", "frame": {"duration": 0}}],
            },
        ],
    }


def _step_slider(steps: int, active: int) -> dict:
    """A slider over the frames ``0 … steps``, starting at ``active``."""
    return {
        "active": active,
        "x": 0.2,
        "len": 0.8,
        "y": -0.22,
        "yanchor": "top",
        "currentvalue": {"prefix": "step "},
        "steps": [
            {
                "label": str(s),
                "method": "animate",
                "args": [[str(s)], {"mode": "immediate", "frame": {"duration": 0}}],
            }
            for s in range(steps + 1)
        ],
    }


def distance_lines(opt: Optimization) -> go.Figure:
    """Distance travelled per token vs step, beside the typical vocabulary distance."""
    fig = go.Figure()
    palette = qualitative.Plotly
    labels = position_labels(opt.tokens)
    steps = np.arange(opt.steps + 1)
    for t, label in enumerate(labels):
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=opt.distance[:, t],
                mode="lines",
                name=label,
                line={"color": palette[t % len(palette)]},
                hovertext=[label] * len(steps),
                hovertemplate="%{hovertext}: step %{x}, moved %{y:.3f}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=steps,
            y=np.full(len(steps), opt.typical_distance),
            mode="lines",
            name="typical vocabulary distance",
            line={"color": "#333333", "dash": "dash"},
            hovertemplate="typical distance %{y:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="SGD step" if opt.optimizer == "sgd" else "Adam step")
    fig.update_yaxes(title="L2 distance from the start", rangemode="tozero")
    fig = finish(fig, "Distance travelled vs the typical distance between two vocabulary tokens")
    fig.update_layout(
        legend={"orientation": "v", "y": 1.0, "yanchor": "top", "x": 1.02, "xanchor": "left"}
    )
    return fig


def loss_line(opt: Optimization) -> go.Figure:
    """The loss at each step (step 0: the original text)."""
    fig = go.Figure(
        go.Scatter(
            x=np.arange(opt.steps + 1),
            y=opt.loss,
            mode="lines+markers",
            line={"color": COLORS["greedy"]},
            hovertemplate="step %{x}: loss %{y:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="SGD step" if opt.optimizer == "sgd" else "Adam step")
    kind = "cross-entropy" if opt.target_kind == "token" else "KL(target ‖ model)"
    fig.update_yaxes(title=kind, rangemode="tozero")
    return finish(fig, f"Loss while optimising (lr {opt.lr:g})", 320)
