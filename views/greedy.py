"""Greedy selection, one step at a time: step forward/back, run to the end, reset, or edit the
subset by hand; after every change the subset's accuracy, parameter share, fidelity and (for a
greedy prefix) the fold prefixes' held-out accuracy at its size, its place on the curve (with
the stored null band and the whole procedure's held-out estimate), and the queries the change
fixed or broke."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import attribute_widgets as aw
from dashboard import common, state, widgets
from gradlens.figures import greedy_curve
from gradlens.runs.report import format_accuracy
from gradlens.runs.viewstate import OBJECTIVES
from gradlens.selection import param_fraction, subset_change

FIGURE_KEY = "greedy_figure"
NAN = float("nan")

ctx = state.context()
db, ver, run, method = ctx.db, ctx.ver, ctx.info.name, ctx.view.method
arrays = ctx.arrays
names = arrays.names


def stepper() -> common.SharedStepper:
    return common.stepper(db, run, method, state.view().objective, ver)


def step(steps: int | None) -> None:
    """Add greedy's next ``steps`` components (all the remaining ones for None)."""
    v = state.view()
    state.set_view(v.with_subset(stepper().extend(v.subset, steps)))


def reset() -> None:
    state.set_view(state.view().with_subset(()))


def edit_by_hand() -> None:
    picked = st.session_state["greedy_picker"]
    v = state.view()
    index = {n: i for i, n in enumerate(names)}
    chosen = {index[n] for n in picked}
    kept = [c for c in v.subset if c in chosen]
    added = [index[n] for n in picked if index[n] not in v.subset]
    state.set_view(v.with_subset(kept + added))


def set_objective() -> None:
    state.set_view(state.view().replace(objective=st.session_state["greedy_objective"]))


def chart(curve: pd.DataFrame, metric: str, current: tuple[float, float] | None):
    """The curve's figure, built once per session and curve: plotly takes tens of milliseconds
    to build and validate it, and a step only moves the current-subset marker (its last
    trace), so a step updates that trace alone. Kept in the session (a figure is mutable; no
    other session may see it)."""
    key = (db, run, method, metric, ver)
    held = st.session_state.get(FIGURE_KEY)
    if held is None or held[0] != key:
        lines = common.greedy_lines(db, run, method, ver) if metric == "accuracy" else {}
        band = common.null_band(db, run, method, ver)
        fig = greedy_curve(curve, metric, lines, current=(NAN, NAN), null_band=band)
        st.session_state[FIGURE_KEY] = held = (key, fig)
    x, y = current if current is not None else (NAN, NAN)
    held[1].data[-1].update(x=[x], y=[y], visible=current is not None)
    return held[1]


def last_change(subset: list[int], before: tuple[int, ...]) -> None:
    """The queries the last change of subset fixed and broke, and a way to open one."""
    change = subset_change(arrays, before, subset)
    st.subheader("What the last change did")
    st.caption(
        f"{len(change.fixed)} queries fixed, {len(change.broken)} broken (against the previous "
        "subset)."
    )
    left, right = st.columns(2)
    left.dataframe(pd.DataFrame({"fixed": change.fixed}), hide_index=True, width="stretch")
    right.dataframe(pd.DataFrame({"broken": change.broken}), hide_index=True, width="stretch")
    changed = [str(q) for q in [*change.broken, *change.fixed]]
    if changed:
        pick = st.selectbox("Open a query on the failure page", changed, key="greedy_open")
        if st.button("Open", key="greedy_open_btn"):
            common.open_failure(pick)


st.title("Greedy selection")
st.caption(
    "Each step adds the component whose addition retrieves the most originals (or keeps the "
    "subset's cosines closest to the full gradient's: fidelity); ties go to the lowest index. "
    "The curve is in-sample: chosen and scored on the same queries. The grey band is what the "
    "same greedy finds when each query's original is replaced by a random other candidate; the "
    "line *greedy, whole procedure held out* is the honest estimate of running greedy and "
    "keeping its peak (`gradlens select` stores both)."
)
objectives = OBJECTIVES + aw.full_set_objectives(ctx)
if state.view().objective not in objectives:
    state.correct_view(state.view().replace(objective="accuracy"))
st.session_state["greedy_objective"] = state.view().objective
st.radio("Objective", objectives, key="greedy_objective", horizontal=True, on_change=set_objective)
if state.view().objective not in OBJECTIVES:  # greedy by full-set recall@1, stored by select
    aw.full_set_greedy(ctx)
    st.stop()
cols = st.columns(4)
full = len(state.view().subset) >= len(names)
cols[0].button("Step forward", on_click=step, args=(1,), key="step_forward", disabled=full)
back = state.previous_subset() is None
cols[1].button("Step back", on_click=state.step_back, key="step_back", disabled=back)
cols[2].button("Run to end", on_click=step, args=(None,), key="run_to_end", disabled=full)
cols[3].button("Reset", on_click=reset, key="reset", disabled=not state.view().subset)

v = state.view()
st.session_state["greedy_picker"] = [names[c] for c in v.subset]
st.multiselect(
    "Components in the subset (add or remove by hand; order = order added)",
    names,
    key="greedy_picker",
    on_change=edit_by_hand,
)
subset = list(v.subset)
curve = common.greedy_curve(db, run, method, v.objective, ver)
frac = param_fraction(arrays, subset) if subset else None
acc, fid = stepper().subset_scores(subset) if subset else (NAN, NAN)
is_prefix = list(curve["component_idx"].iloc[: len(subset)]) == subset
held = curve["heldout_accuracy"].iloc[len(subset) - 1] if subset and is_prefix else NAN
m = st.columns(4)
m[0].metric("accuracy", format_accuracy(acc), help="fraction of queries whose original wins")
m[1].metric("parameter fraction", "–" if frac is None else f"{frac:.3%}")
m[2].metric("fidelity", format_accuracy(fid), help="cosine to the full gradient's cosines")
m[3].metric(
    "fold prefixes of size k, held out",
    format_accuracy(held),
    help="greedy rerun on each fold's training part; its first k components (a different set "
    "per fold) scored on that fold's held-out queries. Not a held-out figure for the subset "
    "shown, and its maximum over k is optimistic (k is then chosen on the held-out queries). "
    "Shown while the subset is a greedy prefix of this objective; stored by `gradlens select`.",
)
if not is_prefix:
    st.caption("The subset is no longer a greedy prefix, so no fold-prefix figure applies.")
x = frac if frac is not None else len(subset)
current = (x, acc if v.objective == "accuracy" else fid) if subset else None
st.plotly_chart(chart(curve, v.objective, current), width="stretch", key="greedy_chart")
widgets.download(curve, f"greedy-{run}-{method}-{v.objective}")
previous = state.previous_subset()
if subset and previous is not None:
    last_change(subset, previous)
