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

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradlens.selection.greedy import Step, greedy_select, param_fractions
from gradlens.selection.headline import (
    CI_METHODS,
    HEADLINE_COLUMNS,
    HELD_OUT,
    NOT_SELECTED,
    SELECTED_IN_SAMPLE,
)
from gradlens.selection.stats import HeldOutEstimate, bootstrap_ci, heldout_estimate
from gradlens.selection.subsets import cos_from_sums, per_component_accuracy, subset_indices
from gradlens.selection.trust import (
    Core,
    clopper_pearson,
    heldout_best_single,
    heldout_ci,
    paired_diff_ci,
    permutation_null,
)

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


# -- headline rows -------------------------------------------------------------------------------

#: The metrics of the full-set rows, each row giving one of them in its ``accuracy`` column.
FULL_SET_METRICS: tuple[str, ...] = ("recall@1", "MRR")
#: ``selection_curves.objective`` of greedy selection by full-set recall@1.
FULL_SET_OBJECTIVE = "recall@1 (all N)"
#: Interval of an MRR row (a mean of reciprocal ranks is not a binomial count).
MRR_CI = "bootstrap"


def full_set_row_id(subset_id: str, metric: str) -> str:
    """The headline id of a full-set row: ``all_n:<subset>:<metric>`` (e.g.
    ``all_n:greedy_peak:recall@1``); subsets as the BM25 rows' ids, plus ``full_set_greedy_peak``
    and ``full_set_greedy_heldout`` (greedy by full-set recall@1)."""
    return f"all_n:{subset_id}:{metric}"


@dataclass(frozen=True, eq=False)
class FullSetInputs:
    """What the full-set rows read.

    ``core``: the BM25 benchmark's arrays (``trust.Core``: dots [Q,b,K], query_sq, cand_sq,
    target, valid) of the same Q queries, in the same order, as ``fs``; ``fs``: the index's
    FullSet, its K' columns the components ``held`` (component_idx, ascending); ``slot_rows``
    int[Q, b]: the training row of each candidate slot (-1 for padding); ``names`` [K];
    ``n_params`` [K] or None; ``bm25`` [Q, N]: BM25 scores of every training example for each
    query (None: no BM25 rows); ``method``: the index's method label."""

    core: object
    fs: FullSet
    held: tuple[int, ...]
    slot_rows: np.ndarray
    names: Sequence[str]
    n_params: Sequence[float] | None
    bm25: np.ndarray | None
    method: str

    def columns(self, subset: Sequence[int]) -> list[int] | None:
        """Positions in ``fs`` of the component_idx in ``subset`` (None: one is not held)."""
        where = {c: j for j, c in enumerate(self.held)}
        cols = [where.get(int(c)) for c in subset]
        return None if any(c is None for c in cols) else cols

    def ranks(self, subset: Sequence[int], original: np.ndarray | None = None) -> np.ndarray:
        """int[Q]: full-set ranks under ``subset`` (component_idx, all held) of ``original``
        (training rows; default the true originals)."""
        cos = full_set_cosines(self.fs, self.columns(subset))
        return original_ranks(cos, self.fs.original if original is None else original)


