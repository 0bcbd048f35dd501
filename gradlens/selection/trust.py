"""Figures a reviewer can trust next to selected ones: exact binomial intervals, held-out
intervals that stay open at 0/N and N/N, paired differences against the full gradient, the
held-out best single component and the permutation null of a selection procedure (numpy only).

Shapes as in ``gradlens.selection`` (N queries, b candidate slots, K components); accuracy
objective throughout.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol

import numpy as np

from gradlens.selection.greedy import greedy_select
from gradlens.selection.stats import bootstrap_ci
from gradlens.selection.subsets import correct, cosines


class RunArrays(Protocol):
    """What these functions read of a run: ``gradlens.store.arrays.RunArrays`` or ``Core``."""

    dots: np.ndarray
    query_sq: np.ndarray
    cand_sq: np.ndarray
    target: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, eq=False)
class Core:
    """dots[N,b,K], query_sq[N,K], cand_sq[N,b,K], target[N], valid[N,b] (checked shapes, as
    ``subsets.check_shapes`` returns them): the arrays the functions here read."""

    dots: np.ndarray
    query_sq: np.ndarray
    cand_sq: np.ndarray
    target: np.ndarray
    valid: np.ndarray


#: ``null_hi`` is this quantile (numpy's linear method) of the null draws' selected accuracy.
NULL_QUANTILE: float = 0.95
#: Quantiles of the null band drawn around a curve (per prefix size or per component).
NULL_BAND: tuple[float, float] = (0.05, 0.95)

Procedure = Literal["best_single", "greedy_peak"]
PROCEDURES: tuple[str, ...] = ("best_single", "greedy_peak")


def _bisect_tail(k: int, n: int, alpha: float, upper: bool) -> float:
    """The p in (0, 1) where P(X >= k) (``upper``; rises with p) or P(X <= k) (falls with p),
    X ~ Binomial(n, p), equals ``alpha``: bisection down to adjacent floats, the tail summed in
    float64 from log-space terms."""
    j = np.arange(k, n + 1) if upper else np.arange(0, k + 1)
    log_comb = math.lgamma(n + 1) - np.array(
        [math.lgamma(i + 1) + math.lgamma(n - i + 1) for i in j]
    )
    lo, hi = 0.0, 1.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            return mid
        tail = np.exp(log_comb + j * math.log(mid) + (n - j) * math.log1p(-mid)).sum()
        if (tail > alpha) == upper:
            hi = mid
        else:
            lo = mid


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for k successes out of n: ``lo`` solves
    P(X >= k | lo) = (1 - level)/2 and ``hi`` solves P(X <= k | hi) = (1 - level)/2, i.e. the
    Beta(k, n-k+1) and Beta(k+1, n-k) quantiles. ``lo = 0`` at k = 0 and ``hi = 1`` at k = n
    (the other bound in closed form there, e.g. 124/124 -> lo = 0.025^(1/124) = 0.97067);
    interior bounds by bisection on the binomial tail (within 1e-12). (NaN, NaN) when n = 0."""
    k, n = int(k), int(n)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else alpha ** (1.0 / n) if k == n else _bisect_tail(k, n, alpha, True)
    hi = 1.0 if k == n else 1.0 - alpha ** (1.0 / n) if k == 0 else _bisect_tail(k, n, alpha, False)
    return lo, hi


