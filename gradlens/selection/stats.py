"""Uncertainty and out-of-sample estimates for selection: bootstrap CIs and k-fold held-out
greedy (numpy only)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from gradlens.selection.greedy import greedy_component_order, prefix_correct
from gradlens.selection.subsets import Objective, prepare

#: Resample indices drawn at once by ``bootstrap_ci`` (bounds its memory at ~32 MB).
BOOTSTRAP_BLOCK_ELEMENTS: int = 1 << 22


@dataclass(frozen=True, eq=False)
class HeldOut:
    """k-fold held-out greedy selection.

    ``correct[k-1, i]``: query i (scored on its held-out fold) is retrieved correctly by the first
    k components that greedy picked on the other folds; ``accuracy[k-1]`` = its mean over all N
    queries (each query scored once per prefix length). ``fold[i]`` is query i's fold,
    ``orders[f]`` the order selected without fold f, ``fold_accuracy[f, k-1]`` the accuracy on
    fold f alone, ``train_accuracy[f, k-1]`` the in-sample accuracy of that prefix on the folds
    it was selected on.

    The held-out *curve* (``accuracy``) is a curve: its maximum picks k by looking at the
    held-out folds and is optimistic. The honest figure of "run greedy, keep its peak" is
    ``procedure_correct``: each fold keeps the k its own training part peaks at."""

    accuracy: np.ndarray
    correct: np.ndarray
    fold: np.ndarray
    orders: tuple[tuple[int, ...], ...]
    fold_accuracy: np.ndarray
    train_accuracy: np.ndarray

    @property
    def fold_k(self) -> np.ndarray:
        """int[folds]: the prefix length each fold keeps, chosen on its training part alone
        (its in-sample peak; lowest k on ties)."""
        return np.argmax(self.train_accuracy, axis=1) + 1

    @property
    def procedure_correct(self) -> np.ndarray:
        """bool[N]: query i, scored on its held-out fold f, is retrieved by the first
        ``fold_k[f]`` components of the order chosen without fold f."""
        return self.correct[self.fold_k[self.fold] - 1, np.arange(self.fold.size)]


def kfold_greedy(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    objective: Objective = "accuracy",
    valid: np.ndarray | None = None,
    max_steps: int | None = None,
) -> HeldOut:
    """Held-out greedy: split queries into ``folds`` random folds (seeded); for each fold, select
    greedily on the other folds and score that order's prefixes on the held-out fold."""
    p = prepare(dots, query_sq, cand_sq, target, valid)
    n = p.dots.shape[2]
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of queries ({n}), got {folds}")
    perm = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    for f, part in enumerate(np.array_split(perm, folds)):
        fold[part] = f
    k = p.dots.shape[0]
    steps = k if max_steps is None else max(0, min(int(max_steps), k))
    correct_mat = np.zeros((steps, n), dtype=bool)
    fold_acc = np.empty((folds, steps))
    train_acc = np.empty((folds, steps))
    orders = []

    def one_fold(f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order, accs, _ = greedy_component_order(p.take(fold != f), objective, steps)
        return order, accs, prefix_correct(p.take(fold == f), order)

    # the folds are independent and numpy releases the GIL in its array operations
    with ThreadPoolExecutor(max(1, min(folds, os.cpu_count() or 1))) as pool:
        for f, (order, accs, held) in enumerate(pool.map(one_fold, range(folds))):
            train_acc[f] = accs
            correct_mat[:, fold == f] = held
            fold_acc[f] = held.mean(axis=1)
            orders.append(tuple(int(c) for c in order))
    return HeldOut(
        accuracy=correct_mat.mean(axis=1),
        correct=correct_mat,
        fold=fold,
        orders=tuple(orders),
        fold_accuracy=fold_acc,
        train_accuracy=train_acc,
    )


@dataclass(frozen=True, eq=False)
class HeldOutEstimate:
    """Out-of-sample accuracy of the whole greedy procedure (k chosen inside each fold), over
    several fold assignments. ``per_seed[s]``: its accuracy with fold seed ``seeds[s]``;
    ``correct[i]``: fraction of seeds under which query i was retrieved (float[N]; its mean is
    ``accuracy``, and it is what the bootstrap CI resamples); ``fold_k[s, f]``: the k fold f kept
    under seed s; ``runs``: the HeldOut of each seed."""

    accuracy: float
    per_seed: np.ndarray
    correct: np.ndarray
    fold_k: np.ndarray
    seeds: tuple[int, ...]
    runs: tuple[HeldOut, ...]


def heldout_estimate(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    folds: int = 5,
    seeds: tuple[int, ...] = (0, 1, 2),
    objective: Objective = "accuracy",
    valid: np.ndarray | None = None,
) -> HeldOutEstimate:
    """``kfold_greedy`` under each seed in ``seeds``, scored as a procedure (see HeldOut)."""
    runs = tuple(
        kfold_greedy(dots, query_sq, cand_sq, target, folds, s, objective, valid) for s in seeds
    )
    per_query = np.stack([r.procedure_correct for r in runs]).astype(np.float64)
    return HeldOutEstimate(
        accuracy=float(per_query.mean()),
        per_seed=per_query.mean(axis=1),
        correct=per_query.mean(axis=0),
        fold_k=np.stack([r.fold_k for r in runs]),
        seeds=tuple(int(s) for s in seeds),
        runs=runs,
    )


def bootstrap_ci(
    correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the mean over queries (last axis) of bool[..., N].

    The same n_boot resamples of the N queries are used for every leading index (so CIs of
    different subsets are paired); they are drawn in blocks of about 4M indices, so results are
    deterministic per (seed, n_boot, N). Returns floats for 1-D input, else arrays [...]."""
    x = np.asarray(correct, dtype=np.float64)
    n = x.shape[-1]
    if n == 0:
        nan = np.full(x.shape[:-1], np.nan)
        return (float("nan"), float("nan")) if x.ndim == 1 else (nan, nan.copy())
    rng = np.random.default_rng(seed)
    means = np.empty(x.shape[:-1] + (n_boot,))
    rows = max(1, BOOTSTRAP_BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        draws = rng.integers(0, n, size=(m, n))
        offsets = (np.arange(m) * n)[:, None]
        weights = np.bincount((draws + offsets).ravel(), minlength=m * n).reshape(m, n)
        means[..., start : start + m] = x @ weights.T.astype(np.float64) / n
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=-1)
    if x.ndim == 1:
        return float(lo), float(hi)
    return lo, hi
