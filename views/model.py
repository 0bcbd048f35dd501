"""Model: load the model the lens pages work on (the bundled SmolLM2, a local folder, or a hub id
already in the local cache; nothing is downloaded), then see its architecture, its components
(table, CSV and a layer × kind grid of parameter counts), its chat template and one example as
the model reads it, token by token, with the tokens that bear the loss highlighted.

The model is held by the server for every session (``dashboard.models``, one at a time); the
chosen model is the session's ``dashboard.state.chosen_model()``, which the lens pages read. User
text is only ever shown through st.text / st.code / dataframes."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import model_widgets, state
from dashboard.models import LoadedModel
from dashboard.state import SESSION
from gradlens.data.examples import Example, load_examples
from gradlens.errors import GradLensError
from gradlens.options import LOSS_ON

DEMO_TRAIN = Path(__file__).resolve().parents[1] / "data" / "demo" / "train.jsonl"
N_DEMO = 20
PREVIEW_SOURCES = ("bundled demo set", "type an example")


@st.cache_data(show_spinner=False)
def demo_examples(path: str, n: int) -> list[Example]:
    return load_examples(path)[:n]


def preview_options() -> tuple[str, int]:
    """(loss_on, max_length) of the preview, as a run takes them."""
    loss_on = st.radio(
        "Loss on",
        LOSS_ON,
        key="model_preview_loss_on",
        horizontal=True,
        persist_state=SESSION,
        help="response: only the assistant's answer (and its end-of-turn token); all: every token",
    )
    max_length = st.number_input(
        "max_length",
        min_value=8,
        max_value=32768,
        value=512,
        step=64,
        key="model_preview_max_length",
        persist_state=SESSION,
        help="tokens kept from the left; the rest is cut, as a run does",
    )
    return loss_on, int(max_length)


def demo_example() -> Example | None:
    try:
        examples = demo_examples(str(DEMO_TRAIN), N_DEMO)
    except GradLensError as exc:
        st.error(model_widgets.one_line(exc))
        examples = []
    by_id = {ex.id: ex for ex in examples}
    pick = st.selectbox(
        f"Demo example (first {len(examples)} of {DEMO_TRAIN.name})",
        list(by_id),
        key="model_preview_pick",
        format_func=lambda i: f"{i}: {by_id[i].prompt[:80]}",
        persist_state=SESSION,
    )
    return by_id.get(pick)


def typed_example() -> Example | None:
    prompt = st.text_area("Prompt", key="model_preview_prompt", persist_state=SESSION)
    response = st.text_area("Response", key="model_preview_response", persist_state=SESSION)
    if prompt.strip() and response.strip():
        return Example("typed", prompt, response)
    st.info("Type a prompt and a response to see them tokenised.")
    return None


def preview(lm: LoadedModel) -> None:
    st.subheader("One example, tokenised")
    st.caption(
        "The example chat-formatted and tokenised exactly as a run does it. Highlighted rows "
        "bear the loss (their label is not -100: the model is scored on predicting them)."
    )
    pick_col, opts_col = st.columns([3, 2])
    with opts_col:
        loss_on, max_length = preview_options()
    with pick_col:
        kind = st.radio(
            "Example",
            PREVIEW_SOURCES,
            key="model_preview_source",
            horizontal=True,
            persist_state=SESSION,
        )
        example = demo_example() if kind == PREVIEW_SOURCES[0] else typed_example()
    if example is not None:
        model_widgets.example_tokens(lm, example, loss_on, max_length)


st.title("Model")
st.caption(
    "Load the model that the lens pages work on. Nothing is downloaded: the bundled SmolLM2, a "
    "local folder, or a hub id already in the local Hugging Face cache; optionally with a PEFT "
    "LoRA adapter folder (the lens pages use it merged into the weights)."
)
lm = model_widgets.model_chooser()
if lm is None:
    if state.chosen_model() is None:
        st.info("No model loaded in this session yet: choose a source and press Load.")
else:
    model_widgets.architecture(lm)
    model_widgets.components(lm)
    preview(lm)
