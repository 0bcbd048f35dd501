"""Layer heatmaps: every component's single-component retrieval accuracy as a layer × kind grid
(click a square to make that component the subset), both query settings side by side when the
database holds two runs of the same model and data; below, the mean per kind (paper's Table 1),
accuracy vs depth (Fig. 3) and vs parameter count (Fig. 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import common
from gradlens.figures import (
    depth_lines,
    kind_means,
    kind_means_bar,
    layer_kind_grid,
    params_scatter,
)
from gradlens.runs import read as queries
from gradlens.selection import accuracy
from gradlens.store.arrays import RunArrays

#: Session-state key through which a pick can be routed (AppTest cannot click a chart).
PICK_KEY = "heatmap_pick"
#: Last click applied per chart key, so that a click (which stays in the chart's state) is
#: applied once, not on every rerun.
APPLIED_KEY = "heatmap_applied"
NONE = "(none)"

ctx = common.context()
db, ver, info = ctx.db, ctx.ver, ctx.info


@st.cache_data(show_spinner=False)
def baselines(db: str, run: str, method: str, ver: tuple) -> tuple[float, float]:
    """(chance, full-gradient accuracy): chance = mean over queries of 1/b (b = its number of
    candidates), full = accuracy with every component."""
    a = common.arrays(db, run, method, ver)
    k = a.shape[2]
    chance = float(np.mean(1.0 / np.maximum(a.valid.sum(axis=1), 1))) if a.shape[0] else np.nan
    return chance, accuracy(*a.core, subset=np.arange(k), valid=a.valid)


@dataclass(frozen=True)
class Shown:
    """One run as drawn here: its info, method, arrays and single-component accuracy."""

    info: queries.RunInfo
    method: str
    arrays: RunArrays
    single: np.ndarray
    chance: float
    full: float

    @property
    def short(self) -> str:
        """Run name (and method when not exact): table columns and legends."""
        return self.info.name + ("" if self.method == "exact" else f" [{self.method}]")

    @property
    def label(self) -> str:
        """``short`` plus the import's filter when the name does not already say it."""
        filters = self.info.config.get("filters") or {}
        where = ", ".join(f"{k}={v}" for k, v in filters.items() if str(v) not in self.info.name)
        return f"{self.short} ({where})" if where else self.short


def shown(run: queries.RunInfo, method: str) -> Shown:
    method = method if method in run.methods else "exact"
    a = common.arrays(db, run.name, method, ver)
    single = common.single_accuracy(db, run.name, method, ver)
    chance, full = baselines(db, run.name, method, ver)
    return Shown(run, method, a, np.asarray(single, dtype=np.float64), chance, full)


# -- picks: a chart click, the session-state key, the selectbox --------------------------------
def pick(idx: int) -> None:
    common.set_view(common.view().with_subset((int(idx),)))


def apply_pick_key(k: int) -> None:
    """Apply ``st.session_state[PICK_KEY]`` (an int component index) once, then clear it."""
    value = st.session_state.get(PICK_KEY)
    if value is None:
        return
    del st.session_state[PICK_KEY]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < k:
        pick(int(value))
        st.rerun()


def clicked_names(event: object, names: list[str]) -> tuple[str, ...]:
    """Names of the components selected in a grid's chart event (customdata = index)."""
    try:
        points = event.selection.points  # type: ignore[union-attr]
    except (AttributeError, KeyError):
        return ()
    out: list[str] = []
    for p in points or []:
        c = p.get("customdata", p.get("point_index"))
        if isinstance(c, (list, tuple)):
            c = c[0] if c else None
        if c is None:
            continue
        try:
            i = int(c)
        except (TypeError, ValueError):
            continue
        if 0 <= i < len(names) and names[i] not in out:
            out.append(names[i])
    return tuple(out)


def apply_click(chart_key: str, event: object, grid_names: list[str]) -> None:
    """Make the clicked components (matched by name in the current run) the subset, once per
    click: the chart keeps its selection across reruns."""
    picked = clicked_names(event, grid_names)
    applied = st.session_state.setdefault(APPLIED_KEY, {})
    if applied.get(chart_key, ()) == picked:
        return
    applied[chart_key] = picked
    index = {n: i for i, n in enumerate(current.arrays.names)}
    subset = tuple(index[n] for n in picked if n in index)
    if subset and subset != common.view().subset:
        common.set_view(common.view().with_subset(subset))
        st.rerun()


def on_picker() -> None:
    value = st.session_state.get("heatmap_picker")
    if value is not None:
        pick(value)


def on_compare() -> None:
    value = st.session_state.get("heatmap_compare")
    common.set_view(common.view().replace(compare=None if value in (None, NONE) else value))


# -- which runs ---------------------------------------------------------------------------------
def partner_runs() -> tuple[list[queries.RunInfo], list[str]]:
    """Complete runs of the same model and data as the current one, and all other complete
    run names."""
    runs = common.run_list(db, ver)
    others = [str(n) for n in runs.loc[runs["status"] == "complete", "name"] if n != info.name]
    same = [o for o in (common.run_info(db, n, ver) for n in others) if queries.same_data(info, o)]
    return same, others


current = shown(info, ctx.view.method)
K = current.arrays.shape[2]
apply_pick_key(K)

