"""Failure cases: for the current subset, the queries whose original is not retrieved; per query
the texts side by side with a word-level diff, each candidate's cosine and BM25 score, and which
components vote for the wrong candidate; plus the training examples that steal most queries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import common
from gradlens.figures import candidate_bars, share_bars
from gradlens.figures.textdiff import diff_markdown, escape_markdown
from gradlens.selection import component_shares, cosines, failures, steals

ctx = common.context()
db, ver, run = ctx.db, ctx.ver, ctx.info.name
arrays = ctx.arrays
K = arrays.shape[2]
subset = list(ctx.view.subset) or list(range(K))
label = f"{len(ctx.view.subset)} chosen components" if ctx.view.subset else "the full gradient"

st.title("Failure cases")
st.caption(
    f"Queries whose original loses to another BM25 candidate under {label} "
    f"(method `{ctx.view.method}`). margin = cos(original) − cos(best other) ≤ 0; rank = the "
    "original's rank by cosine; BM25 rank = its rank by BM25. Change the subset on the greedy "
    "or heatmap page, or clear it to inspect the full gradient."
)
fails = failures(arrays, subset)
n = arrays.shape[0]
st.metric(
    "queries not retrieved",
    f"{len(fails)} of {n}",
    help=f"accuracy of this subset: {1 - len(fails) / n:.4f}",
)
if fails.empty:
    st.success("Every original is retrieved by this subset.")
    st.stop()

shown = fails[["query_id", "wrong_id", "margin", "rank", "bm25_rank", "cos_original", "cos_wrong"]]
text = st.text_input("Filter by id (query or wrong candidate contains)", key="fail_filter")
if text:
    hit = shown["query_id"].str.contains(text, regex=False) | shown["wrong_id"].astype(
        str
    ).str.contains(text, regex=False)
    shown = shown[hit]
event = st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    height=260,
    on_select="rerun",
    selection_mode="single-row",
    key="fail_table",
    column_config={
        "margin": st.column_config.NumberColumn(format="%.4f"),
        "cos_original": st.column_config.NumberColumn(format="%.4f"),
        "cos_wrong": st.column_config.NumberColumn(format="%.4f"),
    },
)
common.download(shown, f"failures-{run}")
rows = event.selection.rows if event is not None else []
ids = list(shown["query_id"])
if rows and ids[rows[0]] != ctx.view.query:
    common.set_view(ctx.view.replace(query=ids[rows[0]]))
current = common.view().query
all_ids = list(fails["query_id"])
options = all_ids if current in all_ids else [None] + all_ids
choice = st.selectbox(
    "Query to inspect",
    options,
    index=options.index(current) if current in options else 0,
    format_func=lambda q: "(pick a query)" if q is None else q,
    key="fail_pick",
)
if choice != current:
    common.set_view(common.view().replace(query=choice))
    current = choice
if current is None:
    st.stop()

qi = int(np.flatnonzero(arrays.query_ids == current)[0])
row = fails.set_index("query_id").loc[current]
target = int(arrays.target[qi])
wrong = int(list(arrays.candidate_ids[qi]).index(row["wrong_id"]))
st.subheader(f"Query {escape_markdown(current)}")
texts = common.examples(db, run, ver)


def text_of(split: str, example_id: str) -> tuple[str, str]:
    hit = texts[(texts["split"] == split) & (texts["example_id"] == example_id)]
    if hit.empty or pd.isna(hit["prompt"].iloc[0]):
        return "", ""
    return str(hit["prompt"].iloc[0]), str(hit["response"].iloc[0] or "")


q_text = text_of("query", current)
o_text = text_of("train", str(row["original_id"]))
w_text = text_of("train", str(row["wrong_id"]))
cols = st.columns(3)
for col, title, (prompt, response) in zip(
    cols,
    (f"query {current}", f"original {row['original_id']}", f"retrieved {row['wrong_id']}"),
    (q_text, o_text, w_text),
    strict=True,
):
    col.markdown(f"**{escape_markdown(title)}**")
    if prompt:
        col.text(prompt)
        col.caption("response")
        col.text(response)
    else:
        col.caption("(texts are not stored for this run: imported dot products)")
for col, role, other_id, other in (
    (cols[1], "original", row["original_id"], o_text),
    (cols[2], "retrieved", row["wrong_id"], w_text),
):
    if (
        q_text[0]
        and other[0]
        and col.button(
            "Open this pair in the pair inspector",
            key=f"fail_pair_{role}",
            help=f"the query's gradient against the {role} example's: cosine per component and per "
            "target token (Pair inspector page; computes with the model chosen on the Model page)",
        )
    ):
        st.session_state["pair_a"] = {
            "label": f"query {current}",
            "prompt": q_text[0],
            "response": q_text[1],
        }
        st.session_state["pair_b"] = {
            "label": f"{role} {other_id}",
            "prompt": other[0],
            "response": other[1],
        }
        st.session_state["pair_options"] = {
            k: ctx.info.config.get(k) for k in ("loss_on", "reduction", "model")
        }
        st.switch_page("views/pairs.py")
if o_text[0] and w_text[0]:
    with st.expander("Word-level diff: original → retrieved (red: only in the original)"):
        st.markdown(diff_markdown(o_text[0] + " " + o_text[1], w_text[0] + " " + w_text[1]))
    with st.expander("Word-level diff: original → query"):
        st.markdown(diff_markdown(o_text[0] + " " + o_text[1], q_text[0] + " " + q_text[1]))

cos = cosines(arrays.dots, arrays.query_sq, arrays.cand_sq, subset)[qi]
valid = arrays.valid[qi]
cands = pd.DataFrame(
    {
        "candidate_id": arrays.candidate_ids[qi][valid],
        "cosine": cos[valid],
        "bm25": arrays.bm25[qi][valid],
        "role": [
            "original" if j == target else "retrieved" if j == wrong else "other"
            for j in np.flatnonzero(valid)
        ],
    }
)
left, right = st.columns([2, 3])
left.plotly_chart(candidate_bars(cands), width="stretch", key="fail_cands")
left.dataframe(cands, hide_index=True, width="stretch")
shares = component_shares(arrays, qi, [target, wrong], subset)
shares["contribution"] = shares[f"slot_{target}"] - shares[f"slot_{wrong}"]
right.plotly_chart(share_bars(shares, float(row["margin"])), width="stretch", key="fail_shares")
right.caption(
    "Each bar is dot_c(query, original)/(|q_S||o_S|) − dot_c(query, retrieved)/(|q_S||r_S|): "
    "the bars sum exactly to the margin."
)
common.download(shares[["component", "contribution"]], f"shares-{run}-{current}")

st.subheader("Training examples that steal the most queries")
stolen = steals(arrays, subset)
st.dataframe(stolen.head(50), hide_index=True, width="stretch")
common.download(stolen, f"steals-{run}")