def heldout_ci(
    correct_frac: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Interval for a held-out accuracy from per-query outcomes ``correct_frac`` [N] (bool, or
    the fraction of fold seeds under which each query was retrieved): the hull of the
    percentile bootstrap over queries (``bootstrap_ci``, same resamples as the other rows) and
    the Clopper–Pearson interval of the retrieved count (rounded down for the lower bound, up
    for the upper one when the seeds disagree).

    Why the hull: the percentile bootstrap collapses to a point when every query agrees (0/N,
    N/N) and is short near those edges, where the binomial is skewed; Clopper–Pearson is exact
    for a count of independent successes, but a held-out figure averaged over folds and fold
    seeds is not quite such a count, and the bootstrap follows its actual per-query spread.
    The hull keeps the coverage of whichever is wider, so it is never narrower than
    Clopper–Pearson (anywhere, in particular at 0/N and N/N) nor than the bootstrap."""
    x = np.asarray(correct_frac, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"correct_frac must be 1-D [N], got shape {x.shape}")
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    boot_lo, boot_hi = bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level)
    total = round(float(x.sum()), 9)
    cp_lo = clopper_pearson(math.floor(total), n, level)[0]
    cp_hi = clopper_pearson(math.ceil(total), n, level)[1]
    return min(boot_lo, cp_lo), max(boot_hi, cp_hi)


def paired_diff_ci(
    correct_row: np.ndarray,
    correct_full: np.ndarray,
    draws: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Paired percentile bootstrap of (row − full gradient) accuracy: each of ``draws`` resamples
    of the N queries scores both on the same queries (the resamples of ``bootstrap_ci`` with
    the same seed and draws, so it pairs with the rows' own intervals). Inputs [N], bool or
    per-query fractions (a held-out row's ``correct``)."""
    row = np.asarray(correct_row, dtype=np.float64)
    full = np.asarray(correct_full, dtype=np.float64)
    if row.shape != full.shape or row.ndim != 1:
        raise ValueError(f"need two [N] arrays of equal shape, got {row.shape} and {full.shape}")
    return bootstrap_ci(row - full, n_boot=draws, seed=seed, level=level)


def single_component_cosines(arrays: RunArrays) -> np.ndarray:
    """cos [K, N, b] of every single component (``cosines`` of the subset {c} for each c)."""
    k = arrays.dots.shape[2]
    return np.stack([cosines(arrays.dots, arrays.query_sq, arrays.cand_sq, [c]) for c in range(k)])


def _correct_each(cos1: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """bool[K, N]: ``correct`` of each component's cos [N, b] (one call over all K)."""
    k, n, b = cos1.shape
    flat = correct(cos1.reshape(k * n, b), np.tile(target, k), np.tile(valid, (k, 1)))
    return flat.reshape(k, n)


def single_component_correct(arrays: RunArrays) -> np.ndarray:
    """bool[K, N]: query i is retrieved by component c alone (its row mean is
    ``per_component_accuracy``)."""
    return _correct_each(single_component_cosines(arrays), arrays.target, arrays.valid)


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """int[N]: each query's fold, as ``kfold_greedy`` splits them (a seeded permutation cut
    into ``folds`` near-equal parts)."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of queries ({n}), got {folds}")
    fold = np.empty(n, dtype=np.int64)
    for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
        fold[part] = f
    return fold


@dataclass(frozen=True, eq=False)
class HeldOutSingle:
    """Out-of-sample accuracy of "keep the best single component", built like greedy's
    whole-procedure estimate: under each fold seed, each fold keeps the component with the most
    retrieved queries on the other folds (lowest index on ties) and is scored with it.

    ``accuracy``: mean of ``correct``; ``per_seed[s]``: the accuracy under fold seed
    ``seeds[s]``; ``correct[i]``: fraction of seeds under which held-out query i was retrieved
    (float[N], what intervals and paired differences resample); ``correct_by_seed`` bool[S, N];
    ``fold`` int[S, N]: each query's fold per seed; ``fold_component`` int[S, folds]: the
    component each fold kept."""

    accuracy: float
    per_seed: np.ndarray
    correct: np.ndarray
    correct_by_seed: np.ndarray
    fold: np.ndarray
    fold_component: np.ndarray
    seeds: tuple[int, ...]


def heldout_best_single(
    arrays: RunArrays, folds: int = 5, seeds: tuple[int, ...] = (0, 1, 2)
) -> HeldOutSingle:
    """Held-out best single component over the folds of ``kfold_greedy`` for each seed in
    ``seeds`` (see HeldOutSingle). A single component's verdict on a query depends on that query
    alone, so the K × N verdicts are computed once and every fold reads its parts."""
    per_comp = single_component_correct(arrays)
    n = per_comp.shape[1]
    fold = np.stack([fold_assignment(n, folds, s) for s in seeds])
    chosen = np.empty((len(seeds), folds), dtype=np.int64)
    hits = np.empty((len(seeds), n), dtype=bool)
    for s in range(len(seeds)):
        for f in range(folds):
            held = fold[s] == f
            chosen[s, f] = int(np.argmax(np.count_nonzero(per_comp[:, ~held], axis=1)))
            hits[s, held] = per_comp[chosen[s, f], held]
    frac = hits.mean(axis=0)
    return HeldOutSingle(
        accuracy=float(frac.mean()),
        per_seed=hits.mean(axis=1),
        correct=frac,
        correct_by_seed=hits,
        fold=fold,
        fold_component=chosen,
        seeds=tuple(int(s) for s in seeds),
    )


def permuted_targets(target: np.ndarray, valid: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """int[draws, N]: per draw, each query's original replaced by one of its valid non-original
    slots, uniformly, independently per query and per draw. One call
    ``default_rng(seed).integers(0, max(m_i, 1), size=(draws, N))`` (m_i = query i's valid
    non-original slots) picks the rank among them, in slot order. A query with no valid other
    candidate keeps its original: there is nothing to permute, and it is retrieved under any
    target (as in the real run)."""
    target = np.asarray(target, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    n = target.size
    others = valid.copy()
    others[np.arange(n), target] = False
    counts = others.sum(axis=1)
    rank = np.cumsum(others, axis=1) - 1
    pick = np.random.default_rng(seed).integers(0, np.maximum(counts, 1), size=(draws, n))
    slot = np.argmax(others[None] & (rank[None] == pick[:, :, None]), axis=2)
    return np.where(counts > 0, slot, target[None])


@dataclass(frozen=True, eq=False)
class PermutationNull:
    """A selection procedure rerun on the run's own dots with permuted originals.

    ``scores[d]`` float[D, K]: in draw d, the accuracy of each single component
    (``best_single``) or of the greedy prefix of each size k = 1..K (``greedy_peak``);
    ``selected[d]`` its maximum (what the procedure reports); ``targets`` int[D, N] the permuted
    originals; ``null_hi`` the ``NULL_QUANTILE`` of ``selected``; ``band_lo``/``band_hi`` [K]
    the ``NULL_BAND`` quantiles of ``scores`` per column (the greedy chart's null band)."""

    procedure: str
    scores: np.ndarray
    targets: np.ndarray
    seed: int

    @property
    def selected(self) -> np.ndarray:
        return self.scores.max(axis=1)

    @property
    def null_hi(self) -> float:
        return float(np.quantile(self.selected, NULL_QUANTILE))

    @property
    def band_lo(self) -> np.ndarray:
        return np.quantile(self.scores, NULL_BAND[0], axis=0)

    @property
    def band_hi(self) -> np.ndarray:
        return np.quantile(self.scores, NULL_BAND[1], axis=0)


def _greedy_curve(arrays: RunArrays, target: np.ndarray) -> list[float]:
    steps = greedy_select(arrays.dots, arrays.query_sq, arrays.cand_sq, target, valid=arrays.valid)
    return [s.accuracy for s in steps]


def permutation_null(
    arrays: RunArrays,
    procedure: Procedure,
    draws: int = 20,
    seed: int = 0,
    workers: int | None = None,
) -> PermutationNull:
    """The permutation null of ``procedure`` (``best_single``: the most accurate single
    component; ``greedy_peak``: the peak of the in-sample greedy curve, ``greedy_select`` by
    accuracy over all K steps) on ``arrays``' dots, with the originals of
    ``permuted_targets(arrays.target, arrays.valid, draws, seed)``: the same targets for both
    procedures under one seed. Accuracy objective only (fidelity has no target to permute).

    Greedy draws run on ``workers`` threads (default: one per CPU, at most ``draws``); each draw
    is computed alone, so the result does not depend on ``workers``."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {PROCEDURES}, got {procedure!r}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    targets = permuted_targets(arrays.target, arrays.valid, draws, seed)
    if procedure == "best_single":
        cos1 = single_component_cosines(arrays)
        scores = np.stack([_correct_each(cos1, t, arrays.valid).mean(axis=1) for t in targets])
    else:
        threads = max(1, min(draws, workers or os.cpu_count() or 1))
        with ThreadPoolExecutor(threads) as pool:
            scores = np.array(list(pool.map(partial(_greedy_curve, arrays), targets)))
    return PermutationNull(procedure=procedure, scores=scores, targets=targets, seed=int(seed))
