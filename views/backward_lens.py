"""Backward lens (Katz, Belinkov, Geva, Wolf 2024): the gradient of one prompt → target loss at
each layer's MLP output, read with the logit lens and as the paper's shift (its cosine with the
target's output embedding); the rank of each layer's FF1 gradient (≤ the number of tokens, by
the paper's lemma); one gradient step on one MLP matrix; over many prompts, the paper's Fig. 4.

The model is the one chosen on the Model page (default the bundled SmolLM2); it is shared by
every session, so the computation holds its lock. Decoded tokens are user text: they are shown in
dataframes and plotly figures only."""

from __future__ import annotations

import streamlit as st

from dashboard import backward_widgets, widgets
from dashboard.models import lens_model, locked, run_on_model
from dashboard.state import kept
from gradlens.figures import ff1_rank_figure, rank_check
from gradlens.lenses.backward import BackwardLens, backward_lens

EXAMPLE_PROMPT = "Lionel Messi plays for"
EXAMPLE_TARGET = " Paris"
INPUTS_KEY = "bl_inputs"
LABELS = {
    "prompt": "Prompt (tokenized as is: no chat template)",
    "target": "Target (its first token is scored; mind the leading space)",
    "k": "Tokens per cell (k)",
    "whole": "Loss on the whole target (teacher-forced, mean over its tokens)",
}


@st.cache_data(show_spinner=False, max_entries=32)
def compute(
    spec: str, prompt: str, target: str, top_k: int, whole_target: bool, _lm
) -> BackwardLens:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    return locked(_lm, backward_lens, prompt, target, top_k=top_k, whole_target=whole_target)


st.title("Backward lens")
st.caption(
    "One prompt, one target. For every layer ℓ and prompt position t, δₜ = ∂L/∂(output of the "
    "MLP's last matrix FF2); a gradient step moves that output along −δₜ. Two readings: the "
    "logit lens of −δₜ (final norm + unembedding: the tokens the update promotes) and the "
    "paper's *shift*, the cosine of −δₜ with the target's output embedding (the step writes "
    "the target into the residual stream). The imprint is the logit lens of xₜ, the input of "
    "the first MLP matrix FF1: FF1's gradient is Σₜ δ′ₜ xₜᵀ, so its rank is at most the number "
    "of tokens n. After Katz, Belinkov, Geva & Wolf (2024), *Backward Lens*."
)
spec = lens_model().label
one, many = st.tabs(["One prompt", "Over many prompts (the paper's Fig. 4)"])
with many:  # drawn first: the other tab stops the script until Run
    backward_widgets.many_prompts()

with one:
    with st.form("bl_form"):
        prompt = kept(st.text_input, LABELS["prompt"], "bl_prompt", value=EXAMPLE_PROMPT)
        target = kept(st.text_input, LABELS["target"], "bl_target", value=EXAMPLE_TARGET)
        left, right = st.columns(2)
        top_k = kept(left.number_input, LABELS["k"], "bl_k", min_value=1, max_value=20, value=5)
        whole = kept(right.checkbox, LABELS["whole"], "bl_whole")
        submitted = st.form_submit_button("Run", type="primary")

    if submitted:
        if not prompt or not target:
            st.warning("Give a prompt and a target.")
            st.stop()
        st.session_state[INPUTS_KEY] = (spec, prompt, target, int(top_k), bool(whole))
    lens = run_on_model(
        INPUTS_KEY,
        "Press **Run** to compute the lens of the prefilled example (one forward and one "
        "backward pass).",
        "Computing the backward lens (one forward and one backward pass)…",
        compute,
    )

    n = lens.n_tokens
    t = lens.answer_position
    cols = st.columns(5)
    cols[0].metric("loss", f"{lens.loss:.4f}", help="cross-entropy of the target")
    cols[1].metric("tokens n", n, help="positions the loss reaches")
    cols[2].metric("layers", lens.n_layers)
    cols[3].metric(
        "layers with rank(∇FF1) = n",
        f"{int((lens.ff1_rank == n).sum())} of {lens.n_layers}",
        help=f"{rank_check(lens.ff1_rank, n)} (gradient shape "
        f"{lens.ff1_shape[0]}×{lens.ff1_shape[1]})",
    )
    cols[4].metric(
        "strongest shift",
        f"{lens.target_cosine[:, t].max():.3f}",
        help="the largest cosine of −δ with the target's output embedding at the last prompt "
        "position, over the layers",
    )
    backward_widgets.shift_views(lens)

    st.subheader("Per layer and position")
    backward_widgets.lens_table(lens)

    st.subheader("Rank of the first MLP matrix's gradient")
    st.plotly_chart(ff1_rank_figure(lens), width="stretch", key="bl_rank")
    widgets.table(lens.rank_frame(), "backward-lens-ff1-rank", height=240)

    st.subheader("One gradient step (the edit)")
    st.caption(
        "The paper's editing setting: one step of gradient descent on one layer's FF1 or FF2 "
        "towards the target's first token, and what the model predicts after the prompt before "
        "and after it."
    )
    backward_widgets.edit_form(lens, spec)
