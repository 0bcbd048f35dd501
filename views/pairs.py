"""Pair inspector: the loss gradients of two examples compared, per component (a layer × kind
grid of cosines) and per target token (each token's share of its example's gradient and the
cosine of its gradient with the other example's gradient). ``gradlens.lenses.pairs`` computes it.

The model is the one chosen on the Model page (default the bundled SmolLM2), shared by every
session: the computation holds its lock. The failure page sends a (query, candidate) pair with its
run's ``loss_on`` and ``reduction`` (``dashboard.state.send_pair``). Example texts and decoded
tokens are user text: they are shown in text areas, dataframes, plotly figures and escaped
Markdown only."""

from __future__ import annotations

import streamlit as st

from dashboard import pair_widgets
from dashboard.models import lens_model, locked, run_on_model
from gradlens.data.examples import Example
from gradlens.lenses.pairs import PairComparison, compare_pair

INPUTS_KEY = "pair_inputs"


@st.cache_data(show_spinner=False, max_entries=32)
def compute(
    spec: str,
    a: tuple[str, str],
    b: tuple[str, str],
    loss_on: str,
    reduction: str,
    chat_template: bool,
    per_token: bool,
    _lm,
) -> PairComparison:
    """Cached per (model spec, inputs); the model's lock is held while computing."""
    options = {"reduction": reduction, "chat_template": chat_template, "per_token": per_token}
    return locked(_lm, compare_pair, Example("A", *a), Example("B", *b), loss_on=loss_on, **options)


pair_widgets.prepare_editors(INPUTS_KEY)
st.title("Pair inspector")
st.caption(
    "Why do two examples' gradients point where they do? The cosine of the two loss gradients, "
    "per component (2-D weight) and per target token: each loss-bearing token's gradient g_t "
    "(the mean's 1/n included, so the g_t add up to the example's gradient g) as a *share* "
    "⟨g_t, g⟩/|g|² of its example's gradient (the shares sum to 1) and as the cosine of g_t "
    "with the other example's gradient; the token matrix compares every token of A with every "
    "token of B. Encoder-decoder models (T5) read the prompt as the input and the response as "
    "the target (raw text)."
)
spec = lens_model().label
pair_widgets.sent_pair_note(spec)

submitted = pair_widgets.pair_form()

if submitted is not None:
    texts, options = submitted
    if not all(t.strip() for t in texts):
        st.warning("Give both examples a prompt and a response.")
        st.stop()
    st.session_state[INPUTS_KEY] = (spec, texts[:2], texts[2:], *options)
cmp = run_on_model(
    INPUTS_KEY,
    "Press **Run** to compare the two examples (two backward passes, plus one per token).",
    "Computing both gradients and their per-token split…",
    compute,
)

pair_widgets.comparison(cmp)
pair_widgets.token_matrix(cmp)
pair_widgets.per_token(cmp)
pair_widgets.per_component(cmp)
