"""The headline table of a run (full gradient, best single component, greedy peak in-sample and
held out, BM25, projections) and typed access to its rows, so that no reader matches labels.

Every row has a stable ``id`` and a ``type`` beside its display label ``metric``:

- ``full`` (``not_selected``): every component;
- ``best_single`` (``selected_in_sample``): the best single component;
- ``best_single_heldout`` (``held_out``): the same choice made on training folds, scored out of
  sample;
- ``greedy_peak`` (``selected_in_sample``): greedy's prefix at its in-sample peak;
- ``greedy_heldout`` (``held_out``): the whole greedy procedure, scored out of sample;
- ``bm25`` (``not_selected``): BM25 top-1;
- ``project:<method>`` (``not_selected``): every component, projected by ``<method>``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradlens.selection.greedy import Step, greedy_select, param_fractions
from gradlens.selection.stats import heldout_estimate
from gradlens.selection.subsets import check_shapes, correct, cosines, per_component_accuracy
from gradlens.selection.trust import (
    Core,
    PermutationNull,
    clopper_pearson,
    heldout_best_single,
    heldout_ci,
    paired_diff_ci,
    permutation_null,
)

HEADLINE_COLUMNS = (
    "id",
    "metric",
    "type",
    "detail",
    "in_sample",
    "accuracy",
    "ci_lo",
    "ci_hi",
    "ci_method",
    "null_hi",
    "diff_lo",
    "diff_hi",
    "k",
    "param_fraction",
    "heldout_id",
)
FULL = "full"
BM25 = "bm25"
BEST_SINGLE = "best_single"
BEST_SINGLE_HELDOUT = "best_single_heldout"
GREEDY_PEAK = "greedy_peak"
GREEDY_HELDOUT = "greedy_heldout"
#: A projection's row id is this prefix followed by its method label (``project:sjlt:0.01``).
PROJECT_PREFIX = "project:"
#: Row types: how the row's components were chosen, and whether its accuracy is in-sample.
NOT_SELECTED = "not_selected"
SELECTED_IN_SAMPLE = "selected_in_sample"
HELD_OUT = "held_out"
#: The interval each row type gets (``ci_method``); selected_in_sample rows get none.
CI_METHODS = {NOT_SELECTED: "clopper-pearson", HELD_OUT: "bootstrap ∪ clopper-pearson"}


def projection_id(method: str) -> str:
    """The headline row id of projection ``method`` (e.g. ``sjlt:0.01``)."""
    return PROJECT_PREFIX + method


@dataclass(frozen=True)
class HeadlineRow:
    """One headline row: ``id`` and ``type`` (module docstring), ``metric`` (display label),
    ``detail``, ``in_sample`` (``type == "selected_in_sample"``), ``accuracy``; its interval
    [``ci_lo``, ``ci_hi``] by ``ci_method`` (``CI_METHODS``; NaN and None for in-sample rows);
    ``null_hi`` (in-sample rows: the permutation null's 95th percentile); [``diff_lo``,
    ``diff_hi``] the paired bootstrap interval of (row − full gradient) (NaN for the full
    gradient); ``k`` (number of components; the median kept k for ``greedy_heldout``);
    ``param_fraction`` (share of the parameters) and ``heldout_id`` (in-sample rows: their
    held-out row). NaN / None where a field does not apply."""

    id: str
    metric: str
    type: str
    detail: str
    in_sample: bool
    accuracy: float
    ci_lo: float
    ci_hi: float
    ci_method: str | None
    null_hi: float
    diff_lo: float
    diff_hi: float
    k: float
    param_fraction: float
    heldout_id: str | None

    @property
    def projection(self) -> str | None:
        """The projection's method label for a ``project:<method>`` row, else None."""
        return self.id.removeprefix(PROJECT_PREFIX) if self.id.startswith(PROJECT_PREFIX) else None


