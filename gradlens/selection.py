"""Component selection over cached per-component gradient dot products (pure numpy).

Arrays in, results out. Shapes used throughout (N queries, b candidates per query, K components):

- ``dots[N, b, K]``: ``<g_c(q_i), g_c(s_ij)>`` (float64).
- ``query_sq[N, K]``: ``|g_c(q_i)|²``.
- ``cand_sq[N, b, K]``: ``|g_c(s_ij)|²``.
- ``target[N]`` (int): position of query i's original among its b candidates.
- ``valid[N, b]`` (bool, optional): False for padding slots of queries with fewer than b
  candidates; an invalid slot never wins and is left out of fidelity. Default: all True.

For a subset S of components (DESIGN §2):
``cos_S(i, j) = Σ_S dot / (sqrt(Σ_S query_sq · Σ_S cand_sq) + EPS)``, and query i is retrieved
correctly when ``cos_S(i, target) > max_{j ≠ target} cos_S(i, j)`` (strict; with b = 1 always True).

Internally candidates are permuted so the original sits in slot 0 and arrays are laid out as
``[K, b, N]`` so that one greedy step over R remaining components is a handful of whole-array ops on
``[R, b, N]`` blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

#: Added to ``sqrt(Σ_S query_sq · Σ_S cand_sq)`` so an all-zero subset gives cos 0 instead of NaN.
#: 1e-12 is negligible next to any real gradient norm product; on the paper's released data every
#: EPS in {0, 1e-12, 1e-8, 1e-6} reproduces all published accuracies exactly (smallest sqnorm there
#: is 2.4e-3, and no two candidates tie exactly), so the choice only matters for zero gradients.
EPS: float = 1e-12

#: Elements of one ``[R, b, N]`` float64 block evaluated at once in a greedy step (cache-sized).
CHUNK_ELEMENTS: int = 1 << 16


Objective = Literal["accuracy", "fidelity"]

__all__ = [
    "EPS",
    "HeldOut",
    "Step",
    "accuracy",
    "bm25_top1_accuracy",
    "bootstrap_ci",
    "correct",
    "cosines",
    "fidelity",
    "greedy_select",
    "headline",
    "kfold_greedy",
    "layer_kind_table",
    "parameter_curve",
    "per_component_accuracy",
]


# --------------------------------------------------------------------------------------------
# validation and internal layout


def _check_shapes(
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


def _subset_indices(subset: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
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


def _cos(num: np.ndarray, qsum: np.ndarray, csum: np.ndarray) -> np.ndarray:
    """cos = num / (sqrt(qsum · csum) + EPS); num, csum [..., b, N] or [N, b], qsum broadcast."""
    den = qsum * csum
    np.sqrt(den, out=den)
    den += EPS
    return num / den


@dataclass(frozen=True, eq=False)
class _Prepared:
    """Target-first ``[K, b, N]`` layout: D, C [K,b,N]; Q [K,N]; V [b,N] (slot 0 = original).

    Invalid slots hold zeros in D and C (so their cos is 0 and drops out of fidelity sums)."""

    D: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    V: np.ndarray

    @property
    def all_valid(self) -> bool:
        return bool(self.V.all())

    def take(self, queries: np.ndarray) -> _Prepared:
        """Restrict to a subset of queries (int[n])."""
        return _Prepared(
            D=np.ascontiguousarray(self.D[:, :, queries]),
            Q=np.ascontiguousarray(self.Q[:, queries]),
            C=np.ascontiguousarray(self.C[:, :, queries]),
            V=np.ascontiguousarray(self.V[:, queries]),
        )


def _prepare(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray | None,
) -> _Prepared:
    dots, query_sq, cand_sq, target, valid = _check_shapes(dots, query_sq, cand_sq, target, valid)
    b = dots.shape[1]
    # stable sort puts the original first, the other candidates keep their order
    perm = np.argsort(np.arange(b)[None, :] != target[:, None], axis=1, kind="stable")
    v = np.take_along_axis(valid, perm, axis=1)
    d = np.take_along_axis(dots, perm[:, :, None], axis=1) * v[:, :, None]
    c = np.take_along_axis(cand_sq, perm[:, :, None], axis=1) * v[:, :, None]
    return _Prepared(
        D=np.ascontiguousarray(d.transpose(2, 1, 0)),
        Q=np.ascontiguousarray(query_sq.T),
        C=np.ascontiguousarray(c.transpose(2, 1, 0)),
        V=np.ascontiguousarray(v.T),
    )


def _correct_first(cos: np.ndarray, v: np.ndarray, all_valid: bool) -> np.ndarray:
    """bool[..., N] from target-first cos[..., b, N]: slot 0 strictly beats every valid other.

    Overwrites invalid slots of ``cos`` with -inf."""
    if cos.shape[-2] == 1:
        return np.ones(cos.shape[:-2] + cos.shape[-1:], dtype=bool)
    if not all_valid:
        np.copyto(cos, -np.inf, where=~v)
    return cos[..., 0, :] > cos[..., 1:, :].max(axis=-2)


def _fid(cos: np.ndarray, full: np.ndarray, full_norm: float) -> np.ndarray:
    """Cosine between each cos[..., b, N] and full[b, N] (invalid entries are 0 in both)."""
    num = np.einsum("...bn,bn->...", cos, full)
    norm = np.sqrt(np.einsum("...bn,...bn->...", cos, cos)) * full_norm
    return np.divide(num, norm, out=np.zeros_like(num), where=norm > 0)


def _full_cos(p: _Prepared) -> tuple[np.ndarray, float]:
    """cos over all K components [b, N] (0 at invalid slots) and its L2 norm."""
    full = _cos(p.D.sum(axis=0), p.Q.sum(axis=0)[None, :], p.C.sum(axis=0))
    full = np.where(p.V, full, 0.0)
    return full, float(np.sqrt(np.einsum("bn,bn->", full, full)))


# --------------------------------------------------------------------------------------------
# basic scores


def cosines(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    subset: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """cos_S [N, b] for subset S (component indices or bool mask [K])."""
    dots, query_sq, cand_sq, _, _ = _check_shapes(dots, query_sq, cand_sq)
    idx = _subset_indices(subset, dots.shape[2])
    num = dots[:, :, idx].sum(axis=-1)
    qsum = query_sq[:, idx].sum(axis=-1)
    csum = cand_sq[:, :, idx].sum(axis=-1)
    return _cos(num, qsum[:, None], csum)


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
    """Retrieval accuracy of subset S: mean over queries of ``correct`` (DESIGN §4 contract)."""
    dots, query_sq, cand_sq, target, valid = _check_shapes(dots, query_sq, cand_sq, target, valid)
    if dots.shape[0] == 0:
        return float("nan")
    cos = cosines(dots, query_sq, cand_sq, subset)
    return float(correct(cos, target, valid).mean())


def fidelity(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    subset: Sequence[int] | np.ndarray,
    valid: np.ndarray | None = None,
) -> float:
    """Cosine between the vector of cos_S over all valid (query, candidate) pairs and the same
    vector for S = all K components (paper's Fig. 5 fidelity). 0 when either vector is zero."""
    dots, query_sq, cand_sq, _, valid = _check_shapes(dots, query_sq, cand_sq, None, valid)
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
    p = _prepare(dots, query_sq, cand_sq, target, valid)
    if p.D.shape[2] == 0:
        return np.full(p.D.shape[0], np.nan)
    cos = _cos(p.D, p.Q[:, None, :], p.C)
    return _correct_first(cos, p.V, p.all_valid).mean(axis=-1)


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


# --------------------------------------------------------------------------------------------
# greedy selection


@dataclass(frozen=True)
class Step:
    """One greedy step: the component added and the scores of the subset after adding it."""

    component_idx: int
    accuracy: float
    fidelity: float
    param_fraction: float


class _StepEvaluator:
    """Scores every remaining component for one greedy step, in cache-sized chunks of the
    ``[R, b, N]`` block (preallocated buffers, no per-step allocation)."""

    def __init__(self, p: _Prepared, objective: Objective) -> None:
        k_total, b, n = p.D.shape
        self.p = p
        self.objective = objective
        self.full, self.full_norm = _full_cos(p)
        self.chunk = max(1, min(k_total, CHUNK_ELEMENTS // max(1, b * n)))
        self.num_buf = np.empty((self.chunk, b, n))
        self.den_buf = np.empty((self.chunk, b, n))
        self.q_buf = np.empty((self.chunk, n))

    def scores(self, r: int, args: tuple[np.ndarray, ...]) -> np.ndarray:
        """float[r]: objective (accuracy as a count of correct queries) of adding each of the
        components [:r] of the working arrays to the running sums."""
        dw, qw, cw, sd, sq, sc = args
        p = self.p
        out = np.empty(r)
        for a in range(0, r, self.chunk):
            z = min(r, a + self.chunk)
            m = z - a
            num = np.add(dw[a:z], sd, out=self.num_buf[:m])
            den = np.add(cw[a:z], sc, out=self.den_buf[:m])
            qq = np.add(qw[a:z], sq, out=self.q_buf[:m])
            den *= qq[:, None, :]
            np.sqrt(den, out=den)
            den += EPS
            num /= den
            if self.objective == "fidelity":
                out[a:z] = _fid(num, self.full, self.full_norm)
            else:
                out[a:z] = np.count_nonzero(_correct_first(num, p.V, p.all_valid), axis=-1)
        return out


def _greedy_core(
    p: _Prepared, objective: Objective, max_steps: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy order int[k], accuracy float[k], fidelity float[k] on prepared arrays."""
    if objective not in ("accuracy", "fidelity"):
        raise ValueError(f"objective must be 'accuracy' or 'fidelity', got {objective!r}")
    k_total, b, n = p.D.shape
    steps = k_total if max_steps is None else max(0, min(int(max_steps), k_total))
    ev = _StepEvaluator(p, objective)
    # working copies, compacted by swap-remove so the remaining components are always [:r];
    # idx maps a working row to its component index (for lowest-index tie-breaking)
    dw, qw, cw = p.D.copy(), p.Q.copy(), p.C.copy()
    idx = np.arange(k_total)
    sd = np.zeros((b, n))
    sq = np.zeros(n)
    sc = np.zeros((b, n))
    order = np.empty(steps, dtype=np.int64)
    accs = np.empty(steps)
    fids = np.empty(steps)
    for step in range(steps):
        r = k_total - step
        scores = ev.scores(r, (dw, qw, cw, sd, sq, sc))
        tied = np.flatnonzero(scores == scores.max())
        pos = int(tied[np.argmin(idx[tied])])
        order[step] = idx[pos]
        sd += dw[pos]
        sq += qw[pos]
        sc += cw[pos]
        # same operations as in ev.scores, so these values equal the winning score bit for bit
        cos = _cos(sd, sq[None, :], sc)
        fids[step] = float(_fid(cos, ev.full, ev.full_norm))
        accs[step] = float(np.count_nonzero(_correct_first(cos, p.V, p.all_valid))) / n
        last = r - 1
        if pos != last:
            dw[pos] = dw[last]
            qw[pos] = qw[last]
            cw[pos] = cw[last]
            idx[pos] = idx[last]
    return order, accs, fids


def _param_fractions(order: np.ndarray, n_params: Sequence[float] | None, k: int) -> np.ndarray:
    if n_params is None:
        return np.full(order.size, np.nan)
    sizes = np.asarray(
        [np.nan if v is None else float(v) for v in n_params], dtype=np.float64
    ).reshape(-1)
    if sizes.size != k:
        raise ValueError(f"n_params must have {k} entries, got {sizes.size}")
    return np.cumsum(sizes[order]) / sizes.sum()


def greedy_select(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    objective: Objective = "accuracy",
    n_params: Sequence[float] | None = None,
    valid: np.ndarray | None = None,
    max_steps: int | None = None,
) -> list[Step]:
    """Greedy forward selection (paper's Algorithm 2), vectorised over candidates-to-add.

    Starts empty; each step adds the component whose addition maximises ``objective`` (ties go
    to the lowest component index) until all K are in (or ``max_steps``). Every Step records the
    accuracy and fidelity of the subset so far and its cumulative share of ``n_params`` [K]
    (NaN when n_params is None)."""
    p = _prepare(dots, query_sq, cand_sq, target, valid)
    if p.D.shape[2] == 0:
        raise ValueError("greedy_select needs at least one query")
    order, accs, fids = _greedy_core(p, objective, max_steps)
    fracs = _param_fractions(order, n_params, p.D.shape[0])
    return [
        Step(int(c), float(a), float(f), float(pf))
        for c, a, f, pf in zip(order, accs, fids, fracs, strict=True)
    ]


def _prefix_correct(p: _Prepared, order: np.ndarray) -> np.ndarray:
    """bool[len(order), N]: correctness of each greedy prefix of ``order`` on prepared queries."""
    _, b, n = p.D.shape
    out = np.empty((order.size, n), dtype=bool)
    sd = np.zeros((b, n))
    sq = np.zeros(n)
    sc = np.zeros((b, n))
    for i, c in enumerate(order):
        sd += p.D[c]
        sq += p.Q[c]
        sc += p.C[c]
        out[i] = _correct_first(_cos(sd, sq[None, :], sc), p.V, p.all_valid)
    return out


@dataclass(frozen=True, eq=False)
class HeldOut:
    """k-fold held-out greedy selection.

    ``correct[k-1, i]``: query i (scored on its held-out fold) is retrieved correctly by the first
    k components that greedy picked on the other folds; ``accuracy[k-1]`` = its mean over all N
    queries (each query scored once per prefix length). ``fold[i]`` is query i's fold,
    ``orders[f]`` the order selected without fold f, ``fold_accuracy[f, k-1]`` the accuracy on
    fold f alone."""

    accuracy: np.ndarray
    correct: np.ndarray
    fold: np.ndarray
    orders: tuple[tuple[int, ...], ...]
    fold_accuracy: np.ndarray

    @property
    def peak_k(self) -> int:
        """Prefix length (1-based) with the highest pooled held-out accuracy (lowest on ties)."""
        return int(np.argmax(self.accuracy)) + 1

    @property
    def peak_accuracy(self) -> float:
        return float(self.accuracy[self.peak_k - 1])


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
    p = _prepare(dots, query_sq, cand_sq, target, valid)
    n = p.D.shape[2]
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the number of queries ({n}), got {folds}")
    perm = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    for f, part in enumerate(np.array_split(perm, folds)):
        fold[part] = f
    steps = p.D.shape[0] if max_steps is None else max(0, min(int(max_steps), p.D.shape[0]))
    correct_mat = np.zeros((steps, n), dtype=bool)
    fold_acc = np.empty((folds, steps))
    orders = []
    for f in range(folds):
        test = np.flatnonzero(fold == f)
        train = np.flatnonzero(fold != f)
        order, _, _ = _greedy_core(p.take(train), objective, steps)
        held = _prefix_correct(p.take(test), order)
        correct_mat[:, test] = held
        fold_acc[f] = held.mean(axis=1)
        orders.append(tuple(int(c) for c in order))
    return HeldOut(
        accuracy=correct_mat.mean(axis=1),
        correct=correct_mat,
        fold=fold,
        orders=tuple(orders),
        fold_accuracy=fold_acc,
    )


# --------------------------------------------------------------------------------------------
# uncertainty


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
    rows = max(1, (1 << 22) // n)  # resamples per block, bounds memory at ~32 MB
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


# --------------------------------------------------------------------------------------------
# tables for reports and figures

#: Canonical column order of component kinds.
KINDS: tuple[str, ...] = (
    "embed",
    "q",
    "k",
    "v",
    "o",
    "qkv",
    "gate",
    "up",
    "down",
    "fc_in",
    "fc_out",
    "lm_head",
)


def layer_kind_table(
    values: Sequence[float] | np.ndarray,
    layers: Sequence[int | None],
    kinds: Sequence[str],
    model_label: str = "model",
) -> pd.DataFrame:
    """Pivot per-component values [K] to a layer × kind table (paper's Table 1 / Fig. 2).

    Rows: layers in increasing order, then one row ``model_label`` for model-wide components
    (layer None/NaN, e.g. embed, lm_head); columns: kinds present, in ``KINDS`` order."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values) == len(layers) == len(kinds):
        raise ValueError("values, layers and kinds must have the same length")

    def _row(layer: int | None) -> object:
        if layer is None or (isinstance(layer, float) and np.isnan(layer)) or layer is pd.NA:
            return model_label
        return int(layer)

    df = pd.DataFrame({"layer": [_row(x) for x in layers], "kind": list(kinds), "value": values})
    if df.duplicated(["layer", "kind"]).any():
        raise ValueError("two components share the same (layer, kind)")
    table = df.pivot(index="layer", columns="kind", values="value")
    layer_rows = sorted(x for x in table.index if x != model_label)
    rows = layer_rows + ([model_label] if model_label in table.index else [])
    cols = [k for k in KINDS if k in table.columns] + sorted(
        k for k in table.columns if k not in KINDS
    )
    out = table.reindex(index=pd.Index(rows, dtype=object, name="layer"), columns=cols)
    out.columns.name = "kind"
    return out


def parameter_curve(steps: Sequence[Step], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Greedy curve (paper's Figs. 4/5): columns step (1-based), component_idx, [component],
    accuracy, fidelity, param_fraction."""
    df = pd.DataFrame(
        {
            "step": np.arange(1, len(steps) + 1, dtype=np.int64),
            "component_idx": np.asarray([s.component_idx for s in steps], dtype=np.int64),
            "accuracy": np.asarray([s.accuracy for s in steps], dtype=np.float64),
            "fidelity": np.asarray([s.fidelity for s in steps], dtype=np.float64),
            "param_fraction": np.asarray([s.param_fraction for s in steps], dtype=np.float64),
        }
    )
    if names is not None:
        df.insert(2, "component", [names[i] for i in df["component_idx"]])
    return df


def headline(
    dots: np.ndarray,
    query_sq: np.ndarray,
    cand_sq: np.ndarray,
    target: np.ndarray,
    names: Sequence[str],
    valid: np.ndarray | None = None,
    n_params: Sequence[float] | None = None,
    bm25: np.ndarray | None = None,
    projected: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    folds: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
) -> pd.DataFrame:
    """Summary table for ``gradlens select``.

    Rows (column ``metric``): full gradient, best single component, greedy peak (in-sample),
    greedy peak (held-out, ``folds``-fold; skipped when folds < 2 or > N), BM25 top-1 (when bm25
    [N,b] given) and, per entry of ``projected`` (method -> (dots, query_sq, cand_sq) with the same
    N, b and target), its full-gradient accuracy. Columns: metric, detail, accuracy, ci_lo, ci_hi,
    k, param_fraction (NaN where not applicable). CIs: percentile bootstrap over queries.

    The held-out peak picks k on the pooled held-out curve itself, so it is mildly optimistic."""
    dots, query_sq, cand_sq, target, valid = _check_shapes(dots, query_sq, cand_sq, target, valid)
    n, _, k = dots.shape
    if len(names) != k:
        raise ValueError(f"names must have {k} entries, got {len(names)}")
    rows: list[dict[str, object]] = []

    def add(metric: str, detail: str, corr: np.ndarray, **extra: object) -> None:
        lo, hi = bootstrap_ci(corr, n_boot=n_boot, seed=seed, level=level)
        row: dict[str, object] = {"metric": metric, "detail": detail, "accuracy": corr.mean()}
        row |= {"ci_lo": lo, "ci_hi": hi, "k": np.nan, "param_fraction": np.nan} | extra
        rows.append(row)

    all_k = np.arange(k)
    full_corr = correct(cosines(dots, query_sq, cand_sq, all_k), target, valid)
    add(
        "full gradient",
        f"all {k} components",
        full_corr,
        k=k,
        param_fraction=1.0 if n_params is not None else np.nan,
    )

    single = per_component_accuracy(dots, query_sq, cand_sq, target, valid)
    best = int(np.argmax(single))
    best_corr = correct(cosines(dots, query_sq, cand_sq, [best]), target, valid)
    fr = _param_fractions(np.array([best]), n_params, k)[0]
    add(
        "best single component",
        names[best],
        best_corr,
        k=1,
        param_fraction=fr,
    )

    steps = greedy_select(dots, query_sq, cand_sq, target, n_params=n_params, valid=valid)
    accs = np.array([s.accuracy for s in steps])
    peak = int(np.argmax(accs))
    peak_corr = correct(
        cosines(dots, query_sq, cand_sq, [s.component_idx for s in steps[: peak + 1]]),
        target,
        valid,
    )
    add(
        "greedy peak (in-sample)",
        f"first {peak + 1} components",
        peak_corr,
        k=peak + 1,
        param_fraction=steps[peak].param_fraction,
    )

    if 2 <= folds <= n:
        held = kfold_greedy(dots, query_sq, cand_sq, target, folds=folds, seed=seed, valid=valid)
        add(
            f"greedy peak (held-out, {folds}-fold)",
            f"first {held.peak_k} components",
            held.correct[held.peak_k - 1],
            k=held.peak_k,
        )

    if bm25 is not None:
        bm = np.asarray(bm25, dtype=np.float64)
        if not np.isnan(bm[valid]).any():
            bm_corr = correct(bm, target, valid)
            add("BM25 top-1", "original ranked strictly first", bm_corr)

    for method, (pd_, pq, pc) in (projected or {}).items():
        pd_, pq, pc, _, _ = _check_shapes(pd_, pq, pc, target, valid)
        if pd_.shape != dots.shape:
            raise ValueError(
                f"projected {method!r} arrays have shape {pd_.shape}, not {dots.shape}"
            )
        pcorr = correct(cosines(pd_, pq, pc, all_k), target, valid)
        add(
            f"full gradient ({method})",
            f"all {k} components, projected",
            pcorr,
            k=k,
        )

    return pd.DataFrame(
        rows,
        columns=[
            "metric",
            "detail",
            "accuracy",
            "ci_lo",
            "ci_hi",
            "k",
            "param_fraction",
        ],
    )
