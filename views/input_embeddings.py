"""Input embeddings: two experiments on the embeddings a model reads.

- Random sentences (the blog's experiment): a batch of sentences whose token embeddings are drawn
  from a Gaussian fitted to the vocabulary embeddings is optimised (Adam or SGD) toward a target
  prompt's next-token distribution; the KL curves, how far the tokens travel against the
  distance between two vocabulary tokens, the displacement per dimension, and where each token
  went.
- One text: the gradient of a target loss w.r.t. each token's input embedding, read as
  vocabulary tokens, and the optimisation of the text's embeddings toward the target.

The model is the one chosen on the Model page (default the bundled SmolLM2), shared by every
session: the computation holds its lock. Decoded tokens are user text: they are shown in
dataframes and plotly figures only."""

from __future__ import annotations

import streamlit as st

from dashboard import embedding_widgets as ew
from dashboard.models import holding, lens_model, locked, run_on_model
from dashboard.state import kept
from gradlens.lenses.embedding import InputGradients, Optimization, input_gradients, optimize_inputs
from gradlens.lenses.embedding_batch import BatchOptimization, optimize_batch

EXPERIMENTS = {
    "batch": "Random sentences (the blog's experiment)",
    "text": "One text",
}
BATCH_KEY, TEXT_KEY = "ieb_inputs", "ie_inputs"


@st.cache_data(show_spinner=False, max_entries=16)
def compute_batch(
    spec: str, target: str, batch: int, steps: int, optimizer: str, lr: float, seed: int, _lm
) -> BatchOptimization:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    return locked(_lm, optimize_batch, target, batch, steps, lr, optimizer, seed)


@st.cache_data(show_spinner=False, max_entries=32)
def compute_text(
    spec: str,
    text: str,
    kind: str,
    target: str,
    top_k: int,
    steps: int,
    optimizer: str,
    lr: float,
    _lm,
) -> tuple[InputGradients, Optimization]:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    goal = {"target_token": target} if kind == "token" else {"target_prompt": target}
    with holding(_lm):
        grads = input_gradients(_lm.model, _lm.tokenizer, text, top_k=top_k, **goal)
        opt = optimize_inputs(
            _lm.model,
            _lm.tokenizer,
            text,
            target,
            steps,
            lr,
            target_kind=kind,
            optimizer=optimizer,
        )
    return grads, opt


st.title("Input embeddings")
st.caption(
    "What moving a model's input embeddings does to its next-token distribution. Distances are "
    "read against the median L2 distance between two vocabulary embeddings; back-projection "
    "names the vocabulary token nearest to an embedding, by cosine and by L2 distance."
)
spec = lens_model().label
experiment = kept(
    st.radio, "Experiment", "ie_experiment", options=list(EXPERIMENTS), format_func=EXPERIMENTS.get
)

if experiment == "batch":
    st.caption(
        "B random sentences of 6–12 tokens, each token embedding drawn from a Gaussian with the "
        "vocabulary embeddings' mean and full covariance (seeded; no special tokens), are "
        "optimised so that the model's next-token distribution after each sentence matches the "
        "one after the target prompt: KL(target ‖ sentence), summed over the sentences, so each "
        "moves as it would alone."
    )
    submitted = ew.batch_form()
    if submitted is not None:
        if not submitted[0]:
            st.warning("Give a target prompt.")
            st.stop()
        st.session_state[BATCH_KEY] = (spec, *submitted)
    batch = run_on_model(
        BATCH_KEY,
        "Press **Run** to optimise the prefilled batch (one forward and backward pass of the "
        "whole batch per step; about a minute or two for 16 sentences × 100 steps on a CPU).",
        "Optimising the random sentences…",
        compute_batch,
    )
    ew.batch_results(batch)
else:
    st.caption(
        "∂L/∂eₜ for each token's input embedding eₜ (before positions are added). *nearest*: the "
        "vocabulary tokens whose embedding points most like −∂L/∂eₜ (cosine); *best move*: the "
        "tokens v whose displacement e_v − eₜ points most like −∂L/∂eₜ. Then the optimiser "
        "moves the input embeddings toward the target (special tokens frozen)."
    )
    submitted = ew.text_form()
    if submitted is not None:
        if not submitted[0] or not submitted[2]:
            st.warning("Give a text and a target.")
            st.stop()
        st.session_state[TEXT_KEY] = (spec, *submitted)
    grads, opt = run_on_model(
        TEXT_KEY,
        "Press **Run** to compute the prefilled example (one gradient, then the steps).",
        "Computing the gradient and the steps on the embeddings…",
        compute_text,
    )
    ew.text_results(grads, opt)