_FLOATS = ("accuracy", "ci_lo", "ci_hi", "null_hi", "diff_lo", "diff_hi", "k", "param_fraction")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def headline_rows(table: pd.DataFrame) -> tuple[HeadlineRow, ...]:
    """The rows of a ``headline`` table, in its order."""
    records = table[list(HEADLINE_COLUMNS)].to_dict("records")
    return tuple(
        HeadlineRow(
            **{c: r[c] for c in ("id", "metric", "type", "detail")},
            in_sample=bool(r["in_sample"]),
            ci_method=_text(r["ci_method"]),
            heldout_id=_text(r["heldout_id"]),
            **{c: float(r[c]) for c in _FLOATS},
        )
        for r in records
    )


def headline_row(table: pd.DataFrame, row_id: str) -> HeadlineRow | None:
    """The row of a ``headline`` table with id ``row_id`` (None when the table has none: no BM25
    scores, too few queries for the held-out rows, a projection the run does not store)."""
    return next((r for r in headline_rows(table) if r.id == row_id), None)


def indistinguishable(row: HeadlineRow) -> bool:
    """An in-sample selected row at or below its null's ``null_hi``: not distinguishable from
    what the same selection finds in noise."""
    return row.in_sample and not np.isnan(row.null_hi) and row.accuracy <= row.null_hi


def versus_full(row: HeadlineRow) -> str | None:
    """``better`` / ``worse`` than the full gradient when the paired interval excludes 0; None
    when it does not, for the full gradient itself, and for every in-sample selected row."""
    if row.in_sample or np.isnan(row.diff_lo) or np.isnan(row.diff_hi):
        return None
    return "better" if row.diff_lo > 0 else "worse" if row.diff_hi < 0 else None


@dataclass(frozen=True, eq=False)
class Headline:
    """``build_headline``'s result: ``table`` (``HEADLINE_COLUMNS``), the permutation nulls by
    procedure (``best_single``, ``greedy_peak``; empty without draws), ``steps`` (the in-sample
    accuracy greedy it used) and ``timings`` (seconds: ``greedy_heldout``,
    ``best_single_heldout``, ``null`` (both procedures; absent without draws)) and
    ``heldout_curve``: the k-fold held-out accuracy curve under fold seed ``seed`` (the first
    run of the held-out estimate, ``kfold_greedy(..., folds, seed).accuracy``; None without
    held-out rows)."""

    table: pd.DataFrame
    nulls: dict[str, PermutationNull]
    steps: list[Step]
    timings: dict[str, float]
    heldout_curve: np.ndarray | None


class _Rows:
    """Accumulates headline rows: each type's interval, and the paired bootstrap of
    (row − full gradient) with the same resamples for every row (the full row comes first)."""

    def __init__(self, n_boot: int, seed: int, level: float) -> None:
        self.rows: list[dict[str, object]] = []
        self.n_boot, self.seed, self.level = n_boot, seed, level
        self.full: np.ndarray | None = None

    def _interval(self, kind: str, corr: np.ndarray) -> tuple[float, float]:
        if kind == NOT_SELECTED:
            return clopper_pearson(int(np.count_nonzero(corr)), corr.size, self.level)
        if kind == HELD_OUT:
            return heldout_ci(corr, n_boot=self.n_boot, seed=self.seed, level=self.level)
        return np.nan, np.nan

    def add(
        self, row_id: str, kind: str, metric: str, detail: str, corr: np.ndarray, **extra: object
    ) -> None:
        """``corr`` [N]: bool per query, or a held-out row's fraction of fold seeds."""
        corr = np.asarray(corr)
        lo, hi = self._interval(kind, corr)
        if self.full is None:
            self.full, dlo, dhi = corr, np.nan, np.nan
        else:
            dlo, dhi = paired_diff_ci(corr, self.full, self.n_boot, self.seed, self.level)
        row: dict[str, object] = {"id": row_id, "metric": metric, "type": kind, "detail": detail}
        row |= {"in_sample": kind == SELECTED_IN_SAMPLE, "accuracy": float(corr.mean())}
        row |= {"ci_lo": lo, "ci_hi": hi, "ci_method": CI_METHODS.get(kind)}
        row |= {"null_hi": np.nan, "diff_lo": dlo, "diff_hi": dhi}
        row |= {"k": np.nan, "param_fraction": np.nan, "heldout_id": None}
        self.rows.append(row | extra)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HEADLINE_COLUMNS))


