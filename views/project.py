"""Select vs project (paper's Figs. 4/5): accuracy and fidelity against the parameter fraction
for greedy selection, the random projections stored with the run, and the full gradient; with
the measured cost of each."""

from __future__ import annotations

import streamlit as st

from dashboard import common, state, widgets
from gradlens.figures import select_vs_project
from gradlens.runs.report import format_accuracy
from gradlens.selection import projection_table

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
full = common.baselines(db, run, "exact", ver)[1]
proj = projection_table(exact, projected)
if proj.empty:
    st.info(
        "This run stores no projections: compute it with e.g. `--project sjlt:0.01` to compare "
        "random projections with selection."
    )
for metric in ("accuracy", "fidelity"):
    curves = {
        f"greedy by {metric} ({m}, in-sample)": common.greedy_curve(db, run, m, metric, ver)
        for m in ["exact", *projected]
    }
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
st.subheader("Cost (the paper's Table 2 rows)")
st.caption(
    "Each time was measured and stored with this run; *includes* says what it covers. Random "
    "projection with caching projects the gradients the compute job already holds; without "
    "caching is the paper's procedure (fresh passes per query, densified and projected), timed "
    "by `compute` on a few queries and extrapolated to the run."
)
widgets.cost_table(common.costs(db, run, ver), f"costs-{run}")
