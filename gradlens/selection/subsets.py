"""Scores of one component subset over cached per-component scalars (numpy only).

Shapes used throughout the selection package (N queries, b candidates per query, K components):

- ``dots[N, b, K]``: ``<g_c(q_i), g_c(s_ij)>`` (float64).
- ``query_sq[N, K]``: ``|g_c(q_i)|²``.
- ``cand_sq[N, b, K]``: ``|g_c(s_ij)|²``.
- ``target[N]`` (int): position of query i's original among its b candidates.
- ``valid[N, b]`` (bool, optional): False for padding slots of queries with fewer than b
  candidates; an invalid slot never wins and is left out of fidelity. Default: all True.

For a subset S of components (docs/design.md, "Cosine of a subset"):
``cos_S(i, j) = Σ_S dot / (sqrt(Σ_S query_sq · Σ_S cand_sq) + EPS)``, and query i is retrieved
correctly when ``cos_S(i, target) > max_{j ≠ target} cos_S(i, j)`` (strict; with b = 1 always True).

Internally (``Prepared``) candidates are permuted so the original sits in slot 0 and arrays are
laid out as ``[K, b, N]`` so that one greedy step over R remaining components is a handful of
whole-array ops on ``[R, b, N]`` blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: Added to ``sqrt(Σ_S query_sq · Σ_S cand_sq)`` so an all-zero subset gives cos 0 instead of NaN.
#: 1e-12 is negligible next to any real gradient norm product; on the paper's released data every
#: EPS in {0, 1e-12, 1e-8, 1e-6} reproduces all published accuracies exactly (smallest sqnorm there
#: is 2.4e-3, and no two candidates tie exactly), so the choice only matters for zero gradients.
EPS: float = 1e-12

Objective = Literal["accuracy", "fidelity"]
#: A component subset: component indices int[m] or a bool mask [K].
Subset = Sequence[int] | np.ndarray


def check_shapes(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Return float64 ``dots[N,b,K]``, ``query_sq[N,K]``, ``cand_sq[N,b,K]``, int ``target[N]``,
    bool ``valid[N,b]``; raise ValueError on inconsistent shapes or an invalid target slot."""
    dots = np.asarray(dots, dtype=np.float64)
    query_sq = np.asarray(query_sq, dtype=np.float64)
    cand_sq = np.asarray(cand_sq, dtype=np.float64)
    if dots.ndim != 3:
        raise ValueError(f"dots must have shape [N, b, K], got {dots.shape}")
    n, b, k = dots.shape
    if query_sq.shape != (n, k):
        raise ValueError(f"query_sq must have shape {(n, k)}, got {query_sq.shape}")
    if cand_sq.shape != (n, b, k):
        raise ValueError(f"cand_sq must have shape {(n, b, k)}, got {cand_sq.shape}")
    if valid is None:
        valid = np.ones((n, b), dtype=bool)
    else:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (n, b):
            raise ValueError(f"valid must have shape {(n, b)}, got {valid.shape}")
    if target is not None:
        target = np.asarray(target)
        if target.shape != (n,) or not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"target must be an int array of shape {(n,)}, got {target.shape}")
        if n and (target.min() < 0 or target.max() >= b):
            raise ValueError(f"target must lie in [0, {b}), got values outside")
        if n and not valid[np.arange(n), target].all():
            bad = int(np.flatnonzero(~valid[np.arange(n), target])[0])
            raise ValueError(f"target slot of query {bad} is marked invalid")
    return dots, query_sq, cand_sq, target, valid