@dataclass(frozen=True, eq=False)
class _Inputs:
    """What the selected and held-out rows read: the checked arrays, component names [K],
    ``n_params`` [K] or None, the nulls' ``null_hi`` by procedure, ``folds`` and the fold
    ``seeds`` (None: no held-out rows), and the dicts the held-out runs fill: ``timings`` and
    ``curves`` (``heldout``: the first seed's k-fold held-out accuracy curve)."""

    core: Core
    names: Sequence[str]
    n_params: Sequence[float] | None
    null_hi: dict[str, float]
    folds: int
    seeds: tuple[int, ...] | None
    timings: dict[str, float]
    curves: dict[str, np.ndarray]


def _best_single_rows(rows: _Rows, x: _Inputs) -> None:
    """The best single component in-sample, then chosen on training folds and held out."""
    c = x.core
    single = per_component_accuracy(c.dots, c.query_sq, c.cand_sq, c.target, c.valid)
    best = int(np.argmax(single))
    rows.add(
        BEST_SINGLE,
        SELECTED_IN_SAMPLE,
        "best single component (in-sample)",
        x.names[best],
        correct(cosines(c.dots, c.query_sq, c.cand_sq, [best]), c.target, c.valid),
        k=1,
        param_fraction=param_fractions(np.array([best]), x.n_params, len(x.names))[0],
        null_hi=x.null_hi.get(BEST_SINGLE, np.nan),
        heldout_id=BEST_SINGLE_HELDOUT if x.seeds is not None else None,
    )
    if x.seeds is None:
        return
    t0 = time.perf_counter()
    held = heldout_best_single(c, folds=x.folds, seeds=x.seeds)
    x.timings["best_single_heldout"] = time.perf_counter() - t0
    kept, counts = np.unique(held.fold_component, return_counts=True)
    rows.add(
        BEST_SINGLE_HELDOUT,
        HELD_OUT,
        f"best single component (held-out, {x.folds}-fold)",
        f"component chosen per fold on its training part ({x.names[int(kept[np.argmax(counts)])]}"
        f" in {counts.max()} of {held.fold_component.size} folds); {_spread(x.seeds, held)}",
        held.correct,
        k=1,
    )


def _spread(seeds: tuple[int, ...], est) -> str:
    return f"seeds {seeds[0]}–{seeds[-1]}: {est.per_seed.min():.3f}–{est.per_seed.max():.3f}"


def _greedy_rows(rows: _Rows, x: _Inputs, steps: Sequence[Step]) -> None:
    """Greedy's in-sample peak, then the whole procedure held out (k chosen inside each fold)."""
    c = x.core
    peak = int(np.argmax([s.accuracy for s in steps]))
    rows.add(
        GREEDY_PEAK,
        SELECTED_IN_SAMPLE,
        "greedy peak (in-sample)",
        f"first {peak + 1} components",
        correct(cosines(c.dots, c.query_sq, c.cand_sq, steps[peak].subset), c.target, c.valid),
        k=peak + 1,
        param_fraction=steps[peak].param_fraction,
        null_hi=x.null_hi.get(GREEDY_PEAK, np.nan),
        heldout_id=GREEDY_HELDOUT if x.seeds is not None else None,
    )
    if x.seeds is None:
        return
    t0 = time.perf_counter()
    est = heldout_estimate(
        c.dots, c.query_sq, c.cand_sq, c.target, folds=x.folds, seeds=x.seeds, valid=c.valid
    )
    x.timings["greedy_heldout"] = time.perf_counter() - t0
    x.curves["heldout"] = est.runs[0].accuracy
    ks = est.fold_k
    rows.add(
        GREEDY_HELDOUT,
        HELD_OUT,
        f"greedy (held-out, {x.folds}-fold)",
        f"k chosen per fold on its training part ({ks.min()}–{ks.max()}); {_spread(x.seeds, est)}",
        est.correct,
        k=float(np.median(ks)),
    )


