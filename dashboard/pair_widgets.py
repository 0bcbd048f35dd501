"""Widgets of the Pair inspector: its four editors (filled with the worked example, or with a pair
the failure page sent), the line that says where a sent pair comes from, and a comparison's
results (metrics, per component, per target token). Example texts are user text: they are shown
in text areas, dataframes, plotly figures and escaped Markdown only."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import state, widgets
from dashboard.model_widgets import token_table
from gradlens.figures import pair_cosine_grid, token_bars, token_cosine_heatmap
from gradlens.figures.textdiff import escape_markdown
from gradlens.lenses.pairs import (
    IDENTICAL,
    MAX_SPLIT_TOKENS,
    PairComparison,
    explain,
    token_reading,
)
from gradlens.options import LOSS_ON, REDUCTIONS

SIDES = ("a", "b")
# The worked example: on SmolLM2 " pizza" and " pizza." differ by exactly one token ("."),
# with or without the chat template (a leading space keeps " pizza" one token).
EXAMPLE = {"a": ("I like to eat", " pizza"), "b": ("I like to eat", " pizza.")}
_SOURCE = "pair_source"
HELP = {
    "reduction": "mean: the mean token loss (as a run computes it); sum: the summed token loss",
    "loss_on": "response: only the response's tokens (and the end-of-turn token) bear the loss; "
    "all: every token but the first",
    "chat": "on: formatted as a run does it (user turn = prompt, assistant turn = response); "
    "off: the raw text prompt + response",
    "per_token": "one extra backward pass per loss-bearing token, up to "
    f"{MAX_SPLIT_TOKENS} per example: gives the token matrix and the per-token split",
}
REDUCTION_NOTE = (
    "Mean or sum never changes a pair's cosine, nor any per-component or per-token cosine: the "
    "1/n of the mean scales a whole gradient, and every token's gradient in it, alike."
)


def editor(side: str, part: str) -> str:
    """The widget key of one editor: ``side`` a or b, ``part`` prompt or response."""
    return f"pair_{side}_{part}"


def editor_texts() -> tuple[str, ...]:
    """The four editors' texts (A's prompt and response, then B's)."""
    return tuple(
        str(st.session_state.get(editor(side, part), ""))
        for side in SIDES
        for part in ("prompt", "response")
    )


def prepare_editors(inputs_key: str) -> None:
    """Move a pair sent by the failure page into the editors (once; the last run under
    ``inputs_key`` is forgotten), else keep what the editors hold, else the worked example."""
    sent = state.take_sent_pair()
    if sent is not None:
        for side, ex in zip(SIDES, (sent.a, sent.b), strict=True):
            st.session_state[editor(side, "prompt")] = ex.prompt
            st.session_state[editor(side, "response")] = ex.response
        if sent.loss_on in LOSS_ON:
            st.session_state["pair_loss_on"] = sent.loss_on
        if sent.reduction in REDUCTIONS:
            st.session_state["pair_reduction"] = sent.reduction
        st.session_state["pair_chat"] = True
        # a run's examples have long responses: the per-token split (one backward pass per
        # response token) is left for the user to ask for
        st.session_state["pair_per_token"] = False
        labels = (sent.a.label or "A", sent.b.label or "B")
        st.session_state[_SOURCE] = (labels, sent.model, editor_texts())
        st.session_state.pop(inputs_key, None)
    for side, (prompt, response) in EXAMPLE.items():
        st.session_state.setdefault(editor(side, "prompt"), prompt)
        st.session_state.setdefault(editor(side, "response"), response)
    st.session_state.setdefault("pair_chat", True)
    st.session_state.setdefault("pair_per_token", True)


def sent_pair_note(spec: str) -> None:
    """Where the editors' pair comes from, while they hold the texts the failure page sent."""
    source = st.session_state.get(_SOURCE)
    if not source or source[2] != editor_texts():
        return
    (label_a, label_b), run_model, _ = source
    line = f"Pair sent from the failure page: A = {label_a}, B = {label_b}"
    if run_model and run_model != spec:
        line += f" (the run used model {run_model})"
    st.text(
        line + ". The per-token split starts off for a sent pair (it costs one backward pass "
        "per response token): tick it to compute it."
    )


def pair_form() -> tuple[tuple[str, ...], tuple[str, str, bool, bool]] | None:
    """The two examples' editors and the loss settings, and Run. When Run is pressed: the four
    texts (A's prompt and response, then B's) and (loss_on, reduction, chat template, per-token
    split); None otherwise."""
    with st.form("pair_form"):
        cols = st.columns(2)
        for col, side in zip(cols, SIDES, strict=True):
            with col:
                st.markdown(f"**Example {side.upper()}**")
                st.text_area(
                    "Prompt", key=editor(side, "prompt"), height=90, persist_state=state.SESSION
                )
                st.text_area(
                    "Response (the target)",
                    key=editor(side, "response"),
                    height=90,
                    persist_state=state.SESSION,
                    help="mind leading spaces: ' pizza' is one SmolLM2 token, 'pizza' two",
                )
        c1, c2, c3, c4 = st.columns(4)
        kept = {"persist_state": state.SESSION}
        row = kept | {"horizontal": True}
        reduction = c1.radio(
            "Reduction", REDUCTIONS, key="pair_reduction", help=HELP["reduction"], **row
        )
        loss_on = c2.radio("Loss on", LOSS_ON, key="pair_loss_on", help=HELP["loss_on"], **row)
        chat_template = c3.checkbox("Chat template", key="pair_chat", help=HELP["chat"], **kept)
        per_token = c4.checkbox(
            "Per-token split", key="pair_per_token", help=HELP["per_token"], **kept
        )
        submitted = st.form_submit_button("Run", type="primary")
    if not submitted:
        return None
    return editor_texts(), (loss_on, reduction, bool(chat_template), bool(per_token))


