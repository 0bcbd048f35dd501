"""Plotly figure builders shared by the dashboard's pages (no Streamlit; tested on tiny arrays).

- ``curves``: greedy curves with baselines, select vs project.
- ``layers``: layer × kind grids, kind means, accuracy vs depth and vs parameter count.
- ``failures``: per-component shares of a failure's margin, candidate cosines.
"""

from gradlens.figures.curves import greedy_curve, select_vs_project
from gradlens.figures.failures import candidate_bars, share_bars
from gradlens.figures.layers import (
    depth_lines,
    kind_means,
    kind_means_bar,
    layer_kind_grid,
    params_scatter,
)

__all__ = [
    "candidate_bars",
    "depth_lines",
    "greedy_curve",
    "kind_means",
    "kind_means_bar",
    "layer_kind_grid",
    "params_scatter",
    "select_vs_project",
    "share_bars",
]
