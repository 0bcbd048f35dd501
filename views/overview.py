"""Overview: what the run is (model, data, config), its headline with 95 % CIs and its costs;
both query settings side by side when the database holds two runs of the same model and data."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common
from gradlens.runs import read as queries
from gradlens.runs.report import cost_rows

ctx = common.context()
db, ver, info = ctx.db, ctx.ver, ctx.info


def headline_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The headline as displayed: accuracy with 4 decimals, CI, k, parameter share."""
    return pd.DataFrame(
        {
            "metric": table["metric"],
            "accuracy": table["accuracy"].map(common.fmt4),
            "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(table["ci_lo"], table["ci_hi"])],
            "k": table["k"].map(lambda v: "" if pd.isna(v) else f"{v:g}"),
            "params": table["param_fraction"].map(lambda v: "" if pd.isna(v) else f"{v:.2%}"),
            "detail": table["detail"],
        }
    )


def describe(run: queries.RunInfo) -> dict[str, str]:
    c = run.config
    if c.get("source") == "import":
        data = f"imported from {c.get('dots')}" + (f" ({c['filters']})" if c.get("filters") else "")
        model = "computed elsewhere"
    else:
        data = f"train {c.get('train_path')}, queries {c.get('queries_path')}"
        model = f"{c.get('model')} ({c.get('dtype', 'float32')})"
    return {
        "model": model,
        "data": data,
        "queries × candidates × components": (
            f"{run.n_queries} × {run.n_candidates} × {run.n_components}"
        ),
        "methods": ", ".join(run.methods),
        "loss": f"{c.get('loss_on', '?')} tokens, {c.get('reduction', '?')}"
        if "loss_on" in c
        else "as computed elsewhere",
        "run id": run.run_id,
    }


def show_run(run: queries.RunInfo, container) -> None:
    table, timings = common.headline(db, run.name, ver)
    with container:
        st.subheader(f"`{run.name}`")
        by = table.set_index("metric")["accuracy"]
        cols = st.columns(3)
        cols[0].metric("full gradient", common.fmt4(by.get("full gradient")))
        cols[1].metric("greedy peak (in-sample)", common.fmt4(by.get("greedy peak (in-sample)")))
        held = [m for m in by.index if m.startswith("greedy (held-out")]
        if held:
            cols[2].metric("greedy (held-out)", common.fmt4(by[held[0]]))
        shown = headline_frame(table)
        st.dataframe(shown, hide_index=True, width="stretch")
        common.download(shown, f"headline-{run.name}")
        with st.expander("Run details and cost"):
            st.table(pd.DataFrame(describe(run).items(), columns=["", "value"]))
            costs = pd.DataFrame(cost_rows(run.stats, timings), columns=["step", "measured"])
            st.dataframe(costs, hide_index=True, width="stretch")


st.title("Overview")
st.caption(
    "A query retrieves its original when the cosine between their gradients (over the chosen "
    "components) beats every other BM25 candidate. Accuracies are fractions of queries; CIs are "
    "95 % bootstrap intervals over queries. The held-out row is the accuracy of the whole "
    "procedure (greedy, keeping the peak k chosen on each fold's training part), averaged over "
    "3 fold seeds."
)
others = []
for name in common.run_list(db, ver).query("status == 'complete'")["name"]:
    if name != info.name:
        other = common.run_info(db, str(name), ver)
        if queries.same_data(info, other):
            others.append(other)
if others:
    left, right = st.columns(2)
    show_run(info, left)
    show_run(others[0], right)
else:
    complete = [str(n) for n in common.run_list(db, ver).query("status == 'complete'")["name"]]
    choices = ["(none)"] + [n for n in complete if n != info.name]
    current = ctx.view.compare if ctx.view.compare in choices else "(none)"
    pick = st.selectbox("Compare with", choices, index=choices.index(current))
    if (pick if pick != "(none)" else None) != ctx.view.compare:
        common.set_view(ctx.view.replace(compare=None if pick == "(none)" else pick))
    if pick != "(none)":
        left, right = st.columns(2)
        show_run(info, left)
        show_run(common.run_info(db, pick, ver), right)
    else:
        show_run(info, st.container())
