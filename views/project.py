"""Select vs project (paper's Figs. 4/5): accuracy and fidelity against the parameter fraction
for greedy selection, the random projections stored with the run, and the full gradient; with
the measured cost of each."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, state, widgets
from gradlens.figures import select_vs_project
from gradlens.runs.report import cost_rows, format_accuracy
from gradlens.selection import FULL, headline_row, projection_table

ctx = state.context()
db, ver, info = ctx.db, ctx.ver, ctx.info
run = info.name
exact = ctx.exact
projected = {m: common.arrays(db, run, m, ver) for m in info.methods if m != "exact"}

st.title("Select vs project")
st.caption(
    "Selection keeps a few whole components (x = their share of the parameters); a random "
    "projection keeps every component but maps component c to max(1, round(f·P_c)) dimensions "
    "(x = f). Fidelity is the cosine between a method's cosines over all (query, candidate) "
    "pairs and the exact full gradient's."
)
table, timings = common.headline(db, run, ver)
full = headline_row(table, FULL).accuracy
proj = projection_table(exact, projected)
if proj.empty:
    st.info(
        "This run stores no projections: compute it with e.g. `--project sjlt:0.01` to compare "
        "random projections with selection."
    )
for metric in ("accuracy", "fidelity"):
    curves = {f"greedy by {metric} (exact)": common.greedy_curve(db, run, "exact", metric, ver)}
    for m in projected:
        curves[f"greedy by {metric} ({m})"] = common.greedy_curve(db, run, m, metric, ver)
    ref = full if metric == "accuracy" else 1.0
    st.plotly_chart(
        select_vs_project(curves, proj, ref, metric=metric),
        width="stretch",
        key=f"svp_{metric}",
    )
if not proj.empty:
    shown = proj.assign(**{c: proj[c].map(format_accuracy) for c in ("accuracy", "fidelity")})
    st.dataframe(shown, hide_index=True, width="stretch")
    widgets.download(proj, f"projections-{run}")
st.subheader("Cost (measured)")
costs = pd.DataFrame(cost_rows(info.stats, timings), columns=["step", "measured"])
widgets.table(costs, f"costs-{run}")
