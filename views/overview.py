"""Overview: what the run is (model, data, config), its headline with 95 % CIs and its costs;
both query settings side by side when the database holds two runs of the same model and data."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, state, widgets
from gradlens.runs.read import RunInfo
from gradlens.runs.report import cost_rows, format_accuracy, headline_strings, run_description
from gradlens.selection import FULL, GREEDY_HELDOUT, GREEDY_PEAK, headline_row

#: The headline rows shown as big numbers: (row id, label).
FIGURES = (
    (FULL, "full gradient"),
    (GREEDY_PEAK, "greedy peak (in-sample)"),
    (GREEDY_HELDOUT, "greedy (held-out)"),
)
COLUMNS = ["metric", "accuracy", "95% CI", "k", "params", "detail"]


def show_run(ctx: common.Context, run: RunInfo, container) -> None:
    table, timings = common.headline(ctx.db, run.name, ctx.ver)
    with container:
        st.subheader(f"`{run.name}`")
        for col, (row_id, label) in zip(st.columns(len(FIGURES)), FIGURES, strict=True):
            row = headline_row(table, row_id)
            if row is not None:
                col.metric(label, format_accuracy(row.accuracy))
        widgets.table(headline_strings(table)[COLUMNS], f"headline-{run.name}")
        with st.expander("Run details and cost"):
            st.table(pd.DataFrame(run_description(run).table_rows(), columns=["", "value"]))
            costs = pd.DataFrame(cost_rows(run.stats, timings), columns=["step", "measured"])
            widgets.table(costs)


ctx = state.context()
st.title("Overview")
st.caption(
    "A query retrieves its original when the cosine between their gradients (over the chosen "
    "components) beats every other BM25 candidate. Accuracies are fractions of queries; CIs are "
    "95 % bootstrap intervals over queries. The held-out row is the accuracy of the whole "
    "procedure (greedy, keeping the peak k chosen on each fold's training part), averaged over "
    "3 fold seeds."
)
partner = widgets.partner_run(ctx, "overview_compare")
if partner is None:
    show_run(ctx, ctx.info, st.container())
else:
    left, right = st.columns(2)
    show_run(ctx, ctx.info, left)
    show_run(ctx, partner, right)