def _values(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query values of each metric: recall@1 hits (as float) and reciprocal ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    return {"recall@1": (r == 1).astype(np.float64), "MRR": 1.0 / r}


class _AllNRows:
    """Accumulates full-set rows, two per subset (``FULL_SET_METRICS``), with the trust
    rules of the BM25 rows: Clopper–Pearson for a not-selected recall@1, the held-out hull for a
    held-out one, the percentile bootstrap for MRR, none for in-sample selected rows; the
    paired bootstrap against the full gradient's row of the same metric."""

    def __init__(self, n_boot: int, seed: int, level: float) -> None:
        self.rows: list[dict[str, object]] = []
        self.n_boot, self.seed, self.level = n_boot, seed, level
        self.full: dict[str, np.ndarray] = {}

    def _interval(self, kind: str, metric: str, v: np.ndarray) -> tuple[float, float, str | None]:
        if kind not in (NOT_SELECTED, HELD_OUT):
            return np.nan, np.nan, None
        if metric == "MRR":
            lo, hi = bootstrap_ci(v, n_boot=self.n_boot, seed=self.seed, level=self.level)
            return lo, hi, MRR_CI
        if kind == NOT_SELECTED:
            return (
                *clopper_pearson(int(np.count_nonzero(v)), v.size, self.level),
                CI_METHODS[kind],
            )
        return (*heldout_ci(v, self.n_boot, self.seed, self.level), CI_METHODS[kind])

    def add(
        self,
        subset_id: str,
        kind: str,
        label: str,
        detail: str,
        values: dict[str, np.ndarray],
        null_hi: dict[str, float] | None = None,
        heldout: str | None = None,
        **extra: object,
    ) -> None:
        for metric in FULL_SET_METRICS:
            v = values[metric]
            lo, hi, how = self._interval(kind, metric, v)
            if subset_id == "full":
                self.full[metric], dlo, dhi = v, np.nan, np.nan
            else:
                dlo, dhi = paired_diff_ci(v, self.full[metric], self.n_boot, self.seed, self.level)
            row = {"id": full_set_row_id(subset_id, metric), "metric": f"{metric}, all N: {label}"}
            row |= {"type": kind, "detail": detail, "in_sample": kind == SELECTED_IN_SAMPLE}
            row |= {"accuracy": float(v.mean()), "ci_lo": lo, "ci_hi": hi, "ci_method": how}
            row |= {"null_hi": (null_hi or {}).get(metric, np.nan), "diff_lo": dlo}
            row |= {"diff_hi": dhi, "k": np.nan, "param_fraction": np.nan}
            row |= {"heldout_id": None if heldout is None else full_set_row_id(heldout, metric)}
            self.rows.append(row | extra)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HEADLINE_COLUMNS))


@dataclass(frozen=True, eq=False)
class FullSetHeadline:
    """``full_set_headline``'s result: ``table`` (``HEADLINE_COLUMNS``; ids from
    ``full_set_row_id``), ``curve``: greedy by full-set recall@1 as ``selection_curves`` rows
    (objective ``FULL_SET_OBJECTIVE``, method the index's; None unless asked for), ``method``
    (the index's) and ``timings`` (seconds by step)."""

    table: pd.DataFrame
    curve: pd.DataFrame | None
    method: str
    timings: dict[str, float]


def _null_his(draws: list[np.ndarray]) -> dict[str, float]:
    """{metric: the 95th percentile of its value over the null draws} from each draw's ranks."""
    from gradlens.selection.trust import NULL_QUANTILE

    if not draws:
        return {}
    per = [_values(r) for r in draws]
    return {
        m: float(np.quantile([p[m].mean() for p in per], NULL_QUANTILE)) for m in FULL_SET_METRICS
    }


def _benchmark_nulls(x: FullSetInputs, draws: int, seed: int) -> dict[str, dict[str, float]]:
    """``null_hi`` of the rows chosen on the BM25 benchmark: in each draw of
    ``trust.permutation_null`` (each query's original replaced by another of its candidates)
    the procedure chooses again on the benchmark, and the chosen subset's full-set figures are
    taken for the replaced originals."""
    if draws < 1:
        return {}
    c: Core = x.core
    single = permutation_null(c, "best_single", draws=draws, seed=seed)
    rows = np.arange(c.target.size)
    best_ranks, peak_ranks = [], []
    for d, target in enumerate(single.targets):
        fake = x.slot_rows[rows, target]
        best = int(np.argmax(single.scores[d]))
        if x.columns([best]) is not None:
            best_ranks.append(x.ranks([best], fake))
        steps = greedy_select(c.dots, c.query_sq, c.cand_sq, target, valid=c.valid)
        peak = steps[int(np.argmax([s.accuracy for s in steps]))].subset
        if x.columns(peak) is not None:
            peak_ranks.append(x.ranks(peak, fake))
    return {"best_single": _null_his(best_ranks), "greedy_peak": _null_his(peak_ranks)}


def _heldout_values(
    x: FullSetInputs, plans: Sequence[tuple[np.ndarray, Sequence[Sequence[int]]]]
) -> dict[str, np.ndarray] | None:
    """Per-query values averaged over fold seeds of a held-out procedure: ``plans[s]`` = (fold
    [Q] under seed s, the subset each fold kept, chosen without it); None when a kept subset
    holds a component the index does not."""
    per_seed = []
    for fold, kept in plans:
        ranks = np.empty(fold.size, dtype=np.int64)
        for f, subset in enumerate(kept):
            if x.columns(subset) is None:
                return None
            ranks[fold == f] = x.ranks(subset)[fold == f]
        per_seed.append(_values(ranks))
    return {m: np.mean([v[m] for v in per_seed], axis=0) for m in FULL_SET_METRICS}


