"""Greedy forward selection (paper's Algorithm 2) over prepared arrays, and a public one-step
scorer for interactive stepping (numpy only).

``GreedyStepper`` and ``greedy_select`` share one scoring routine and one way of accumulating
the running sums (in the order components were added), so stepping forward from the empty set
reproduces ``greedy_select`` bit for bit, ties included (lowest component index wins)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradlens.selection.subsets import (
    EPS,
    Objective,
    Prepared,
    correct_first,
    cos_from_sums,
    fidelity_to,
    full_cos,
    prepare,
)

#: Elements of one ``[R, b, N]`` float64 block evaluated at once in a greedy step (cache-sized).
CHUNK_ELEMENTS: int = 1 << 16


@dataclass(frozen=True)
class Step:
    """One greedy step: the component added, the scores of the subset after adding it, and that
    subset (component indices in the order greedy added them, this one last)."""

    component_idx: int
    accuracy: float
    fidelity: float
    param_fraction: float
    subset: tuple[int, ...]


@dataclass
class _RunningSums:
    """Σ over the chosen components: dots [b,N], query_sq [N], cand_sq [b,N]."""

    dots: np.ndarray
    query_sq: np.ndarray
    cand_sq: np.ndarray

    @classmethod
    def empty(cls, b: int, n: int) -> _RunningSums:
        return cls(np.zeros((b, n)), np.zeros(n), np.zeros((b, n)))

    def add(self, p: Prepared, c: int) -> None:
        self.dots += p.dots[c]
        self.query_sq += p.query_sq[c]
        self.cand_sq += p.cand_sq[c]

    def cos(self) -> np.ndarray:
        return cos_from_sums(self.dots, self.query_sq[None, :], self.cand_sq)


class StepScorer:
    """Scores components as the next greedy addition, in cache-sized chunks of the ``[R, b, N]``
    block (preallocated buffers, no per-step allocation)."""

    def __init__(self, p: Prepared, objective: Objective) -> None:
        if objective not in ("accuracy", "fidelity"):
            raise ValueError(f"objective must be 'accuracy' or 'fidelity', got {objective!r}")
        k_total, b, n = p.dots.shape
        self.p = p
        self.objective = objective
        self.full, self.full_norm = full_cos(p)
        self.chunk = max(1, min(k_total, CHUNK_ELEMENTS // max(1, b * n)))
        self._num = np.empty((self.chunk, b, n))
        self._den = np.empty((self.chunk, b, n))
        self._q = np.empty((self.chunk, n))

    def scores(
        self,
        dots: np.ndarray,
        query_sq: np.ndarray,
        cand_sq: np.ndarray,
        sums: _RunningSums,
    ) -> np.ndarray:
        """float[R]: the objective (accuracy as a count of correct queries) of adding each of R
        components, given as dots [R,b,N], query_sq [R,N], cand_sq [R,b,N], to ``sums``."""
        p = self.p
        r = dots.shape[0]
        out = np.empty(r)
        for a in range(0, r, self.chunk):
            z = min(r, a + self.chunk)
            m = z - a
            num = np.add(dots[a:z], sums.dots, out=self._num[:m])
            den = np.add(cand_sq[a:z], sums.cand_sq, out=self._den[:m])
            qq = np.add(query_sq[a:z], sums.query_sq, out=self._q[:m])
            den *= qq[:, None, :]
            np.sqrt(den, out=den)
            den += EPS
            num /= den
            if self.objective == "fidelity":
                out[a:z] = fidelity_to(num, self.full, self.full_norm)
            else:
                out[a:z] = np.count_nonzero(correct_first(num, p.valid, p.all_valid), axis=-1)
        return out

    def subset_scores(self, sums: _RunningSums) -> tuple[float, float]:
        """(accuracy, fidelity) of the subset whose sums are ``sums``; the same operations as
        ``scores``, so the values equal the winning score bit for bit."""
        cos = sums.cos()
        fid = float(fidelity_to(cos, self.full, self.full_norm))
        n = cos.shape[-1]
        acc = float(np.count_nonzero(correct_first(cos, self.p.valid, self.p.all_valid))) / n
        return acc, fid


def greedy_component_order(
    p: Prepared, objective: Objective, max_steps: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy order int[k], accuracy float[k], fidelity float[k] on prepared arrays."""
    k_total, b, n = p.dots.shape
    steps = k_total if max_steps is None else max(0, min(int(max_steps), k_total))
    scorer = StepScorer(p, objective)
    # working copies, compacted by swap-remove so the remaining components are always [:r];
    # idx maps a working row to its component index (for lowest-index tie-breaking)
    dw, qw, cw = p.dots.copy(), p.query_sq.copy(), p.cand_sq.copy()
    idx = np.arange(k_total)
    sums = _RunningSums.empty(b, n)
    order = np.empty(steps, dtype=np.int64)
    accs = np.empty(steps)
    fids = np.empty(steps)
    for step in range(steps):
        r = k_total - step
        scores = scorer.scores(dw[:r], qw[:r], cw[:r], sums)
        tied = np.flatnonzero(scores == scores.max())
        pos = int(tied[np.argmin(idx[tied])])
        order[step] = idx[pos]
        sums.add(p, order[step])
        accs[step], fids[step] = scorer.subset_scores(sums)
        last = r - 1
        if pos != last:
            dw[pos], qw[pos], cw[pos], idx[pos] = dw[last], qw[last], cw[last], idx[last]
    return order, accs, fids


