"""Stage 8, figures: plotly figure builders shared by the dashboard's pages (data in, figures
out; no Streamlit; tested on tiny arrays).

- ``style``: the shared template, colours by meaning, notes under a figure.
- ``curves``: greedy curves with baselines, select vs project.
- ``layers``: layer × kind grids (accuracy, a model's parameter counts), kind means, accuracy vs
  depth and vs parameter count.
- ``failures``: per-component shares of a failure's margin, candidate cosines.
- ``lenses``: the backward lens and input-embedding gradients; token labels for plotly.
- ``embedding``: the input-embedding experiment on random sentences (KL curves, distances,
  displacements, where the tokens went).
- ``pairs``: the pair inspector's cosine grid, per-token bars and token matrix.
- ``textdiff``: word-level differences between two texts.
"""

from gradlens.figures.curves import greedy_curve, select_vs_project
from gradlens.figures.embedding import (
    displacement_histogram,
    distance_histograms,
    kl_curves,
    move_cosines,
)
from gradlens.figures.failures import candidate_bars, share_bars
from gradlens.figures.layers import (
    depth_lines,
    kind_means,
    kind_means_bar,
    layer_kind_grid,
    params_grid,
    params_scatter,
)
from gradlens.figures.lenses import (
    backward_lens_heatmap,
    distance_lines,
    ff1_rank_figure,
    fig4_figure,
    grad_norm_bars,
    loss_line,
    optimization_animation,
    rank_check,
    shift_figure,
    shift_share_figure,
    target_cosine_heatmap,
    token_label,
)
from gradlens.figures.pairs import pair_cosine_grid, token_bars, token_cosine_heatmap

__all__ = [
    "backward_lens_heatmap",
    "candidate_bars",
    "depth_lines",
    "displacement_histogram",
    "distance_histograms",
    "distance_lines",
    "ff1_rank_figure",
    "fig4_figure",
    "grad_norm_bars",
    "greedy_curve",
    "kind_means",
    "kind_means_bar",
    "kl_curves",
    "layer_kind_grid",
    "loss_line",
    "move_cosines",
    "optimization_animation",
    "pair_cosine_grid",
    "params_grid",
    "params_scatter",
    "rank_check",
    "select_vs_project",
    "share_bars",
    "shift_figure",
    "shift_share_figure",
    "target_cosine_heatmap",
    "token_bars",
    "token_cosine_heatmap",
    "token_label",
]