def _first(k: int) -> str:
    return "first component" if k == 1 else f"first {k} components"


def _detail(ranks: np.ndarray, what: str) -> str:
    r = Retrieval(ranks)
    return f"{what}; recall@5 {r.recall(5):.3f}, recall@10 {r.recall(10):.3f}"


def _chosen_rows(rows: _AllNRows, x: FullSetInputs, steps: Sequence[Step], nulls, folds, seeds):
    """Best single component and greedy peak chosen on the BM25 benchmark, scored over all N
    (in-sample, with their nulls), then the same procedures chosen on training folds and
    scored on the held-out fold (skipped where the index lacks a chosen component)."""
    c: Core = x.core
    b = c.dots.shape[1]
    best = int(np.argmax(per_component_accuracy(c.dots, c.query_sq, c.cand_sq, c.target, c.valid)))
    peak = steps[int(np.argmax([s.accuracy for s in steps]))].subset
    chosen = (
        ("best_single", "best single component", (best,), x.names[best], "best_single_heldout"),
        ("greedy_peak", "greedy peak", peak, _first(len(peak)), "greedy_heldout"),
    )
    for sid, label, subset, what, heldout in chosen:
        if x.columns(subset) is None:
            continue
        ranks = x.ranks(subset)
        rows.add(
            sid,
            SELECTED_IN_SAMPLE,
            f"{label} of the BM25-{b} benchmark (in-sample)",
            _detail(ranks, f"{what}, chosen on the BM25-{b} benchmark"),
            _values(ranks),
            nulls.get(sid),
            heldout=heldout,
            k=len(subset),
            param_fraction=param_fractions(np.asarray(subset), x.n_params, len(x.names))[-1],
        )
    if seeds is None:
        return
    single = heldout_best_single(c, folds=folds, seeds=seeds)
    plans = [
        (single.fold[s], [[int(k)] for k in single.fold_component[s]]) for s in range(len(seeds))
    ]
    greedy = heldout_estimate(
        c.dots, c.query_sq, c.cand_sq, c.target, folds=folds, seeds=seeds, valid=c.valid
    )
    plans_g = [(r.fold, [r.orders[f][: r.fold_k[f]] for f in range(folds)]) for r in greedy.runs]
    for sid, label, plan in (
        ("best_single_heldout", "best single component", plans),
        ("greedy_heldout", "greedy", plans_g),
    ):
        values = _heldout_values(x, plan)
        if values is not None:
            detail = (
                f"chosen on the BM25-{b} benchmark per fold ({folds}-fold, seeds "
                f"{seeds[0]}–{seeds[-1]}), scored over all N on the held-out fold"
            )
            rows.add(sid, HELD_OUT, f"{label} (held-out)", detail, values)


def _other_rows(original: np.ndarray, n: int, draws: int, seed: int) -> np.ndarray:
    """int[draws, Q]: per draw, each query's original replaced by another training row drawn
    uniformly (the full set's permutation null: every training example is a candidate)."""
    pick = np.random.default_rng(seed).integers(0, n - 1, size=(draws, original.size))
    return pick + (pick >= original[None])


def _greedy_peak_ranks(fs: FullSet, original: np.ndarray) -> np.ndarray:
    """Full-set ranks of ``original`` under the in-sample peak of greedy by full-set recall@1
    run with those originals."""
    moved = FullSet(fs.dots, fs.query_sq, fs.train_sq, original)
    steps = full_set_greedy(moved)
    peak = steps[int(np.argmax([s.accuracy for s in steps]))].subset
    return original_ranks(full_set_cosines(moved, peak), original)


