"""Stage 5, selection: component selection over cached per-component gradient dot products.

Arrays in, results out (shapes in ``gradlens.selection.subsets``). Split by concern:

- ``subsets``: cosine of a subset, accuracy, fidelity, single-component accuracy, BM25 top-1.
- ``greedy``: greedy forward selection and ``GreedyStepper`` (one step at a time).
- ``stats``: bootstrap CIs, k-fold held-out greedy and the honest held-out estimate.
- ``headline``: the headline table, its row ids and types, typed access to its rows.
- ``trust``: exact and held-out intervals, paired differences, permutation nulls.
- ``cells``: every single component's exact interval and paired difference from the full
  gradient (the layer heatmaps' cells).
- ``outcomes``: what a subset does to each query (failures, steals, candidate roles, margin
  contributions, queries fixed and broken, parameter share, chance).
- ``tables``: layer × kind tables, the greedy curve, projections against the exact gradient.
"""

from gradlens.selection.greedy import GreedyStepper, Step, greedy_select
from gradlens.selection.headline import (
    BEST_SINGLE,
    BEST_SINGLE_HELDOUT,
    BM25,
    FULL,
    GREEDY_HELDOUT,
    GREEDY_PEAK,
    HELD_OUT,
    NOT_SELECTED,
    SELECTED_IN_SAMPLE,
    Headline,
    HeadlineRow,
    build_headline,
    headline,
    headline_row,
    headline_rows,
    indistinguishable,
    projection_id,
    versus_full,
)
from gradlens.selection.outcomes import (
    SubsetChange,
    candidate_roles,
    chance,
    component_shares,
    failures,
    margin_contributions,
    param_fraction,
    query_table,
    retrieved,
    steals,
    subset_change,
)
from gradlens.selection.stats import (
    HeldOut,
    HeldOutEstimate,
    bootstrap_ci,
    heldout_estimate,
    kfold_greedy,
)
from gradlens.selection.subsets import (
    EPS,
    Objective,
    Subset,
    accuracy,
    bm25_top1_accuracy,
    correct,
    cosines,
    fidelity,
    per_component_accuracy,
)
from gradlens.selection.tables import greedy_curve_table, layer_kind_table, projection_table

__all__ = [
    "BEST_SINGLE",
    "BEST_SINGLE_HELDOUT",
    "BM25",
    "EPS",
    "FULL",
    "GREEDY_HELDOUT",
    "GREEDY_PEAK",
    "HELD_OUT",
    "NOT_SELECTED",
    "SELECTED_IN_SAMPLE",
    "GreedyStepper",
    "Headline",
    "HeadlineRow",
    "HeldOut",
    "HeldOutEstimate",
    "Objective",
    "Step",
    "Subset",
    "SubsetChange",
    "accuracy",
    "bm25_top1_accuracy",
    "bootstrap_ci",
    "build_headline",
    "candidate_roles",
    "chance",
    "component_shares",
    "correct",
    "cosines",
    "failures",
    "fidelity",
    "greedy_curve_table",
    "greedy_select",
    "headline",
    "headline_row",
    "headline_rows",
    "heldout_estimate",
    "indistinguishable",
    "kfold_greedy",
    "layer_kind_table",
    "margin_contributions",
    "param_fraction",
    "per_component_accuracy",
    "projection_id",
    "projection_table",
    "query_table",
    "retrieved",
    "steals",
    "subset_change",
    "versus_full",
]
