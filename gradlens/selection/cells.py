"""Uncertainty of every single component's accuracy, for the layer heatmaps: its exact binomial
interval and the paired-bootstrap interval of its difference from the full gradient (numpy only).

Shapes as in ``gradlens.selection`` (N queries, b candidate slots, K components).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gradlens.selection.stats import bootstrap_ci
from gradlens.selection.subsets import correct, cosines
from gradlens.selection.trust import clopper_pearson, single_component_correct

if TYPE_CHECKING:
    from gradlens.store.arrays import RunArrays


@dataclass(frozen=True, eq=False)
class CellIntervals:
    """Per component c (arrays [K]): ``hits[c]`` queries retrieved by c alone out of ``n``;
    ``accuracy`` = hits / n; [``ci_lo``, ``ci_hi``] its Clopper–Pearson interval;
    [``diff_lo``, ``diff_hi``] the paired percentile bootstrap of (c − full gradient) over the
    same queries (``trust.paired_diff_ci``, same resamples for every c); ``full`` the full
    gradient's accuracy."""

    n: int
    hits: np.ndarray
    ci_lo: np.ndarray
    ci_hi: np.ndarray
    diff_lo: np.ndarray
    diff_hi: np.ndarray
    full: float

    @property
    def accuracy(self) -> np.ndarray:
        return self.hits / self.n

    @property
    def distinct(self) -> np.ndarray:
        """bool [K]: the paired interval excludes 0 (the component is better or worse than the
        full gradient on these queries)."""
        return (self.diff_lo > 0) | (self.diff_hi < 0)


def cell_intervals(
    arrays: RunArrays, draws: int = 1000, seed: int = 0, level: float = 0.95
) -> CellIntervals:
    """``CellIntervals`` of every component of ``arrays``. The K paired differences share one
    set of ``draws`` resamples (``bootstrap_ci`` over [K, N] at once), so each equals
    ``paired_diff_ci(single[c], full, draws, seed, level)``; Clopper–Pearson is solved once
    per distinct count."""
    per_comp = single_component_correct(arrays)
    k = arrays.dots.shape[2]
    cos = cosines(arrays.dots, arrays.query_sq, arrays.cand_sq, np.arange(k))
    full = correct(cos, arrays.target, arrays.valid)
    n = int(full.size)
    hits = np.count_nonzero(per_comp, axis=1)
    bounds = {int(h): clopper_pearson(int(h), n, level) for h in np.unique(hits)}
    lo, hi = (np.array([bounds[int(h)][i] for h in hits]) for i in (0, 1))
    diff = per_comp.astype(np.float64) - full.astype(np.float64)[None]
    diff_lo, diff_hi = bootstrap_ci(diff, n_boot=draws, seed=seed, level=level)
    return CellIntervals(
        n=n,
        hits=hits,
        ci_lo=lo,
        ci_hi=hi,
        diff_lo=np.asarray(diff_lo, dtype=np.float64),
        diff_hi=np.asarray(diff_hi, dtype=np.float64),
        full=float(full.mean()),
    )