def _full_set_greedy_rows(rows: _AllNRows, x: FullSetInputs, folds, seeds, draws, seed, workers):
    """Greedy by full-set recall@1: its in-sample peak (with the full set's permutation null),
    the whole procedure held out, and its curve (``selection_curves`` rows)."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from gradlens.selection.tables import greedy_curve_table

    fs, held = x.fs, x.held
    sizes = None if x.n_params is None else [x.n_params[c] for c in held]
    steps = full_set_greedy(fs, n_params=sizes)
    peak = int(np.argmax([s.accuracy for s in steps]))
    subset = [held[j] for j in steps[peak].subset]
    null = {}
    if draws > 0:
        others = _other_rows(fs.original, fs.shape[1], draws, seed)
        with ThreadPoolExecutor(max(1, min(draws, workers))) as pool:
            null = _null_his(list(pool.map(partial(_greedy_peak_ranks, fs), others)))
    ranks = x.ranks(subset)
    frac = param_fractions(np.asarray(subset), x.n_params, len(x.names))[-1]
    rows.add(
        "full_set_greedy_peak",
        SELECTED_IN_SAMPLE,
        "greedy by full-set recall@1 (in-sample)",
        _detail(ranks, _first(peak + 1)),
        _values(ranks),
        null,
        heldout="full_set_greedy_heldout",
        k=peak + 1,
        param_fraction=frac,
    )
    curve = greedy_curve_table(steps)
    curve["component_idx"] = [held[j] for j in curve["component_idx"]]
    curve.insert(2, "component", [x.names[c] for c in curve["component_idx"]])
    held_curve = np.full(len(steps), np.nan)
    if seeds is not None:
        est = full_set_heldout(fs, folds=folds, seeds=seeds)
        plans = [
            (r.fold, [[held[j] for j in r.orders[f][: r.fold_k[f]]] for f in range(folds)])
            for r in est.runs
        ]
        detail = (
            f"greedy by full-set recall@1 on the training folds ({folds}-fold, seeds "
            f"{seeds[0]}–{seeds[-1]}), k chosen per fold"
        )
        rows.add(
            "full_set_greedy_heldout",
            HELD_OUT,
            "greedy by full-set recall@1 (held-out)",
            detail,
            _heldout_values(x, plans),
        )
        held_curve[: len(est.runs[0].accuracy)] = est.runs[0].accuracy
    curve.insert(0, "objective", FULL_SET_OBJECTIVE)
    curve.insert(0, "method", x.method)
    return curve.assign(heldout_accuracy=held_curve)


def full_set_headline(
    x: FullSetInputs,
    steps: Sequence[Step] | None = None,
    folds: int = 5,
    seed: int = 0,
    null_draws: int = 20,
    greedy: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    heldout_seeds: int = 3,
    workers: int = 2,
) -> FullSetHeadline:
    """The full-set rows beside the BM25 benchmark's headline (two rows per subset: recall@1
    and MRR over all N, recall@5/10 in the detail): the full gradient (every component the
    index holds); the best single component and the greedy peak chosen on the BM25 benchmark
    (in-sample, with ``null_hi`` from the benchmark's permutation null, seeded by ``seed``)
    and their held-out counterparts (folds and fold seeds ``seed ..`` as the benchmark's);
    BM25 over all N (``x.bm25``); with ``greedy``, greedy selection by full-set recall@1
    in-sample (its null: each original replaced by a uniformly drawn other training example,
    ``null_draws`` draws on ``workers`` threads) and held out, and its curve. ``steps``: the
    benchmark's in-sample accuracy greedy when the caller has it."""
    c: Core = x.core
    q = c.dots.shape[0]
    t0 = time.perf_counter()
    if steps is None:
        steps = greedy_select(c.dots, c.query_sq, c.cand_sq, c.target, valid=c.valid)
    seeds = tuple(range(seed, seed + max(1, heldout_seeds))) if 2 <= folds <= q else None
    rows = _AllNRows(n_boot, seed, level)
    ranks = retrieval(x.fs).ranks
    what = f"{x.method}, all {len(x.held)} components the index holds"
    rows.add(
        "full", NOT_SELECTED, "full gradient", _detail(ranks, what), _values(ranks), k=len(x.held)
    )
    nulls = _benchmark_nulls(x, null_draws, seed)
    _chosen_rows(rows, x, steps, nulls, folds, seeds)
    if x.bm25 is not None:
        bm = original_ranks(x.bm25, x.fs.original)
        rows.add(
            "bm25",
            NOT_SELECTED,
            "BM25",
            _detail(bm, "the original's rank by BM25 score"),
            _values(bm),
        )
    timings = {"full_set_rows": time.perf_counter() - t0}
    curve = None
    if greedy:
        t0 = time.perf_counter()
        curve = _full_set_greedy_rows(rows, x, folds, seeds, null_draws, seed, workers)
        timings["full_set_greedy"] = time.perf_counter() - t0
    return FullSetHeadline(rows.frame(), curve, x.method, timings)
