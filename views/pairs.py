"""Pair inspector: the loss gradients of two examples compared, per component (a layer × kind
grid of cosines) and per target token (each token's share of its example's gradient and the
cosine of its gradient with the other example's gradient). ``gradlens.lenses.pairs`` computes it.

The model is the one chosen on the Model page (``st.session_state["model_spec"]``, default the
bundled SmolLM2), shared by every session: the computation holds its lock. The failure page
sends a (query, candidate) pair as ``st.session_state["pair_a"]`` / ``["pair_b"]`` (dicts with
``prompt``, ``response`` and a ``label``) and its run's ``loss_on`` / ``reduction`` as
``["pair_options"]``. Example texts and decoded tokens are user text: they are shown in text
areas, dataframes, plotly figures and escaped Markdown only."""

from __future__ import annotations

import streamlit as st

from dashboard import common
from dashboard.models import chosen_model, run_on_model
from gradlens.data.examples import LOSS_ON, Example
from gradlens.figures import pair_cosine_grid, token_bars
from gradlens.figures.textdiff import escape_markdown
from gradlens.lenses.pairs import REDUCTIONS, PairComparison, compare_pair, explain

# The worked example: on SmolLM2 " pizza" and " pizza." differ by exactly one token ("."),
# with or without the chat template (a leading space keeps " pizza" one token).
EXAMPLE = {"a": ("I like to eat", " pizza"), "b": ("I like to eat", " pizza.")}
INPUTS_KEY = "pair_inputs"
SOURCE_KEY = "pair_source"
SESSION = "session"
LOSS_HELP = {
    "response": "only the response's tokens (and the end-of-turn token) bear the loss",
    "all": "every token but the first",
}


def field(side: str, part: str) -> str:
    return f"pair_{side}_{part}"


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
    with _lm.lock:
        return compare_pair(
            _lm.model,
            _lm.tokenizer,
            Example("A", *a),
            Example("B", *b),
            loss_on=loss_on,
            reduction=reduction,
            chat_template=chat_template,
            per_token=per_token,
        )


def editor_texts() -> tuple[str, ...]:
    """The four editors' texts (A's prompt and response, then B's)."""
    return tuple(
        str(st.session_state.get(field(side, part), ""))
        for side in ("a", "b")
        for part in ("prompt", "response")
    )


def take_sent_pair() -> None:
    """Move a pair sent by the failure page into the editors (once), and forget the last run."""
    sent = [st.session_state.pop(k, None) for k in ("pair_a", "pair_b")]
    options = st.session_state.pop("pair_options", None) or {}
    if not all(sent):
        return
    labels = []
    for side, ex in zip(("a", "b"), sent, strict=True):
        if isinstance(ex, dict):
            prompt, response, label = ex.get("prompt", ""), ex.get("response", ""), ex.get("label")
        else:
            (prompt, response), label = ex, None
        st.session_state[field(side, "prompt")] = str(prompt)
        st.session_state[field(side, "response")] = str(response)
        labels.append(str(label or side.upper()))
    if options.get("loss_on") in LOSS_ON:
        st.session_state["pair_loss_on"] = options["loss_on"]
    if options.get("reduction") in REDUCTIONS:
        st.session_state["pair_reduction"] = options["reduction"]
    st.session_state["pair_chat"] = True
    # a run's examples have long responses: the per-token split (one backward pass per
    # response token) is left for the user to ask for
    st.session_state["pair_per_token"] = False
    st.session_state[SOURCE_KEY] = (labels, options.get("model"), editor_texts())
    st.session_state.pop(INPUTS_KEY, None)


take_sent_pair()
for side, (prompt, response) in EXAMPLE.items():
    st.session_state.setdefault(field(side, "prompt"), prompt)
    st.session_state.setdefault(field(side, "response"), response)
st.session_state.setdefault("pair_chat", True)
st.session_state.setdefault("pair_per_token", True)
spec, trust = chosen_model()

st.title("Pair inspector")
st.caption(
    "Why do two examples' gradients point where they do? The cosine of the two loss gradients, "
    "per component (2-D weight) and per target token: each loss-bearing token's gradient g_t "
    "(the mean's 1/n included, so the g_t add up to the example's gradient g) as a *share* "
    "⟨g_t, g⟩/|g|² of its example's gradient (the shares sum to 1) and as the cosine of g_t "
    "with the other example's gradient. Encoder-decoder models (T5) read the prompt as the "
    "input and the response as the target (raw text)."
)
st.caption(f"Model: {escape_markdown(spec)} (change it on the Model page).")
source = st.session_state.get(SOURCE_KEY)
if source and source[2] == editor_texts():  # shown while the editors hold the sent texts
    (label_a, label_b), run_model, _ = source
    line = f"Pair sent from the failure page: A = {label_a}, B = {label_b}"
    if run_model and run_model != spec:
        line += f" (the run used model {run_model})"
    st.text(
        line + ". The per-token split starts off for a sent pair (it costs one backward pass "
        "per response token): tick it to compute it."
    )

