"""Widgets of the Input embeddings page: the two experiments' forms (random sentences, one text)
and their results. Decoded tokens are user text: they are shown in dataframes and plotly
figures only."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import widgets
from dashboard.model_widgets import token_table
from dashboard.state import kept
from gradlens.figures import (
    displacement_histogram,
    distance_histograms,
    distance_lines,
    grad_norm_bars,
    kl_curves,
    loss_line,
    move_cosines,
    optimization_animation,
)
from gradlens.lenses.embedding import OPTIMIZERS, InputGradients, Optimization
from gradlens.lenses.embedding_batch import BatchOptimization

EXAMPLE_TEXT = "The animal that says neigh is a"
EXAMPLE_PROMPT = "The animal that says bark is a"
EXAMPLE_TOKEN = " dog"
KINDS = {
    "prompt": "a target prompt (KL to its next-token distribution)",
    "token": "a target token (cross-entropy)",
}
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "plain SGD"}
TOKEN_LABEL = "Target token (its first token; mind the leading space)"
#: What sets the distance a token travels, per optimiser (shown beside the results).
DISTANCE_NOTE = {
    "adam": "Adam's first step is lr·g/(|g| + ε) per coordinate, so it moves every free token "
    "by lr·√d ({first:.3f} here) whatever its gradient, and each later step by about lr per "
    "coordinate: the distance travelled is set by lr × steps, not by the loss landscape.",
    "sgd": "Plain SGD moves a token by lr·‖g‖: the distance follows each token's gradient (a "
    "token the loss barely depends on hardly moves).",
}
MOVE_COLUMNS = {
    "distance": st.column_config.NumberColumn("moved", format="%.3f"),
    "first_step": st.column_config.NumberColumn("first step", format="%.4f"),
    "start_cosine": st.column_config.TextColumn("start: nearest (cos)"),
    "end_cosine": st.column_config.TextColumn("end: nearest (cos)"),
    "start_euclid": st.column_config.TextColumn("start: nearest (L2)"),
    "end_euclid": st.column_config.TextColumn("end: nearest (L2)"),
    "heading": st.column_config.TextColumn(
        "heading", help="argmax_v cos(e_end − e_start, e_v − e_start)"
    ),
    "heading_cosine": st.column_config.NumberColumn("heading cos", format="%+.3f"),
    "grad_cosine": st.column_config.NumberColumn("cos(g, e)", format="%+.3f"),
}
MOVE_TOKENS = ("start_cosine", "end_cosine", "start_euclid", "end_euclid", "heading")


def _steps_and_optimizer(steps_col, prefix: str, steps: tuple[int, int], lr: float):
    """The shared end of both forms: the number of steps (``steps``: max and default) in
    ``steps_col``, the optimiser and its learning rate, and Run: (steps, optimiser, lr, pressed)."""
    n = kept(
        steps_col.number_input,
        "Steps",
        f"{prefix}_steps",
        min_value=1,
        max_value=steps[0],
        value=steps[1],
    )
    left, right = st.columns(2)
    optimizer = kept(
        left.radio,
        "Optimiser",
        f"{prefix}_optimizer",
        options=OPTIMIZERS,
        format_func=OPTIMIZER_NAMES.get,
        horizontal=True,
    )
    rate = kept(
        right.number_input,
        "Learning rate",
        f"{prefix}_lr",
        min_value=0.0001,
        max_value=10.0,
        value=lr,
        step=0.01,
        format="%.4f",
    )
    pressed = st.form_submit_button("Run", type="primary")
    return int(n), str(optimizer), float(rate), pressed


def batch_form() -> tuple | None:
    """The random-sentence experiment's settings and Run: (target prompt, sentences, steps,
    optimiser, lr, seed) when Run is pressed, else None."""
    with st.form("ieb_form"):
        target = kept(st.text_input, "Target prompt", "ieb_target", value=EXAMPLE_PROMPT)
        c1, c2, c3 = st.columns(3)
        batch = kept(
            c1.number_input,
            "Sentences",
            "ieb_batch",
            min_value=1,
            max_value=64,
            value=16,
            help="random sentences of 6–12 tokens each",
        )
        seed = kept(c3.number_input, "Seed", "ieb_seed", min_value=0, max_value=10_000, value=0)
        steps, optimizer, lr, pressed = _steps_and_optimizer(c2, "ieb", (500, 100), 0.01)
    if not pressed:
        return None
    return target, int(batch), steps, optimizer, lr, int(seed)


def _metrics(loss: str, curve: np.ndarray, moved: tuple[str, float], typical: float) -> None:
    """Four metrics: ``loss`` at the start and after the steps (``curve``), the distance
    ``moved`` (label, value) and the median distance between two vocabulary tokens."""
    cols = st.columns(4)
    cols[0].metric(f"{loss} at the start", f"{curve[0]:.4f}")
    cols[1].metric(
        f"{loss} after {len(curve) - 1} steps",
        f"{curve[-1]:.4f}",
        delta=f"{curve[-1] - curve[0]:+.4f}",
        delta_color="inverse",
    )
    label, value = moved
    cols[2].metric(label, f"{value:.3f}", help=f"{value / typical:.2f}× the vocabulary distance")
    cols[3].metric(
        "vocabulary distance",
        f"{typical:.3f}",
        help="median L2 distance between two vocabulary embeddings (4096 random pairs)",
    )


def batch_results(batch: BatchOptimization) -> None:
    """The metrics, what sets the distance, the four figures and the per-token table."""
    moved = ("median distance travelled", float(np.median(batch.moves.distance)))
    _metrics("mean KL", batch.mean_kl, moved, batch.typical_distance)
    note = DISTANCE_NOTE[batch.optimizer].format(first=batch.first_step_expected)
    st.info(f"{note} Measured first step: median {np.median(batch.moves.first_step):.4f}.")
    st.plotly_chart(kl_curves(batch), width="stretch", key="ieb_kl")
    st.plotly_chart(distance_histograms(batch), width="stretch", key="ieb_dist")
    widgets.chart_row(
        {"ieb_disp": displacement_histogram(batch), "ieb_cos": move_cosines(batch.moves)}, (2, 3)
    )
    st.caption(
        "Back-projection: each token's nearest vocabulary token by cosine and by L2 distance, "
        "at the start (a random draw) and at the end; heading: the vocabulary token its "
        "displacement points at most, e_v − e_start, with that cosine; cos(g, e): the first "
        "gradient against the token's own embedding."
    )
    token_table(
        batch.frame(), "input-embeddings-batch", tokens=MOVE_TOKENS, column_config=MOVE_COLUMNS
    )


def text_form() -> tuple | None:
    """The one-text experiment's settings and Run: (text, kind, target, k, steps, optimiser, lr)
    when Run is pressed, else None."""
    with st.form("ie_form"):
        text = kept(st.text_input, "Text", "ie_text", value=EXAMPLE_TEXT)
        kind = kept(
            st.radio,
            "Target",
            "ie_kind",
            options=list(KINDS),
            format_func=KINDS.get,
            horizontal=True,
        )
        left, right = st.columns(2)
        prompt = kept(left.text_input, "Target prompt", "ie_target_prompt", value=EXAMPLE_PROMPT)
        token = kept(right.text_input, TOKEN_LABEL, "ie_target_token", value=EXAMPLE_TOKEN)
        c1, c2 = st.columns(2)
        top_k = kept(
            c1.number_input, "Nearest tokens (k)", "ie_k", min_value=1, max_value=20, value=5
        )
        steps, optimizer, lr, pressed = _steps_and_optimizer(c2, "ie", (200, 20), 0.05)
    if not pressed:
        return None
    target = token if kind == "token" else prompt
    return text, str(kind), target, int(top_k), steps, optimizer, lr


def text_results(grads: InputGradients, opt: Optimization) -> None:
    """The gradient per token, then the optimisation: metrics, animation, curves, tables."""
    moved = ("largest distance travelled", float(opt.distance[-1].max()))
    _metrics("loss", opt.loss, moved, opt.typical_distance)
    st.plotly_chart(grad_norm_bars(grads), width="stretch", key="ie_norms")
    token_table(
        grads.frame(),
        "input-gradients",
        token_lists=("nearest", "nearest_direction"),
        column_config={
            "grad_norm": st.column_config.NumberColumn("‖∂L/∂e‖", format="%.4g"),
            "nearest": st.column_config.ListColumn("nearest to −∂L/∂e"),
            "nearest_direction": st.column_config.ListColumn("best move e_v − eₜ"),
        },
    )
    st.subheader(f"Optimising the input embeddings ({OPTIMIZER_NAMES[opt.optimizer]})")
    st.info(DISTANCE_NOTE[opt.optimizer].format(first=opt.lr * np.sqrt(opt.dim)))
    st.caption(
        "Press ▶ Play (or drag the slider): bars are each token's distance from its start, "
        "labels its nearest vocabulary token (cosine) at that step. Grey bars: special tokens "
        "(frozen)."
    )
    st.plotly_chart(optimization_animation(opt), width="stretch", key="ie_anim")
    st.plotly_chart(distance_lines(opt), width="stretch", key="ie_dist")
    st.plotly_chart(loss_line(opt), width="stretch", key="ie_loss")
    st.caption(
        "Where each token went: its nearest vocabulary token by cosine and by L2 distance at "
        "the start and at the end, the heading (the token v its displacement points at most, "
        "e_v − e_start, with that cosine), and cos(g, e) of the first gradient. Then every step."
    )
    frame = opt.moves.frame()
    frame.insert(0, "token", list(opt.tokens))
    token_table(
        frame,
        "input-moves",
        tokens=("token", *MOVE_TOKENS),
        note=False,
        column_config=MOVE_COLUMNS,
    )
    token_table(
        opt.frame(), "input-optimisation", tokens=("token", "nearest"), note=False, height=280
    )
