"""The Backward lens page's widgets: the shift beside the logit lens, the per-cell table (with
δ's least probable tokens where they differ from −δ's top), the lens over many prompts (CSVs of
``gradlens lens-ranks``: the shipped demo result and any other), and the one-step edit."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import widgets
from dashboard.model_widgets import token_table
from dashboard.models import current_model, loaded_model, locked
from dashboard.state import SESSION
from gradlens.errors import GradLensError
from gradlens.figures import (
    backward_lens_heatmap,
    fig4_figure,
    shift_figure,
    shift_share_figure,
    target_cosine_heatmap,
)
from gradlens.figures.textdiff import escape_markdown
from gradlens.lenses.backward import BackwardLens
from gradlens.lenses.edit import MATRICES, OneStepEdit, one_step_edit
from gradlens.lenses.ranks import fig4_statistic, lens_ranks_summary, read_lens_ranks

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
#: The shipped result: ``gradlens lens-ranks`` on the demo's prompts (SmolLM2).
DEMO_RANKS = DEMO / "lens_ranks.csv"
DEMO_PROMPTS = DEMO / "lens_prompts.jsonl"
EDIT_KEY = "bl_edit"
COMMAND = "gradlens lens-ranks --model smollm2 --prompts {prompts} --out ranks.csv"


# -- one prompt --------------------------------------------------------------------------------
def shift_views(lens: BackwardLens) -> None:
    """The logit lens of −δ beside the shift's cosine, then the shift by layer at the last
    prompt position, with the sentence that reads it."""
    widgets.chart_row(
        {"bl_heatmap": backward_lens_heatmap(lens), "bl_cosine": target_cosine_heatmap(lens)}
    )
    st.caption(
        "Left: the tokens the logit lens of −δₜ promotes (colour log₁₀ ‖δₜ‖). Right: the "
        "paper's *shift*, the cosine of the raw −δₜ (no norm, no scaling) with the target's "
        "row of the output embedding, each cell with the target's rank by that cosine over the "
        "whole vocabulary. Blank cells: no gradient reaches them (with the loss at the last "
        "position only, the last layer's MLP output matters at that position alone)."
    )
    st.plotly_chart(shift_figure(lens), width="stretch", key="bl_shift")
    st.markdown(escape_markdown(lens.shift_summary()))


def lens_table(lens: BackwardLens) -> None:
    """One row per (layer, position); the least probable tokens of δ only when some differ."""
    frame = lens.frame()
    differs = int(lens.bottom_differs.sum())
    if differs:
        st.caption(
            f"The least probable tokens of δ (the paper's reading) differ from the top of −δ "
            f"in {differs} of {lens.bottom_differs.size} cells: a bias in the final norm is added "
            "to both directions (column *least probable (δ)*, empty where they agree)."
        )
    else:
        frame = frame.drop(columns="least_probable")
        st.caption(
            "The least probable tokens of δ are the tokens −δ promotes in every cell (the final "
            "norm has no bias, so the lens is odd); with a LayerNorm bias (GPT-2) they can differ "
            "and the table shows them."
        )
    lists = ("promoted", "demoted", "imprint") + (("least_probable",) if differs else ())
    token_table(
        frame,
        "backward-lens",
        token_lists=lists,
        height=320,
        column_config={
            "vjp_norm": st.column_config.NumberColumn("‖δ‖", format="%.4g"),
            "target_rank": st.column_config.NumberColumn(
                "logit-lens rank", help="the target's rank in the −δ projection (0: none)"
            ),
            "target_cosine": st.column_config.NumberColumn("cos(−δ, target)", format="%.3f"),
            "cosine_rank": st.column_config.NumberColumn(
                "cosine rank", help="the target's rank by cosine over the vocabulary (0: none)"
            ),
            "promoted": st.column_config.ListColumn("promoted (−δ)"),
            "demoted": st.column_config.ListColumn("demoted (−δ)"),
            "least_probable": st.column_config.ListColumn("least probable (δ)"),
            "imprint": st.column_config.ListColumn("imprint (x)"),
        },
    )


# -- many prompts -------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=8)
def _read_csv(data: bytes, name: str) -> pd.DataFrame:
    return read_lens_ranks(io.BytesIO(data), name)


def _sources() -> dict[str, pd.DataFrame]:
    """The shipped demo result, and a CSV named by server path or uploaded."""
    frames = {}
    if DEMO_RANKS.is_file():
        frames["demo prompts (SmolLM2, shipped)"] = _read_csv(DEMO_RANKS.read_bytes(), "demo")
    path = st.text_input(
        "A CSV that `gradlens lens-ranks --out` wrote (server path)",
        key="bl_ranks_path",
        persist_state=SESSION,
    )
    upload = st.file_uploader("… or upload one", type=["csv"], key="bl_ranks_upload")
    try:
        if path.strip():
            p = Path(path.strip()).expanduser()
            if not p.is_file():
                raise GradLensError(f"no file at {p}")
            frames[p.name] = _read_csv(p.read_bytes(), p.name)
        if upload is not None:
            frames[upload.name] = _read_csv(upload.getvalue(), upload.name)
    except GradLensError as exc:
        st.error(str(exc))
    return frames


def many_prompts() -> None:
    """The paper's Fig. 4 and the shift's top-1 shares for every CSV given, with its summary
    and per-layer table."""
    st.caption(
        "The paper's Fig. 4: for many prompts, how often the FF1 gradient's rank *equals* the "
        "prompt length n (the lemma only bounds it by n), by normalised layer index; and how "
        "often the target is the top token at the last position by the shift's cosine and by "
        "the logit lens. Computing it holds a model for minutes, so it is a command, not a "
        "click; the page reads what it writes. The shipped result is SmolLM2 on the demo's "
        f"{DEMO_PROMPTS.name} (each training prompt as raw text, no chat template; the target is "
        "the first word of its response with a leading space):"
    )
    st.code(COMMAND.format(prompts=f"data/demo/{DEMO_PROMPTS.name}"), language="bash")
    frames = _sources()
    if not frames:
        st.info(f"No result to show: {DEMO_RANKS} is missing; name or upload a CSV.")
        return
    stats = {label: fig4_statistic(frame) for label, frame in frames.items()}
    widgets.chart_row({"bl_fig4": fig4_figure(stats), "bl_fig4_shift": shift_share_figure(stats)})
    for label, frame in frames.items():
        st.markdown(f"**{escape_markdown(label)}**: {escape_markdown(lens_ranks_summary(frame))}.")
    label = st.selectbox("Per-layer table of", list(stats), key="bl_ranks_table")
    widgets.table(stats[label], "lens-ranks-by-layer", height=240)


# -- the edit -------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=16)
def _edit(
    spec: str, prompt: str, target: str, layer: int, matrix: str, lr: float, k: int, _lm
) -> OneStepEdit:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    return locked(_lm, one_step_edit, prompt, target, layer, matrix, lr, k)


def edit_form(lens: BackwardLens, spec: str) -> None:
    """One gradient step on a chosen layer's FF1 or FF2 towards the lens's target (first token),
    and the next-token distribution before and after."""
    with st.form("bl_edit_form"):
        cols = st.columns(4)
        layer = cols[0].number_input(
            "Layer", 0, lens.n_layers - 1, lens.n_layers - 1, key="bl_edit_layer"
        )
        matrix = cols[1].radio(
            "Matrix", MATRICES, index=1, horizontal=True, key="bl_edit_matrix",
            help="FF1: the MLP's first matrix (up / c_fc); FF2: its last (down / c_proj)",
        )  # fmt: skip
        lr = cols[2].number_input(
            "Learning rate", 1e-6, 1e3, 0.1, format="%g", key="bl_edit_lr",
            help="one plain gradient-descent step, W ← W − lr·∇W",
        )  # fmt: skip
        k = cols[3].number_input("Top predictions", 1, 20, 5, key="bl_edit_k")
        if st.form_submit_button("Step"):
            inputs = (spec, lens.prompt, lens.target, int(layer), matrix, float(lr), int(k))
            st.session_state[EDIT_KEY] = inputs
    inputs = st.session_state.get(EDIT_KEY)
    if inputs is None or inputs[:3] != (spec, lens.prompt, lens.target):
        st.info("Press **Step** to take one gradient step on the chosen matrix.")
        return
    try:
        with st.spinner("One forward, one backward and one forward pass…"):
            edit = _edit(*inputs, _lm=loaded_model(current_model()))
    except GradLensError as exc:
        st.error(str(exc))
        return
    _edit_result(edit)


def _edit_result(edit: OneStepEdit) -> None:
    before, after = edit.before, edit.after
    cols = st.columns(4)
    cols[0].metric(
        f"p({edit.target_token!r})",
        f"{after.target_prob:.4f}",
        f"{after.target_prob - before.target_prob:+.4f}",
        help=f"before the step: {before.target_prob:.4f}",
    )
    cols[1].metric(
        "rank of the target", after.target_rank, before.target_rank - after.target_rank,
        help=f"before the step: {before.target_rank}",
    )  # fmt: skip
    cols[2].metric("loss", f"{after.loss:.4f}", f"{after.loss - before.loss:+.4f}", "inverse")
    cols[3].metric(
        "‖lr·∇W‖ / ‖W‖", f"{edit.step_norm / edit.weight_norm:.2e}",
        help=f"{edit.matrix} of layer {edit.layer}, shape {edit.weight_shape}",
    )  # fmt: skip
    token_table(edit.frame(), "backward-lens-edit", tokens=("before", "after"), note=False)
    st.caption(
        "The model is put back afterwards: the weight's bytes, every requires_grad flag and "
        "the training mode are as they were."
    )
