"""Full-set retrieval: each query against every training example, not only its b BM25
candidates (numpy only).

Shapes (Q queries, N training examples, K components):

- ``dots[Q, N, K]``: ``<v_c(q), v_c(t_j)>`` of an index's per-component vectors (float64);
- ``query_sq[Q, K]``, ``train_sq[N, K]``: their squared norms;
- ``original[Q]`` (int): the row of query q's original among the N training examples.

The subset cosine is the candidates' (``gradlens.selection.subsets``) over all N. The rank of the
original follows the benchmark's strict rule: a query is retrieved at rank 1 only when its
original scores strictly higher than every other example, so a tie counts against it (the
original's rank is 1 + the number of other examples scoring at least as high). Restricted to
the b candidates, "rank 1" is exactly the benchmark's ``correct``; the full set is the benchmark
with b = N, which is how greedy by full-set recall@1 reuses ``greedy_select`` and
``heldout_estimate`` (same tie rule, same folds and fold seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradlens.selection.greedy import Step, greedy_select
from gradlens.selection.stats import HeldOutEstimate, heldout_estimate
from gradlens.selection.subsets import cos_from_sums, subset_indices

#: The k of the recall@k figures reported beside MRR.
RECALL_AT: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True, eq=False)
class FullSet:
    """Per-component dots of every query with every training example (shapes in the module
    docstring)."""

    dots: np.ndarray
    query_sq: np.ndarray
    train_sq: np.ndarray
    original: np.ndarray

    def __post_init__(self) -> None:
        if self.dots.ndim != 3:
            raise ValueError(f"dots must be [Q, N, K], got shape {self.dots.shape}")
        q, n, k = self.dots.shape
        for name, shape in (("query_sq", (q, k)), ("train_sq", (n, k)), ("original", (q,))):
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"FullSet.{name} must have shape {shape}, got {getattr(self, name).shape}"
                )
        if q and (self.original.min() < 0 or self.original.max() >= n):
            raise ValueError(f"FullSet.original must lie in [0, {n})")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Q, N, K)."""
        return self.dots.shape

    def as_candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(dots [Q, N, K], query_sq [Q, K], cand_sq [Q, N, K], target [Q]): the benchmark's
        arrays with every training example a candidate of every query."""
        q, n, k = self.dots.shape
        cand_sq = np.broadcast_to(self.train_sq[None], (q, n, k))
        return self.dots, self.query_sq, cand_sq, self.original.astype(np.int64)


def full_set_cosines(fs: FullSet, subset: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """cos_S [Q, N] of every query with every training example (S = all K for None)."""
    k = fs.dots.shape[2]
    idx = np.arange(k) if subset is None else subset_indices(subset, k)
    num = fs.dots[:, :, idx].sum(axis=-1)
    qsum = fs.query_sq[:, idx].sum(axis=-1)
    tsum = fs.train_sq[:, idx].sum(axis=-1)
    return cos_from_sums(num, qsum[:, None], tsum[None, :])


def original_ranks(scores: np.ndarray, original: np.ndarray) -> np.ndarray:
    """int[Q]: 1 + the number of other examples j with ``scores[q, j] >= scores[q, original[q]]``
    (finite scores [Q, N]; the strict rule of the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    original = np.asarray(original, dtype=np.int64)
    if scores.ndim != 2 or original.shape != (scores.shape[0],):
        raise ValueError(
            f"need scores [Q, N] and original [Q], got {scores.shape}, {original.shape}"
        )
    own = scores[np.arange(scores.shape[0]), original]
    return np.count_nonzero(scores >= own[:, None], axis=1).astype(np.int64)  # itself included


@dataclass(frozen=True, eq=False)
class Retrieval:
    """The original's rank among all N for each query (``ranks`` int[Q]) and what follows."""

    ranks: np.ndarray

    def hits(self, k: int) -> np.ndarray:
        """bool[Q]: the original is in the top ``k``."""
        return self.ranks <= k

    def recall(self, k: int) -> float:
        """Fraction of queries whose original is in the top ``k`` (NaN without queries)."""
        return float(self.hits(k).mean()) if self.ranks.size else float("nan")

    @property
    def reciprocal(self) -> np.ndarray:
        """float[Q]: 1 / rank (what MRR averages and its interval resamples)."""
        return 1.0 / self.ranks

    @property
    def mrr(self) -> float:
        """Mean reciprocal rank of the originals (NaN without queries)."""
        return float(self.reciprocal.mean()) if self.ranks.size else float("nan")

    def summary(self) -> dict[str, float]:
        """``{"recall@1": ..., "recall@5": ..., "recall@10": ..., "MRR": ...}``."""
        return {f"recall@{k}": self.recall(k) for k in RECALL_AT} | {"MRR": self.mrr}


def retrieval(fs: FullSet, subset: Sequence[int] | np.ndarray | None = None) -> Retrieval:
    """The originals' full-set ranks under subset S (all K for None)."""
    return Retrieval(original_ranks(full_set_cosines(fs, subset), fs.original))


def full_set_greedy(
    fs: FullSet, n_params: Sequence[float] | None = None, max_steps: int | None = None
) -> list[Step]:
    """Greedy forward selection by full-set recall@1 (``Step.accuracy`` is the recall@1 of the
    prefix; ties to the lowest component index): ``greedy_select`` with b = N."""
    return greedy_select(*fs.as_candidates(), n_params=n_params, max_steps=max_steps)


def full_set_heldout(
    fs: FullSet, folds: int = 5, seeds: tuple[int, ...] = (0, 1, 2)
) -> HeldOutEstimate:
    """Held-out greedy by full-set recall@1, scored as a whole procedure (each fold keeps the
    prefix length its training part peaks at), over the same folds and fold seeds as the
    benchmark's ``heldout_estimate``."""
    return heldout_estimate(*fs.as_candidates(), folds=folds, seeds=seeds)
