"""Overview: what the run is (model, data, config), the headline rows ``gradlens select`` stored
(each with its type, interval method, permutation null and paired interval against the full
gradient) and the cost table; both query settings side by side when the database holds two runs
of the same model and data."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import attribute_widgets as aw
from dashboard import common, state, widgets
from gradlens.runs.read import RunInfo
from gradlens.runs.report import format_accuracy, run_description
from gradlens.selection import BEST_SINGLE_HELDOUT, FULL, GREEDY_HELDOUT, headline_row

#: The headline rows shown as big numbers (none selected on the queries it scores).
FIGURES = {
    FULL: "full gradient",
    BEST_SINGLE_HELDOUT: "best single, held out",
    GREEDY_HELDOUT: "greedy, held out",
}


def summary(ctx: common.Context, run: RunInfo, head: pd.DataFrame | None) -> None:
    """The run's big numbers and the flags of its in-sample rows (or what to run)."""
    st.subheader(f"`{run.name}`")
    if head is None:
        st.info(
            "No stored headline: this run was never selected. Run "
            f"{common.select_hint(ctx.db, run.name)} to store its headline rows, their "
            "permutation nulls and paired intervals, and the selection timings."
        )
        return
    rows = [(headline_row(head, i), label) for i, label in FIGURES.items()]
    shown = [(r, label) for r, label in rows if r is not None]
    for col, (row, label) in zip(st.columns(len(shown)), shown, strict=True):
        col.metric(label, format_accuracy(row.accuracy), help=f"{row.metric}: {row.detail}")
    widgets.selection_flags(head)


def tables(ctx: common.Context, run: RunInfo, head: pd.DataFrame | None, titled: bool) -> None:
    """The run's headline table, its cost table and its details, at full width."""
    if titled:
        st.subheader(f"`{run.name}`: headline and cost")
    if head is not None:
        widgets.headline_table(head, f"headline-{run.name}")
    aw.both_views_table(ctx, run.name, head)
    st.markdown("**Cost** (the paper's Table 2 rows, measured with this run)")
    widgets.cost_table(common.costs(ctx.db, run.name, ctx.ver), f"costs-{run.name}")
    with st.expander("Run details"):
        st.table(pd.DataFrame(run_description(run).table_rows(), columns=["", "value"]))


ctx = state.context()
st.title("Overview")
st.caption(
    "A query retrieves its original when the cosine between their gradients (over the chosen "
    "components) beats every other BM25 candidate; accuracies are fractions of queries. Rows "
    "are typed: *not selected* (full gradient, BM25, projections: exact Clopper–Pearson "
    "interval), *selected in-sample* (best single component, greedy peak: chosen on these very "
    "queries, so no interval of their own; compared with a permutation null and with their "
    "held-out row) and *held out* (the whole choice made on training folds, scored on the "
    "held-out ones, averaged over 3 fold seeds). A row is called better or worse than the full "
    "gradient only where the paired interval of the difference excludes 0."
)
partner = widgets.partner_run(ctx, "overview_compare")
runs = [ctx.info] + ([partner] if partner is not None else [])
heads = [common.stored_headline(ctx.db, r.name, ctx.ver) for r in runs]
for run, head, col in zip(runs, heads, st.columns(len(runs)), strict=True):
    with col:
        summary(ctx, run, head)
for run, head in zip(runs, heads, strict=True):
    tables(ctx, run, head, titled=len(runs) > 1)
