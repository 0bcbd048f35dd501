"""Backward lens (Katz, Belinkov, Geva, Wolf 2024): the gradient of one prompt → target loss at
each layer's MLP output, projected into the vocabulary with the logit lens, and the rank of each
layer's first-MLP-matrix gradient (≤ the number of tokens, by the paper's lemma).

The model is the one chosen on the Model page (default the bundled SmolLM2); it is shared by
every session, so the computation holds its lock. Decoded tokens are user text: they are shown in
dataframes and plotly figures only."""

from __future__ import annotations

import streamlit as st

from dashboard import widgets
from dashboard.model_widgets import token_table
from dashboard.models import holding, lens_model, run_on_model
from dashboard.state import SESSION
from gradlens.figures import backward_lens_heatmap, ff1_rank_figure, rank_check
from gradlens.lenses.backward import BackwardLens, backward_lens

EXAMPLE_PROMPT = "Lionel Messi plays for"
EXAMPLE_TARGET = " Paris"
INPUTS_KEY = "bl_inputs"


@st.cache_data(show_spinner=False, max_entries=32)
def compute(
    spec: str, prompt: str, target: str, top_k: int, whole_target: bool, _lm
) -> BackwardLens:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    with holding(_lm):
        return backward_lens(
            _lm.model, _lm.tokenizer, prompt, target, top_k=top_k, whole_target=whole_target
        )


st.title("Backward lens")
st.caption(
    "One prompt, one target. For every layer ℓ and prompt position t, δₜ = ∂L/∂(output of the "
    "MLP's last matrix) is read with the logit lens (final norm + unembedding, applied to the "
    "direction −δₜ, i.e. where a gradient step moves the output): each cell names the tokens "
    "the update promotes, colour = log₁₀ ‖δₜ‖. The imprint is the logit lens of xₜ, the input of "
    "the first MLP matrix: its gradient is Σₜ δ′ₜ xₜᵀ, so its rank is at most the number of "
    "tokens n. After Katz, Belinkov, Geva & Wolf (2024), *Backward Lens*."
)
spec = lens_model().spec

with st.form("bl_form"):
    prompt = st.text_input(
        "Prompt (tokenized as is: no chat template)",
        value=EXAMPLE_PROMPT,
        key="bl_prompt",
        persist_state=SESSION,
    )
    target = st.text_input(
        "Target (its first token is scored; mind the leading space)",
        value=EXAMPLE_TARGET,
        key="bl_target",
        persist_state=SESSION,
    )
    left, right = st.columns(2)
    top_k = left.number_input(
        "Tokens per cell (k)", min_value=1, max_value=20, value=5, key="bl_k", persist_state=SESSION
    )
    whole = right.checkbox(
        "Loss on the whole target (teacher-forced, mean over its tokens)",
        key="bl_whole",
        persist_state=SESSION,
    )
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    if not prompt or not target:
        st.warning("Give a prompt and a target.")
        st.stop()
    st.session_state[INPUTS_KEY] = (spec, prompt, target, int(top_k), bool(whole))
lens = run_on_model(
    INPUTS_KEY,
    "Press **Run** to compute the lens of the prefilled example (one forward and one backward "
    "pass).",
    "Computing the backward lens (one forward and one backward pass)…",
    compute,
)

n = lens.n_tokens
cols = st.columns(4)
cols[0].metric("loss", f"{lens.loss:.4f}", help="cross-entropy of the target")
cols[1].metric("tokens n", n, help="positions the loss reaches")
cols[2].metric("layers", lens.n_layers)
cols[3].metric(
    "max rank of ∇W₁",
    int(lens.ff1_rank.max()),
    help=f"{rank_check(lens.ff1_rank, n)} (gradient shape {lens.ff1_shape[0]}×{lens.ff1_shape[1]})",
)

st.plotly_chart(backward_lens_heatmap(lens), width="stretch", key="bl_heatmap")
st.caption(
    "Hover a cell for the top-k promoted and demoted tokens, the imprint of xₜ and the rank of "
    "the target's first token. Blank cells: no gradient reaches them (with the loss at the last "
    "position only, the last layer's MLP output matters at that position alone)."
)
st.plotly_chart(ff1_rank_figure(lens), width="stretch", key="bl_rank")

st.subheader("Per layer and position")
token_table(
    lens.frame(),
    "backward-lens",
    token_lists=("promoted", "demoted", "imprint"),
    height=320,
    column_config={
        "vjp_norm": st.column_config.NumberColumn("‖δ‖", format="%.4g"),
        "target_rank": st.column_config.NumberColumn(
            "target rank", help="rank of the target's first token in the −δ projection (0: none)"
        ),
        "promoted": st.column_config.ListColumn("promoted (−δ)"),
        "demoted": st.column_config.ListColumn("demoted (−δ)"),
        "imprint": st.column_config.ListColumn("imprint (x)"),
    },
)

st.subheader("Rank of the first MLP matrix's gradient")
widgets.table(lens.rank_frame(), "backward-lens-ff1-rank", height=240)
