"""Component selection over cached per-component gradient dot products.

Arrays in, results out (shapes in ``gradlens.selection.core``). Split by concern:

- ``core``: cosine of a subset, accuracy, fidelity, single-component accuracy, BM25 top-1.
- ``greedy``: greedy forward selection and ``GreedyStepper`` (one step at a time).
- ``stats``: bootstrap CIs, k-fold held-out greedy and the honest held-out estimate.
- ``tables``: pandas tables for reports and pages (headline, layer × kind, failures, shares).
"""

from gradlens.selection.core import (
    EPS,
    Objective,
    accuracy,
    bm25_top1_accuracy,
    correct,
    cosines,
    fidelity,
    per_component_accuracy,
)
from gradlens.selection.greedy import GreedyStepper, Step, greedy_select
from gradlens.selection.stats import (
    HeldOut,
    HeldOutEstimate,
    bootstrap_ci,
    heldout_estimate,
    kfold_greedy,
)
from gradlens.selection.tables import (
    component_shares,
    curve_frame,
    failures,
    headline,
    layer_kind_table,
    projection_table,
    query_table,
    steals,
)

__all__ = [
    "EPS",
    "GreedyStepper",
    "HeldOut",
    "HeldOutEstimate",
    "Objective",
    "Step",
    "accuracy",
    "bm25_top1_accuracy",
    "bootstrap_ci",
    "component_shares",
    "correct",
    "cosines",
    "curve_frame",
    "failures",
    "fidelity",
    "greedy_select",
    "headline",
    "heldout_estimate",
    "kfold_greedy",
    "layer_kind_table",
    "per_component_accuracy",
    "projection_table",
    "query_table",
    "steals",
]
