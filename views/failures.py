"""Failure cases: for the current subset, the queries whose original is not retrieved; per query
the texts side by side with a word-level diff, each candidate's cosine and BM25 score, and which
components vote for the wrong candidate; plus the training examples that steal most queries."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, state, widgets
from gradlens.figures import candidate_bars, share_bars
from gradlens.figures.textdiff import diff_markdown, escape_markdown
from gradlens.runs.report import format_accuracy
from gradlens.selection import candidate_roles, failures, margin_contributions, steals

COLUMNS = ["query_id", "wrong_id", "margin", "rank", "bm25_rank", "cos_original", "cos_wrong"]
OPEN_PAIR = "Open this pair in the pair inspector"
PAIR_HELP = (
    "the query's gradient against the {role} example's: cosine per component and per target "
    "token (Pair inspector page; computes with the model chosen on the Model page)"
)
FOUR = st.column_config.NumberColumn(format="%.4f")

ctx = state.context()
db, ver, run = ctx.db, ctx.ver, ctx.info.name
arrays = ctx.arrays
subset = list(ctx.view.subset) or list(range(arrays.shape[2]))
label = f"{len(ctx.view.subset)} chosen components" if ctx.view.subset else "the full gradient"


def text_of(split: str, example_id: str) -> state.PairText:
    """An example's prompt and response ("" for both when the run stores no texts)."""
    texts = common.examples(db, run, ver)
    hit = texts[(texts["split"] == split) & (texts["example_id"] == example_id)]
    if hit.empty or pd.isna(hit["prompt"].iloc[0]):
        return state.PairText(example_id, "", "")
    return state.PairText(
        example_id, str(hit["prompt"].iloc[0]), str(hit["response"].iloc[0] or "")
    )


def whole(ex: state.PairText) -> str:
    return f"{ex.prompt} {ex.response}"


def send_pair(query: state.PairText, other: state.PairText, role: str) -> None:
    """Open (query, other) in the Pair inspector with this run's loss settings."""
    a = state.PairText(f"query {query.label}", query.prompt, query.response)
    b = state.PairText(f"{role} {other.label}", other.prompt, other.response)
    config = ctx.info.config
    options = {k: config.get(k) for k in ("loss_on", "reduction", "model")}
    state.send_pair(state.SentPair(a, b, **options))
    st.switch_page("views/pairs.py")


def pick_query(fails: pd.DataFrame) -> str | None:
    """The failure table (a row click opens its query) and the query picker; the open query."""
    shown = fails[COLUMNS]
    text = st.text_input("Filter by id (query or wrong candidate contains)", key="fail_filter")
    if text:
        hit = [shown[c].astype(str).str.contains(text, regex=False) for c in COLUMNS[:2]]
        shown = shown[hit[0] | hit[1]]
    event = widgets.table(
        shown,
        f"failures-{run}",
        height=260,
        on_select="rerun",
        selection_mode="single-row",
        key="fail_table",
        column_config={c: FOUR for c in ("margin", "cos_original", "cos_wrong")},
    )
    rows = event.selection.rows if event is not None else []
    if rows and shown["query_id"].iloc[rows[0]] != ctx.view.query:
        state.set_view(ctx.view.replace(query=shown["query_id"].iloc[rows[0]]))
    current = state.view().query
    all_ids = list(fails["query_id"])
    options = all_ids if current in all_ids else [None, *all_ids]
    choice = st.selectbox(
        "Query to inspect",
        options,
        index=options.index(current) if current in options else 0,
        format_func=lambda q: "(pick a query)" if q is None else q,
        key="fail_pick",
    )
    if choice != current:
        state.set_view(state.view().replace(query=choice))
    return choice


def show_texts(query: state.PairText, original: state.PairText, wrong: state.PairText) -> None:
    """The three texts side by side, each pair's way to the Pair inspector, and word diffs."""
    cols = st.columns(3)
    titled = zip(cols, ("query", "original", "retrieved"), (query, original, wrong), strict=True)
    for col, role, ex in titled:
        col.markdown(f"**{escape_markdown(f'{role} {ex.label}')}**")
        if not ex.prompt:
            col.caption("(texts are not stored for this run: imported dot products)")
            continue
        col.text(ex.prompt)
        col.caption("response")
        col.text(ex.response)
        if role != "query" and query.prompt:
            if col.button(OPEN_PAIR, key=f"fail_pair_{role}", help=PAIR_HELP.format(role=role)):
                send_pair(query, ex, role)
    if original.prompt and wrong.prompt:
        for other, title in ((wrong, "retrieved (red: only in the original)"), (query, "query")):
            with st.expander(f"Word-level diff: original → {title}"):
                st.markdown(diff_markdown(whole(original), whole(other)))


st.title("Failure cases")
st.caption(
    f"Queries whose original loses to another BM25 candidate under {label} "
    f"(method `{ctx.view.method}`). margin = cos(original) − cos(best other) ≤ 0; rank = the "
    "original's rank by cosine; BM25 rank = its rank by BM25. Change the subset on the greedy "
    "or heatmap page, or clear it to inspect the full gradient."
)
fails = failures(arrays, subset)
n = arrays.shape[0]
accuracy = format_accuracy(1 - len(fails) / n)
st.metric(
    "queries not retrieved", f"{len(fails)} of {n}", help=f"accuracy of this subset: {accuracy}"
)
if fails.empty:
    st.success("Every original is retrieved by this subset.")
    st.stop()
current = pick_query(fails)
if current is None:
    st.stop()

row = fails.set_index("query_id").loc[current]
st.subheader(f"Query {escape_markdown(current)}")
texts = [text_of("query", current), text_of("train", str(row["original_id"]))]
show_texts(*texts, text_of("train", str(row["wrong_id"])))

left, right = st.columns([2, 3])
cands = candidate_roles(arrays, subset, current)
left.plotly_chart(candidate_bars(cands), width="stretch", key="fail_cands")
left.dataframe(cands, hide_index=True, width="stretch")
contrib = margin_contributions(arrays, subset, current)
right.plotly_chart(share_bars(contrib, float(row["margin"])), width="stretch", key="fail_shares")
right.caption(
    "Each bar is one component's contribution to the margin, dot_c(query, original)/(|q_S||o_S|)"
    " − dot_c(query, retrieved)/(|q_S||r_S|): additive, so the bars sum exactly to the margin."
)
widgets.download(contrib[["component", "contribution"]], f"margin-{run}-{current}")
st.subheader("Training examples that steal the most queries")
stolen = steals(arrays, subset)
st.dataframe(stolen.head(50), hide_index=True, width="stretch")
widgets.download(stolen, f"steals-{run}")
