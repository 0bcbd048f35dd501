"""Layer heatmaps: every component's single-component retrieval accuracy as a layer × kind grid
(click a square to make it the subset; hover for its intervals; the components not
distinguishable from the full gradient faded), both query settings side by side when the
database holds two runs of the same model and data; below, the mean or median per kind (paper's
Table 1), accuracy vs depth (Fig. 3) and vs parameter count (Fig. 2)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common, state, widgets
from gradlens.figures import (
    depth_lines,
    kind_means,
    kind_means_bar,
    layer_kind_grid,
    params_scatter,
)


def color_range(panels: list[common.RunPanel], shared: bool) -> tuple[float, float] | None:
    """One colour range over every panel's accuracies when ``shared``, else None (each grid
    spans its own)."""
    if not shared:
        return None
    values = pd.concat([pd.Series(p.single) for p in panels])
    return float(values.min()), float(values.max())


def draw_grid(panel: common.RunPanel, selected: set[str], crange, col) -> tuple[str, object]:
    """``panel``'s layer × kind grid in ``col``, the current subset outlined, the cells not
    distinguishable from the full gradient faded when asked; returns the chart's key and its
    selection event."""
    names = panel.arrays.names
    fig = layer_kind_grid(
        panel.single,
        panel.arrays.layers,
        panel.arrays.kinds,
        names,
        panel.arrays.known_n_params,
        panel.chance,
        panel.full,
        selected={i for i, n in enumerate(names) if n in selected},
        title=panel.label,
        color_range=crange,
        cells=panel.cells,
        fade=fade,
    )
    key = f"heatmap_grid::{panel.info.name}::{panel.method}"
    with col:
        event = st.plotly_chart(
            fig, width="stretch", on_select="rerun", selection_mode="points", key=key
        )
    return key, event


ctx = state.context()
current = common.run_panel(ctx, ctx.info)
names = current.arrays.names

st.title("Layer heatmaps")
st.caption(
    "Each square is one weight matrix: how often the cosine of its gradient alone retrieves the "
    "query's original among the BM25 candidates. Rows are layers (depth, top = input side) and "
    "the model-wide matrices (embeddings, head); columns are kinds. Click a square (or pick "
    "below) to make that component the subset the other pages use."
)
partner = widgets.partner_run(ctx, "heatmap_compare")
panels = [current] + ([common.run_panel(ctx, partner)] if partner is not None else [])
v = state.view()

widgets.component_picker(
    names,
    lambda c: f"{names[c]} (accuracy {current.single[c]:.4f})",
    key="heatmap_picker",
    routed_key="heatmap_pick",
)
shared = len(panels) == 2 and st.checkbox(
    "One colour scale for both grids",
    key="heatmap_shared_scale",
    help="off: each grid spans its own run's range (differences within a run stand out); "
    "on: equal colours mean equal accuracy across the two runs",
)
fade = st.checkbox(
    "Fade the components not distinguishable from the full gradient",
    value=True,
    key="heatmap_fade",
    help="faded: the paired bootstrap interval of (component − full gradient) over the same "
    "queries includes 0, so these queries cannot tell the component from the full gradient",
)
selected = {names[c] for c in v.subset}
cols = st.columns(len(panels)) if len(panels) > 1 else [st.container()]
crange = color_range(panels, shared)
events = [draw_grid(p, selected, crange, col) for p, col in zip(panels, cols, strict=True)]
st.caption(
    "Colour is scaled to "
    + ("the two runs' joint range" if shared else "each run's own range")
    + " (not 0–1), so small differences show; the colour bar marks chance (the mean over "
    "queries of 1/candidates) and the full gradient's accuracy where they fall inside it. "
    "Outlined: the current subset. Hover for the name, the accuracy with its exact "
    "(Clopper–Pearson) 95 % interval, its paired interval against the full gradient and the "
    "parameter count; the note under each grid counts the components that differ from the full "
    "gradient (paired interval excludes 0)."
)
for (key, event), p in zip(events, panels, strict=True):
    widgets.select_clicked(key, event, p.arrays.names, names)

st.subheader("Accuracy per kind (the paper's Table 1)")
stat = st.radio("Statistic over the layers", ("mean", "median"), horizontal=True, key="kind_stat")
means = {p.short: kind_means(p.single, p.arrays.kinds, stat) for p in panels}
table = pd.DataFrame(means).rename_axis("kind").reset_index()
st.caption(
    f"The {stat} single-component accuracy of each kind over its layers, one column per run "
    "shown above. The paper's Table 1 reports means, except its K cell for paraphrased "
    "queries (0.916), a median."
)
left, right = st.columns([2, 3])
with left:
    number = {c: st.column_config.NumberColumn(format="%.4f") for c in means}
    widgets.table(table, f"kind-means-{ctx.info.name}", column_config=number)
right.plotly_chart(kind_means_bar(means, stat), width="stretch", key="heatmap_kind_bars")

st.subheader("Accuracy vs depth")
st.caption(
    "One line per kind across layers (the paper's Fig. 3); the embeddings (left) and the head "
    "(right) are single diamonds."
)
widgets.side_by_side(
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
    widgets.side_by_side(
        sized,
        lambda p: params_scatter(
            p.single, p.arrays.known_n_params, p.arrays.kinds, p.arrays.names, title=p.label
        ),
        "heatmap_params",
    )
else:
    st.caption("Accuracy vs parameter count: not shown, this run does not record parameter counts.")
