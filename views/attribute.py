"""Attribute: which training examples taught the model this? One query (a query of the run, or
a prompt typed here, with a response or the model's own) against every training example of the
run's gradient index: the top k by subset cosine, with their BM25 scores and ranks, per-component
contributions and texts, the original's rank, and one click into the Pair inspector.
``gradlens.runs.rank`` computes it; the model loads only when typed text is ranked."""

from __future__ import annotations

import streamlit as st

from dashboard import attribute_widgets as aw
from dashboard import state
from dashboard.attribute_widgets import Query

ctx = state.context()
st.title("Attribute")
st.caption(
    "Which training examples taught the model this? The query's loss gradient against the "
    "gradient of every training example (not only its BM25 candidates), compared by the cosine "
    "over the chosen components, from the run's index (per-component vectors kept by "
    "`gradlens compute --index`). A typed query is computed with the run's own model and "
    "settings (one forward and backward pass; the model loads on first use)."
)
methods = aw.methods(ctx.db, ctx.info.name, ctx.ver)
if not methods:
    st.info(aw.hint(ctx))
    st.stop()

left, right = st.columns([3, 2], gap="large")
with right:
    method = st.selectbox(
        "Index method",
        methods,
        key="attr_method",
        help="sjlt:dN: a d-dimensional sketch of every component; exact:NAMES: the exact "
        "gradients of a few components",
    )
    src = aw.source(ctx.db, ctx.info.name, method, ctx.ver)
    subset = aw.held(src, aw.pick_subset(ctx, src))
    most = min(50, src.index.info.n_train)
    top = st.slider("Training examples shown", 1, most, min(10, most), key="attr_k")

with left:
    typed = st.radio(
        "Query",
        (False, True),
        format_func=lambda t: "type a prompt" if t else "a query of the run",
        key="attr_mode",
        horizontal=True,
    )
    if not typed:
        ids = [str(q) for q in src.index.query_ids]
        texts = src.queries.set_index("example_id")["prompt"]
        default = ids.index(ctx.view.query) if ctx.view.query in ids else 0
        qid = st.selectbox(
            "Query of the run",
            ids,
            index=default,
            key="attr_query",
            format_func=lambda q: f"{q}: {texts.get(q, '')[:90]}",
        )
        query = Query(qid, "", "", subset, top)
    else:
        prompt = st.text_area("Prompt", key="attr_prompt", height=90)
        own = st.checkbox("Let the model write the response", key="attr_generate")
        response = st.text_area("Response", key="attr_response", height=110, disabled=own)
        if st.button("Rank", key="attr_rank", type="primary"):
            if not prompt.strip() or not (own or response.strip()):
                st.warning("Give a prompt, and a response or let the model write it.")
                st.stop()
            st.session_state[aw.INPUTS] = (prompt, None if own else response)
        inputs = st.session_state.get(aw.INPUTS)
        if inputs is None:
            st.info("Type a prompt and press **Rank** (the run's model loads on first use).")
            st.stop()
        query = Query(None, inputs[0], inputs[1], subset, top)

r = aw.ranking(ctx, src, query)
if r.query_id is None:
    who = "the model's response" if r.generated else "the typed response"
    st.markdown(f"**Typed query** ({who}):")
    st.text(r.prompt)
    st.caption("response")
    st.text(r.response)
st.subheader(f"Top {len(r.results)} of {r.n_train} training examples")
aw.original_line(r)
aw.results(ctx, r)