def subset_indices(subset: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Component indices int[m] from a sequence of indices or a bool mask [K]."""
    arr = np.asarray(subset)
    if arr.dtype == bool:
        if arr.shape != (k,):
            raise ValueError(f"bool subset mask must have shape ({k},), got {arr.shape}")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 1:
        raise ValueError("subset must be a 1-D sequence of component indices or a bool mask")
    if arr.min() < 0 or arr.max() >= k:
        raise ValueError(f"subset indices must lie in [0, {k})")
    if np.unique(arr).size != arr.size:
        raise ValueError("subset has repeated component indices")
    return arr.astype(np.int64)


def cos_from_sums(num: np.ndarray, qsum: np.ndarray, csum: np.ndarray) -> np.ndarray:
    """cos = num / (sqrt(qsum · csum) + EPS); num, csum [..., b, N] or [N, b], qsum broadcast."""
    den = qsum * csum
    np.sqrt(den, out=den)
    den += EPS
    return num / den


@dataclass(frozen=True, eq=False)
class Prepared:
    """Target-first ``[K, b, N]`` layout (slot 0 = original): dots, cand_sq [K,b,N];
    query_sq [K,N]; valid [b,N].

    Invalid slots hold zeros in dots and cand_sq (so their cos is 0 and drops out of fidelity
    sums)."""

    dots: np.ndarray
    query_sq: np.ndarray
    cand_sq: np.ndarray
    valid: np.ndarray

    @property
    def all_valid(self) -> bool:
        return bool(self.valid.all())

    def take(self, queries: np.ndarray) -> Prepared:
        """Restrict to a subset of queries (int[n])."""
        return Prepared(
            dots=np.ascontiguousarray(self.dots[:, :, queries]),
            query_sq=np.ascontiguousarray(self.query_sq[:, queries]),
            cand_sq=np.ascontiguousarray(self.cand_sq[:, :, queries]),
            valid=np.ascontiguousarray(self.valid[:, queries]),
        )


def prepare(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray | None,
) -> Prepared:
    dots, query_sq, cand_sq, target, valid = check_shapes(dots, query_sq, cand_sq, target, valid)
    b = dots.shape[1]
    # stable sort puts the original first, the other candidates keep their order
    perm = np.argsort(np.arange(b)[None, :] != target[:, None], axis=1, kind="stable")
    v = np.take_along_axis(valid, perm, axis=1)
    d = np.take_along_axis(dots, perm[:, :, None], axis=1) * v[:, :, None]
    c = np.take_along_axis(cand_sq, perm[:, :, None], axis=1) * v[:, :, None]
    return Prepared(
        dots=np.ascontiguousarray(d.transpose(2, 1, 0)),
        query_sq=np.ascontiguousarray(query_sq.T),
        cand_sq=np.ascontiguousarray(c.transpose(2, 1, 0)),
        valid=np.ascontiguousarray(v.T),
    )


def correct_first(cos: np.ndarray, v: np.ndarray, all_valid: bool) -> np.ndarray:
    """bool[..., N] from target-first cos[..., b, N]: slot 0 strictly beats every valid other.

    Overwrites invalid slots of ``cos`` with -inf."""
    if cos.shape[-2] == 1:
        return np.ones(cos.shape[:-2] + cos.shape[-1:], dtype=bool)
    if not all_valid:
        np.copyto(cos, -np.inf, where=~v)
    return cos[..., 0, :] > cos[..., 1:, :].max(axis=-2)


def fidelity_to(cos: np.ndarray, full: np.ndarray, full_norm: float) -> np.ndarray:
    """Cosine between each cos[..., b, N] and full[b, N] (invalid entries are 0 in both)."""
    num = np.einsum("...bn,bn->...", cos, full)
    norm = np.sqrt(np.einsum("...bn,...bn->...", cos, cos)) * full_norm
    return np.divide(num, norm, out=np.zeros_like(num), where=norm > 0)


def full_cos(p: Prepared) -> tuple[np.ndarray, float]:
    """cos over all K components [b, N] (0 at invalid slots) and its L2 norm."""
    full = cos_from_sums(p.dots.sum(axis=0), p.query_sq.sum(axis=0)[None, :], p.cand_sq.sum(axis=0))
    full = np.where(p.valid, full, 0.0)
    return full, float(np.sqrt(np.einsum("bn,bn->", full, full)))


def cosines(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    subset: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """cos_S [N, b] for subset S (component indices or bool mask [K])."""
    dots, query_sq, cand_sq, _, _ = check_shapes(dots, query_sq, cand_sq)
    idx = subset_indices(subset, dots.shape[2])
    num = dots[:, :, idx].sum(axis=-1)
    qsum = query_sq[:, idx].sum(axis=-1)
    csum = cand_sq[:, :, idx].sum(axis=-1)
    return cos_from_sums(num, qsum[:, None], csum)


def correct(cos: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """bool[N]: cos[i, target[i]] > max of cos[i, j] over valid j ≠ target[i] (strict).

    cos [N, b]; a query with no valid other candidate (e.g. b = 1) counts as correct."""
    cos = np.asarray(cos, dtype=np.float64)
    n, b = cos.shape
    target = np.asarray(target)
    valid = np.ones((n, b), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    rows = np.arange(n)
    if n and not valid[rows, target].all():
        raise ValueError("target slot marked invalid")
    others = valid.copy()
    others[rows, target] = False
    other_max = np.where(others, cos, -np.inf).max(axis=1, initial=-np.inf)
    return cos[rows, target] > other_max


def accuracy(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    subset: Sequence[int] | np.ndarray,
    valid: np.ndarray | None = None,
) -> float:
    """Retrieval accuracy of subset S: mean over queries of ``correct`` (the documented API)."""
    dots, query_sq, cand_sq, target, valid = check_shapes(dots, query_sq, cand_sq, target, valid)
    if dots.shape[0] == 0:
        return float("nan")
    cos = cosines(dots, query_sq, cand_sq, subset)
    return float(correct(cos, target, valid).mean())


def fidelity(
    dots: np.ndarray, query_sq: np.ndarray, cand_sq: np.ndarray, subset: Subset, *, valid=None
) -> float:
    """Cosine between the vector of cos_S over all valid (query, candidate) pairs and the same
    vector for S = all K components (paper's Fig. 5 fidelity). 0 when either vector is zero.
    ``valid`` [N,b] as in ``accuracy``."""
    dots, query_sq, cand_sq, _, valid = check_shapes(dots, query_sq, cand_sq, None, valid)
    a = cosines(dots, query_sq, cand_sq, subset)[valid]
    w = cosines(dots, query_sq, cand_sq, np.arange(dots.shape[2]))[valid]
    den = float(np.linalg.norm(a) * np.linalg.norm(w))
    return float(a @ w) / den if den > 0 else 0.0


def per_component_accuracy(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """float[K]: accuracy of each single component."""
    p = prepare(dots, query_sq, cand_sq, target, valid)
    if p.dots.shape[2] == 0:
        return np.full(p.dots.shape[0], np.nan)
    cos = cos_from_sums(p.dots, p.query_sq[:, None, :], p.cand_sq)
    return correct_first(cos, p.valid, p.all_valid).mean(axis=-1)


def bm25_top1_accuracy(
    bm25: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Fraction of queries whose original has the strictly highest BM25 score among its valid
    candidates; a tie with another candidate counts as a failure. NaN if any valid score is NaN.

    bm25 [N, b]."""
    bm25 = np.asarray(bm25, dtype=np.float64)
    n, b = bm25.shape
    valid = np.ones((n, b), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if n == 0 or np.isnan(bm25[valid]).any():
        return float("nan")
    return float(correct(bm25, target, valid).mean())