def param_fractions(order: np.ndarray, n_params: Sequence[float] | None, k: int) -> np.ndarray:
    """Cumulative parameter share float[len(order)] of each prefix of ``order`` (NaN if unknown)."""
    if n_params is None:
        return np.full(len(order), np.nan)
    sizes = np.asarray(
        [np.nan if v is None else float(v) for v in n_params], dtype=np.float64
    ).reshape(-1)
    if sizes.size != k:
        raise ValueError(f"n_params must have {k} entries, got {sizes.size}")
    return np.cumsum(sizes[np.asarray(order, dtype=np.int64)]) / sizes.sum()


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
    p = prepare(dots, query_sq, cand_sq, target, valid)
    if p.dots.shape[2] == 0:
        raise ValueError("greedy_select needs at least one query")
    if objective not in ("accuracy", "fidelity"):
        raise ValueError(f"objective must be 'accuracy' or 'fidelity', got {objective!r}")
    order, accs, fids = greedy_component_order(p, objective, max_steps)
    fracs = param_fractions(order, n_params, p.dots.shape[0])
    chosen = [int(c) for c in order]
    return [
        Step(c, float(a), float(f), float(pf), tuple(chosen[: i + 1]))
        for i, (c, a, f, pf) in enumerate(zip(chosen, accs, fids, fracs, strict=True))
    ]


def prefix_correct(p: Prepared, order: np.ndarray) -> np.ndarray:
    """bool[len(order), N]: correctness of each prefix of ``order`` on prepared queries."""
    _, b, n = p.dots.shape
    out = np.empty((len(order), n), dtype=bool)
    sums = _RunningSums.empty(b, n)
    for i, c in enumerate(order):
        sums.add(p, c)
        out[i] = correct_first(sums.cos(), p.valid, p.all_valid)
    return out


class GreedyStepper:
    """Interactive greedy selection: the next component for any ordered subset.

    ``next_component(subset)`` is the component whose addition to ``subset`` (component indices
    in the order they were added) maximises the objective, lowest index on ties; stepping
    forward from ``[]`` gives exactly ``greedy_select``'s order and scores."""

    def __init__(
        self,
        dots: np.ndarray,
        query_sq: np.ndarray,
        cand_sq: np.ndarray,
        target: np.ndarray,
        objective: Objective = "accuracy",
        valid: np.ndarray | None = None,
    ) -> None:
        self.p = prepare(dots, query_sq, cand_sq, target, valid)
        self.scorer = StepScorer(self.p, objective)

    def _sums(self, subset: Sequence[int]) -> _RunningSums:
        _, b, n = self.p.dots.shape
        sums = _RunningSums.empty(b, n)
        for c in subset:
            sums.add(self.p, int(c))
        return sums

    def candidate_scores(self, subset: Sequence[int]) -> np.ndarray:
        """float[K]: the objective after adding each component (accuracy as a fraction of
        queries); NaN for components already in ``subset``."""
        k = self.p.dots.shape[0]
        rest = np.setdiff1d(np.arange(k), np.asarray(subset, dtype=np.int64))
        out = np.full(k, np.nan)
        if rest.size:
            raw = self.scorer.scores(
                self.p.dots[rest], self.p.query_sq[rest], self.p.cand_sq[rest], self._sums(subset)
            )
            n = self.p.dots.shape[2]
            out[rest] = raw / n if self.scorer.objective == "accuracy" else raw
        return out

    def next_component(self, subset: Sequence[int]) -> int | None:
        """The greedy choice after ``subset`` (None when every component is in)."""
        scores = self.candidate_scores(subset)
        if np.isnan(scores).all():
            return None
        return int(np.flatnonzero(scores == np.nanmax(scores))[0])

    def subset_scores(self, subset: Sequence[int]) -> tuple[float, float]:
        """(accuracy, fidelity) of ``subset``, summed in its order."""
        return self.scorer.subset_scores(self._sums(subset))