st.title("Layer heatmaps")
st.caption(
    "Each square is one weight matrix: how often the cosine of its gradient alone retrieves the "
    "query's original among the BM25 candidates. Rows are layers (depth, top = input side) and "
    "the model-wide matrices (embeddings, head); columns are kinds. Click a square (or pick "
    "below) to make that component the subset the other pages use."
)

same, others = partner_runs()
v = common.view()
partner: queries.RunInfo | None = None
if same:
    names_same = [o.name for o in same]
    if len(same) > 1:
        st.session_state["heatmap_compare"] = v.compare if v.compare in names_same else same[0].name
        st.selectbox("Other setting", names_same, key="heatmap_compare", on_change=on_compare)
        v = common.view()
    chosen = v.compare if v.compare in names_same else names_same[0]
    partner = same[names_same.index(chosen)]
    st.caption(
        f"The database holds {len(same) + 1} runs of the same model and data (query settings): "
        "shown side by side."
    )
elif others:
    choices = [NONE] + others
    st.session_state["heatmap_compare"] = v.compare if v.compare in others else NONE
    st.selectbox(
        "Compare with",
        choices,
        key="heatmap_compare",
        on_change=on_compare,
        help="another run of this database, drawn beside this one",
    )
    v = common.view()
    if v.compare in others:
        partner = common.run_info(db, v.compare, ver)

panels = [current] + ([shown(partner, v.method)] if partner is not None else [])

# the selectbox picker: the accessible way to pick what a click picks
st.session_state["heatmap_picker"] = v.subset[0] if len(v.subset) == 1 else None
st.selectbox(
    "Pick a component",
    list(range(K)),
    index=None,
    key="heatmap_picker",
    format_func=lambda c: f"{current.arrays.names[c]} (accuracy {current.single[c]:.4f})",
    placeholder="choose a component to make it the subset",
    on_change=on_picker,
)

shared = False
if len(panels) == 2:
    shared = st.checkbox(
        "One colour scale for both grids",
        key="heatmap_shared_scale",
        help="off: each grid spans its own run's range (differences within a run stand out); "
        "on: equal colours mean equal accuracy across the two runs",
    )
crange = None
if shared:
    allv = np.concatenate([p.single for p in panels])
    crange = (float(np.nanmin(allv)), float(np.nanmax(allv)))

selected_names = {current.arrays.names[c] for c in v.subset}
cols = st.columns(len(panels)) if len(panels) > 1 else [st.container()]
events = []
for p, col in zip(panels, cols, strict=True):
    names = p.arrays.names
    fig = layer_kind_grid(
        p.single,
        p.arrays.layers,
        p.arrays.kinds,
        names,
        p.arrays.known_n_params,
        p.chance,
        p.full,
        selected={i for i, n in enumerate(names) if n in selected_names},
        title=p.label,
        color_range=crange,
    )
    key = f"heatmap_grid::{p.info.name}::{p.method}"
    with col:
        event = st.plotly_chart(
            fig, width="stretch", on_select="rerun", selection_mode="points", key=key
        )
    events.append((key, event, names))
st.caption(
    "Colour is scaled to "
    + ("the two runs' joint range" if shared else "each run's own range")
    + " (not 0–1), so small differences show; the colour bar marks chance (1/b, averaged over "
    "queries) and the full gradient's accuracy where they fall inside it. Outlined: the current "
    "subset. Hover for the name, accuracy and parameter count."
)
for key, event, names in events:
    apply_click(key, event, names)

# -- kind means, depth, parameter count ----------------------------------------------------------
st.subheader("Mean accuracy per kind")
means = {p.short: kind_means(p.single, p.arrays.kinds) for p in panels}
table = pd.DataFrame(means)
table.index.name = "kind"
table = table.reset_index()
st.caption(
    "The mean single-component accuracy of each kind over its layers (the paper's Table 1), "
    "one column per run shown above."
)
left, right = st.columns([2, 3])
with left:
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={c: st.column_config.NumberColumn(format="%.4f") for c in means},
    )
    common.download(table, f"kind-means-{info.name}")
with right:
    st.plotly_chart(kind_means_bar(means), width="stretch", key="heatmap_kind_bars")

st.subheader("Accuracy vs depth")
st.caption(
    "One line per kind across layers (the paper's Fig. 3); the embeddings (left) and the head "
    "(right) are single diamonds."
)


def side_by_side(shown: list, figure, key: str) -> None:
    """One figure per panel (``figure(panel)``), in columns when there are several."""
    cols = st.columns(len(shown)) if len(shown) > 1 else [st.container()]
    for i, (p, col) in enumerate(zip(shown, cols, strict=True)):
        col.plotly_chart(figure(p), width="stretch", key=f"{key}_{i}")


side_by_side(
    panels,
    lambda p: depth_lines(p.single, p.arrays.layers, p.arrays.kinds, title=p.label),
    "heatmap_depth",
)

sized = [p for p in panels if p.arrays.known_n_params is not None]
if sized:
    st.subheader("Accuracy vs parameter count")
    st.caption(
        "Each component at its number of parameters (log scale; the paper's Fig. 2): "
        "does a bigger matrix identify the original more often?"
    )
    side_by_side(
        sized,
        lambda p: params_scatter(
            p.single, p.arrays.known_n_params, p.arrays.kinds, p.arrays.names, title=p.label
        ),
        "heatmap_params",
    )
else:
    st.caption("Accuracy vs parameter count: not shown, this run does not record parameter counts.")
