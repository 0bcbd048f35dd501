"""Greedy selection, one step at a time: step forward/back, run to the end, reset, or edit the
subset by hand; after every change the subset's accuracy, parameter share, fidelity and (for a
greedy prefix) held-out accuracy, its place on the curve, and the queries the change fixed or
broke."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import common
from gradlens.figures import greedy_curve
from gradlens.runs.viewstate import OBJECTIVES
from gradlens.selection import correct, cosines

FIGURE_KEY = "greedy_figure"

ctx = common.context()
db, ver, run, method = ctx.db, ctx.ver, ctx.info.name, ctx.view.method
arrays = ctx.arrays
names = arrays.names
K = len(names)


def stepper():
    return common.stepper(db, run, method, common.view().objective, ver)


def step_forward() -> None:
    v = common.view()
    nxt = stepper().next_component(v.subset)
    if nxt is not None:
        common.set_view(v.with_subset(v.subset + (nxt,)))


def run_to_end() -> None:
    v = common.view()
    subset = list(v.subset)
    while (nxt := stepper().next_component(subset)) is not None:
        subset.append(nxt)
    common.set_view(v.with_subset(subset))


def reset() -> None:
    common.set_view(common.view().with_subset(()))


def edit_by_hand() -> None:
    picked = st.session_state["greedy_picker"]
    v = common.view()
    index = {n: i for i, n in enumerate(names)}
    chosen = {index[n] for n in picked}
    kept = [c for c in v.subset if c in chosen]
    added = [index[n] for n in picked if index[n] not in v.subset]
    common.set_view(v.with_subset(kept + added))


def set_objective() -> None:
    common.set_view(common.view().replace(objective=st.session_state["greedy_objective"]))


def chart(curve: pd.DataFrame, metric: str, baselines: dict, current: tuple | None):
    """The curve's figure, built once per session and curve: plotly takes tens of milliseconds
    to build and validate it, and a step only moves the current-subset marker (its last
    trace), so a step updates that trace alone. Kept in the session (a figure is mutable; no
    other session may see it)."""
    key = (db, run, method, metric, ver, repr(sorted(baselines.items())))
    held = st.session_state.get(FIGURE_KEY)
    if held is None or held[0] != key:
        fig = greedy_curve(curve, metric=metric, baselines=baselines, current=(np.nan, np.nan))
        st.session_state[FIGURE_KEY] = held = (key, fig)
    fig = held[1]
    x, y = current if current is not None else (np.nan, np.nan)
    fig.data[-1].update(x=[x], y=[y], visible=current is not None)
    return fig


st.title("Greedy selection")
st.caption(
    "Each step adds the component whose addition retrieves the most originals (or keeps the "
    "subset's cosines closest to the full gradient's: fidelity); ties go to the lowest index. "
    "The curve is in-sample; the held-out figure scores each prefix on queries greedy did not see."
)
v = common.view()
st.session_state["greedy_objective"] = v.objective
st.radio("Objective", OBJECTIVES, key="greedy_objective", horizontal=True, on_change=set_objective)
cols = st.columns(4)
full = len(v.subset) >= K
cols[0].button("Step forward", on_click=step_forward, key="step_forward", disabled=full)
cols[1].button(
    "Step back",
    on_click=common.step_back,
    key="step_back",
    disabled=not st.session_state.get(common.HISTORY_KEY),
)
cols[2].button("Run to end", on_click=run_to_end, key="run_to_end", disabled=full)
cols[3].button("Reset", on_click=reset, key="reset", disabled=not v.subset)

v = common.view()
st.session_state["greedy_picker"] = [names[c] for c in v.subset]
st.multiselect(
    "Components in the subset (add or remove by hand; order = order added)",
    names,
    key="greedy_picker",
    on_change=edit_by_hand,
)

subset = list(v.subset)
curve = common.greedy_curve(db, run, method, v.objective, ver)
sizes = arrays.n_params
frac = float(sizes[subset].sum() / sizes.sum()) if subset and not np.isnan(sizes).any() else None
if subset:
    acc, fid = stepper().subset_scores(subset)
    order = list(curve["component_idx"])
    is_prefix = order[: len(subset)] == subset
    held = curve["heldout_accuracy"].iloc[len(subset) - 1] if is_prefix else np.nan
else:
    acc = fid = held = np.nan
    is_prefix = True
m = st.columns(4)
m[0].metric("accuracy", common.fmt4(acc), help="fraction of queries whose original wins")
m[1].metric("parameter fraction", "–" if frac is None else f"{frac:.3%}")
m[2].metric("fidelity", common.fmt4(fid), help="cosine to the full gradient's cosines")
m[3].metric(
    "held-out (k-fold)",
    common.fmt4(held),
    help="the k-fold held-out curve at this k (only while the subset is a greedy prefix "
    "of this objective; computed by `gradlens select`)",
)
if subset and not is_prefix:
    st.caption("The subset is no longer a greedy prefix, so no held-out figure applies.")

table, _ = common.headline(db, run, ver)
by = table.set_index("metric")["accuracy"]
metric = v.objective
baselines = {"chance (1/b)": 1 / arrays.shape[1]} if metric == "accuracy" else {}
if metric == "accuracy":
    baselines["full gradient"] = by.get("full gradient", np.nan)
    baselines["BM25 top-1"] = by.get("BM25 top-1", np.nan)
    for label in by.index:
        if label.startswith("full gradient ("):
            baselines[label.removeprefix("full gradient ").strip("()")] = by[label]
x = frac if frac is not None else len(subset)
current = (x, acc if metric == "accuracy" else fid) if subset else None
st.plotly_chart(chart(curve, metric, baselines, current), width="stretch", key="greedy_chart")
common.download(curve, f"greedy-{run}-{method}-{metric}")

# what the last change fixed and broke
history = st.session_state.get(common.HISTORY_KEY, [])
if subset and history:
    before = list(history[-1])
    now_ok = correct(cosines(*arrays.core[:3], subset), arrays.target, arrays.valid)
    if before:
        was_ok = correct(cosines(*arrays.core[:3], before), arrays.target, arrays.valid)
    else:
        was_ok = np.zeros_like(now_ok)
    fixed = arrays.query_ids[now_ok & ~was_ok]
    broke = arrays.query_ids[~now_ok & was_ok]
    st.subheader("What the last change did")
    st.caption(f"{len(fixed)} queries fixed, {len(broke)} broken (against the previous subset).")
    left, right = st.columns(2)
    left.dataframe(pd.DataFrame({"fixed": fixed}), hide_index=True, width="stretch")
    right.dataframe(pd.DataFrame({"broken": broke}), hide_index=True, width="stretch")
    changed = [str(q) for q in list(broke) + list(fixed)]
    if changed:
        pick = st.selectbox("Open a query on the failure page", changed, key="greedy_open")
        if st.button("Open", key="greedy_open_btn"):
            common.open_failure(pick)