def _projection_rows(rows: _Rows, core: Core, projected) -> None:
    """Each projection's full-gradient accuracy (arrays of the exact run's shape)."""
    k = core.dots.shape[2]
    for method, (pdots, pq, pc) in projected.items():
        pdots, pq, pc, _, _ = check_shapes(pdots, pq, pc, core.target, core.valid)
        if pdots.shape != core.dots.shape:
            raise ValueError(
                f"projected {method!r} arrays have shape {pdots.shape}, not {core.dots.shape}"
            )
        pcorr = correct(cosines(pdots, pq, pc, np.arange(k)), core.target, core.valid)
        detail = f"all {k} components, projected"
        rows.add(
            projection_id(method), NOT_SELECTED, f"full gradient ({method})", detail, pcorr, k=k
        )


def build_headline(
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
    heldout_seeds: int = 3,
    null_draws: int = 20,
    steps: Sequence[Step] | None = None,
) -> Headline:
    """The headline of a run (for ``gradlens select``, the dashboard and ``Run.headline``) with
    its permutation nulls, the in-sample greedy it used and the time of each part.

    Rows (ids in the module docstring): full gradient; best single component (in-sample) and
    its held-out counterpart (each fold keeps the component its training part ranks first);
    greedy peak (in-sample) and greedy (held-out, ``folds``-fold): the out-of-sample accuracy
    of "run greedy and keep its peak", each fold keeping the k its training part peaks at
    (``k`` = the median kept k); held-out rows are averaged over fold seeds
    ``seed .. seed + heldout_seeds - 1`` and skipped when folds < 2 or > N; BM25 top-1 (when
    bm25 [N,b] given) and, per entry of ``projected`` (method -> (dots, query_sq, cand_sq) with
    the same N, b and target), its full-gradient accuracy. Columns: ``HEADLINE_COLUMNS`` (NaN /
    None where not applicable): intervals by ``CI_METHODS`` at ``level``, ``null_hi`` from
    ``null_draws`` permutation-null draws (``trust.permutation_null``; 0: none, NaN),
    paired differences from ``n_boot`` bootstrap resamples (``trust.paired_diff_ci``), all
    seeded from ``seed``. ``steps``: the in-sample accuracy greedy (``greedy_select`` with this
    ``n_params`` and ``valid``) when the caller has it already."""
    dots, query_sq, cand_sq, target, valid = check_shapes(dots, query_sq, cand_sq, target, valid)
    core = Core(dots, query_sq, cand_sq, target, valid)
    n, _, k = dots.shape
    if len(names) != k:
        raise ValueError(f"names must have {k} entries, got {len(names)}")
    if steps is None:
        steps = greedy_select(dots, query_sq, cand_sq, target, n_params=n_params, valid=valid)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    nulls = {
        p: permutation_null(core, p, draws=null_draws, seed=seed)
        for p in (BEST_SINGLE, GREEDY_PEAK)
        if null_draws > 0
    }
    if nulls:
        timings["null"] = time.perf_counter() - t0
    seeds = tuple(range(seed, seed + max(1, heldout_seeds))) if 2 <= folds <= n else None
    null_hi = {p: null.null_hi for p, null in nulls.items()}
    x = _Inputs(core, names, n_params, null_hi, folds, seeds, timings, {})
    rows = _Rows(n_boot, seed, level)
    full_corr = correct(cosines(dots, query_sq, cand_sq, np.arange(k)), target, valid)
    full_frac = 1.0 if n_params is not None else np.nan
    detail = f"all {k} components"
    rows.add(FULL, NOT_SELECTED, "full gradient", detail, full_corr, k=k, param_fraction=full_frac)
    _best_single_rows(rows, x)
    _greedy_rows(rows, x, steps)
    if bm25 is not None:
        bm = np.asarray(bm25, dtype=np.float64)
        if not np.isnan(bm[valid]).any():
            corr = correct(bm, target, valid)
            rows.add(BM25, NOT_SELECTED, "BM25 top-1", "original ranked strictly first", corr)
    _projection_rows(rows, core, projected or {})
    return Headline(rows.frame(), nulls, list(steps), timings, x.curves.get("heldout"))


def headline(*args, **kwargs) -> pd.DataFrame:
    """The headline table alone: ``build_headline(*args, **kwargs).table`` (the rows, columns
    and options are described there)."""
    return build_headline(*args, **kwargs).table