def comparison(cmp: PairComparison) -> None:
    """The cosine of the two gradients, their norms and losses, and a sentence that reads them."""
    settings = f"{cmp.reduction} loss on the {cmp.loss_on}" + (
        ", encoder-decoder: prompt → response"
        if cmp.encoder_decoder
        else (", chat template" if cmp.chat_template else ", raw text")
    )
    cols = st.columns([2, 1, 1, 1, 1])
    cols[0].metric("cosine of the full gradients", f"{cmp.cosine:.4f}", help=settings)
    cols[1].metric("|g_A|", f"{cmp.norms[0]:.4g}")
    cols[2].metric("|g_B|", f"{cmp.norms[1]:.4g}")
    cols[3].metric("loss A", f"{cmp.losses[0]:.4f}")
    cols[4].metric("loss B", f"{cmp.losses[1]:.4f}")
    st.info(escape_markdown(explain(cmp)))
    st.caption(f"Settings: {settings}. {REDUCTION_NOTE}")


def token_matrix(cmp: PairComparison) -> None:
    """The cosine of every token of A with every token of B, and the sentence that reads it."""
    st.subheader("Token matrix")
    cosines = cmp.token_cosines
    if cosines is None:
        st.info("The token matrix needs the per-token split (tick **Per-token split** and Run).")
        return
    st.info(escape_markdown(token_reading(cmp)))
    frames = [tok.frame() for tok in cmp.tokens]
    fig = token_cosine_heatmap(cosines, *frames, identical=IDENTICAL)
    st.plotly_chart(fig, width="stretch", key="pair_token_matrix")
    st.caption(
        "cos(g_t, g_u) between the gradient of each loss-bearing token t of A and u of B, over "
        f"all 2-D weights; = marks cosine ≥ {IDENTICAL} (identical: a token predicted from the "
        "same context in both examples). Computed from the factors of each layer's gradient "
        "(Σₛ δₛ xₛᵀ: one backward pass per token, no per-token gradient formed); up to "
        f"{MAX_SPLIT_TOKENS} loss-bearing tokens per example (shorten a longer response)."
    )
    matrix = pd.DataFrame(cosines, index=frames[0]["token"], columns=frames[1]["token"])
    widgets.download(matrix.reset_index(names="A's token"), "pair-token-matrix")


def per_component(cmp: PairComparison) -> None:
    """The layer × kind grid of per-component cosines beside the components, lowest first."""
    st.subheader("Per component")
    components = cmp.component_cosines()
    left, right = st.columns([1, 1])
    left.plotly_chart(
        pair_cosine_grid(components, full=cmp.cosine), width="stretch", key="pair_grid"
    )
    with right:
        st.caption("Components by cosine, lowest first (the CSV has layer, kind and size too).")
        st.dataframe(
            components.sort_values("cosine"),
            hide_index=True,
            width="stretch",
            height=560,
            column_order=["component", "cosine", "dot", "sq_a", "sq_b"],
            column_config={
                "cosine": st.column_config.NumberColumn(format="%.4f"),
                "dot": st.column_config.NumberColumn("⟨g_A, g_B⟩", format="%.4g"),
                "sq_a": st.column_config.NumberColumn("|g_A|²", format="%.4g"),
                "sq_b": st.column_config.NumberColumn("|g_B|²", format="%.4g"),
            },
        )
        widgets.download(components, "pair-components")


TOKEN_COLUMNS = {
    "share": st.column_config.NumberColumn(format="%.4f"),
    "cosine_other": st.column_config.NumberColumn("cosine with other", format="%+.4f"),
    "contribution": st.column_config.NumberColumn(format="%+.4f"),
    "gap": st.column_config.NumberColumn(format="%+.4f"),
    "grad_norm": st.column_config.NumberColumn("|g_t|", format="%.4g"),
}


def per_token(cmp: PairComparison) -> None:
    """Each target token's share of its example's gradient and its cosine with the other's."""
    st.subheader("Per target token")
    if cmp.tokens is None:
        st.info("The per-token split was not computed (tick **Per-token split** and Run).")
        return
    frames = [tok.frame() for tok in cmp.tokens]
    st.plotly_chart(token_bars(*frames), width="stretch", key="pair_tokens")
    st.caption(
        "share = ⟨g_t, g⟩/|g|² (sums to 1 over each example's tokens); cosine_other = cos(g_t, "
        "other example's gradient); contribution = ⟨g_t, g_other⟩/(|g||g_other|) (sums to the "
        "full cosine); gap = share − contribution (sums to 1 − cosine): the token with the "
        "largest gap most separates the pair."
    )
    for label, frame in zip(("A", "B"), frames, strict=True):
        st.markdown(f"**Tokens of {label}**")
        note = label == "A"
        token_table(frame, f"pair-tokens-{label}", note=note, column_config=TOKEN_COLUMNS)