with st.form("pair_form"):
    cols = st.columns(2)
    for col, side in zip(cols, ("a", "b"), strict=True):
        with col:
            st.markdown(f"**Example {side.upper()}**")
            st.text_area("Prompt", key=field(side, "prompt"), height=90, persist_state=SESSION)
            st.text_area(
                "Response (the target)",
                key=field(side, "response"),
                height=90,
                persist_state=SESSION,
                help="mind leading spaces: ' pizza' is one SmolLM2 token, 'pizza' two",
            )
    c1, c2, c3, c4 = st.columns(4)
    reduction = c1.radio(
        "Reduction",
        REDUCTIONS,
        horizontal=True,
        key="pair_reduction",
        persist_state=SESSION,
        help="mean: the mean token loss (as a run computes it); sum: the summed token loss",
    )
    loss_on = c2.radio(
        "Loss on",
        LOSS_ON,
        horizontal=True,
        key="pair_loss_on",
        persist_state=SESSION,
        help="; ".join(f"{k}: {v}" for k, v in LOSS_HELP.items()),
    )
    chat_template = c3.checkbox(
        "Chat template",
        key="pair_chat",
        persist_state=SESSION,
        help="on: formatted as a run does it (user turn = prompt, assistant turn = response); "
        "off: the raw text prompt + response",
    )
    per_token = c4.checkbox(
        "Per-token split",
        key="pair_per_token",
        persist_state=SESSION,
        help="one extra backward pass per loss-bearing token: slow for long responses",
    )
    submitted = st.form_submit_button("Run", type="primary")

if submitted:
    texts = {
        side: (st.session_state[field(side, "prompt")], st.session_state[field(side, "response")])
        for side in ("a", "b")
    }
    if not all(p.strip() and r.strip() for p, r in texts.values()):
        st.warning("Give both examples a prompt and a response.")
        st.stop()
    st.session_state[INPUTS_KEY] = (
        spec,
        texts["a"],
        texts["b"],
        loss_on,
        reduction,
        bool(chat_template),
        bool(per_token),
    )
cmp = run_on_model(
    INPUTS_KEY,
    "Press **Run** to compare the two examples (two backward passes, plus one per token).",
    "Computing both gradients and their per-token split…",
    compute,
)

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
st.caption(f"Settings: {settings}.")

st.subheader("Per component")
left, right = st.columns([1, 1])
left.plotly_chart(
    pair_cosine_grid(cmp.component_frame(), full=cmp.cosine),
    width="stretch",
    key="pair_grid",
)
components = cmp.component_frame()
right.caption("Components by cosine, lowest first (the CSV has layer, kind and size too).")
right.dataframe(
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
with right:
    common.download(components, "pair-components")

st.subheader("Per target token")
if cmp.tokens is None:
    st.info("The per-token split was not computed (tick **Per-token split** and Run).")
    st.stop()
frames = [tok.frame() for tok in cmp.tokens]
st.plotly_chart(token_bars(*frames), width="stretch", key="pair_tokens")
st.caption(
    "share = ⟨g_t, g⟩/|g|² (sums to 1 over each example's tokens); cosine_other = cos(g_t, "
    "other example's gradient); contribution = ⟨g_t, g_other⟩/(|g||g_other|) (sums to the full "
    "cosine); gap = share − contribution (sums to 1 − cosine): the token with the largest gap "
    "most separates the pair."
)
token_columns = {
    "share": st.column_config.NumberColumn(format="%.4f"),
    "cosine_other": st.column_config.NumberColumn("cosine with other", format="%+.4f"),
    "contribution": st.column_config.NumberColumn(format="%+.4f"),
    "gap": st.column_config.NumberColumn(format="%+.4f"),
    "grad_norm": st.column_config.NumberColumn("|g_t|", format="%.4g"),
}
for label, frame in zip(("A", "B"), frames, strict=True):
    st.markdown(f"**Tokens of {label}**")
    st.dataframe(frame, hide_index=True, width="stretch", column_config=token_columns)
    common.download(frame, f"pair-tokens-{label}")
