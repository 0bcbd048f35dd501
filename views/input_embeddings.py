"""Input embeddings: the gradient of a target loss w.r.t. each token's input embedding, read as
vocabulary tokens, and Adam run on the input embeddings toward the target (how far each token
moves, compared with the typical distance between two vocabulary tokens, and which token it is
nearest to on the way).

The model is the one chosen on the Model page (default the bundled SmolLM2), shared by every
session: the computation holds its lock. Decoded tokens are user text: they are shown in
dataframes and plotly figures only."""

from __future__ import annotations

import streamlit as st

from dashboard.model_widgets import token_table
from dashboard.models import holding, lens_model, run_on_model
from dashboard.state import SESSION
from gradlens.figures import distance_lines, grad_norm_bars, loss_line, optimization_animation
from gradlens.lenses.embedding import InputGradients, Optimization, input_gradients, optimize_inputs

EXAMPLE_TEXT = "The animal that says neigh is a"
EXAMPLE_PROMPT = "The animal that says bark is a"
EXAMPLE_TOKEN = " dog"
KINDS = {
    "prompt": "a target prompt (KL to its next-token distribution)",
    "token": "a target token (cross-entropy)",
}
INPUTS_KEY = "ie_inputs"


@st.cache_data(show_spinner=False, max_entries=32)
def compute(
    spec: str, text: str, kind: str, target: str, top_k: int, steps: int, lr: float, _lm
) -> tuple[InputGradients, Optimization]:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    goal = {"target_token": target} if kind == "token" else {"target_prompt": target}
    with holding(_lm):
        grads = input_gradients(_lm.model, _lm.tokenizer, text, top_k=top_k, **goal)
        opt = optimize_inputs(
            _lm.model, _lm.tokenizer, text, target, steps=steps, lr=lr, target_kind=kind
        )
    return grads, opt


st.title("Input-embedding gradients")
st.caption(
    "∂L/∂eₜ for each token's input embedding eₜ (before positions are added). *nearest*: the "
    "vocabulary tokens whose embedding points most like −∂L/∂eₜ (cosine); *best move*: the "
    "tokens v whose displacement e_v − eₜ points most like −∂L/∂eₜ (which substitution the "
    "gradient asks for). Then Adam moves the input embeddings toward the target (special tokens "
    "frozen); distances are read against the median distance between two vocabulary embeddings."
)
spec = lens_model().spec

with st.form("ie_form"):
    text = st.text_input("Text", value=EXAMPLE_TEXT, key="ie_text", persist_state=SESSION)
    kind = st.radio(
        "Target",
        list(KINDS),
        format_func=KINDS.get,
        horizontal=True,
        key="ie_kind",
        persist_state=SESSION,
    )
    left, right = st.columns(2)
    target_prompt = left.text_input(
        "Target prompt", value=EXAMPLE_PROMPT, key="ie_target_prompt", persist_state=SESSION
    )
    target_token = right.text_input(
        "Target token (its first token; mind the leading space)",
        value=EXAMPLE_TOKEN,
        key="ie_target_token",
        persist_state=SESSION,
    )
    c1, c2, c3 = st.columns(3)
    top_k = c1.number_input(
        "Nearest tokens (k)", min_value=1, max_value=20, value=5, key="ie_k", persist_state=SESSION
    )
    steps = c2.number_input(
        "Adam steps", min_value=1, max_value=200, value=20, key="ie_steps", persist_state=SESSION
    )
    lr = c3.number_input(  # from 0.0001 to 10, 0.05 at first, in steps of 0.01
        "Learning rate", 0.0001, 10.0, 0.05, 0.01, "%.4f", key="ie_lr", persist_state=SESSION
    )
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    target = target_token if kind == "token" else target_prompt
    if not text or not target:
        st.warning("Give a text and a target.")
        st.stop()
    st.session_state[INPUTS_KEY] = (spec, text, kind, target, int(top_k), int(steps), float(lr))
grads, opt = run_on_model(
    INPUTS_KEY,
    "Press **Run** to compute the prefilled example (one gradient, then the Adam steps).",
    "Computing the gradient and the Adam steps on the embeddings…",
    compute,
)

moved = opt.distance[-1]
cols = st.columns(4)
cols[0].metric("loss", f"{grads.loss:.4f}", help="at the original text")
cols[1].metric(
    f"loss after {opt.steps} steps",
    f"{opt.loss[-1]:.4f}",
    delta=f"{opt.loss[-1] - opt.loss[0]:+.4f}",
    delta_color="inverse",
)
cols[2].metric(
    "typical vocabulary distance",
    f"{opt.typical_distance:.3f}",
    help="median L2 distance between random pairs of vocabulary embeddings",
)
cols[3].metric(
    "largest distance travelled",
    f"{moved.max():.3f}",
    help=f"{moved.max() / opt.typical_distance:.2f}× the typical distance",
)

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

st.subheader("Optimising the input embeddings")
st.caption(
    "Press ▶ Play (or drag the slider): bars are each token's distance from its start, labels "
    "its nearest vocabulary token (cosine) at that step. Grey bars: special tokens (frozen)."
)
st.plotly_chart(optimization_animation(opt), width="stretch", key="ie_anim")
st.plotly_chart(distance_lines(opt), width="stretch", key="ie_dist")
st.plotly_chart(loss_line(opt), width="stretch", key="ie_loss")
token_table(opt.frame(), "input-optimisation", tokens=("token", "nearest"), note=False, height=280)
