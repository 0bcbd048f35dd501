"""The headline table of a run (full gradient, best single component, greedy peak in-sample and
held out, BM25, projections) and typed access to its rows, so that no reader matches labels.

Every row has a stable ``id`` and a ``type`` beside its display label ``metric``:

- ``full`` (``not_selected``): every component;
- ``best_single`` (``selected_in_sample``): the best single component;
- ``greedy_peak`` (``selected_in_sample``): greedy's prefix at its in-sample peak;
- ``greedy_heldout`` (``held_out``): the whole greedy procedure, scored out of sample;
- ``bm25`` (``not_selected``): BM25 top-1;
- ``project:<method>`` (``not_selected``): every component, projected by ``<method>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradlens.selection.greedy import greedy_select, param_fractions
from gradlens.selection.stats import bootstrap_ci, heldout_estimate
from gradlens.selection.subsets import check_shapes, correct, cosines, per_component_accuracy

HEADLINE_COLUMNS = (
    "id",
    "metric",
    "type",
    "detail",
    "accuracy",
    "ci_lo",
    "ci_hi",
    "k",
    "param_fraction",
)
FULL = "full"
BM25 = "bm25"
BEST_SINGLE = "best_single"
GREEDY_PEAK = "greedy_peak"
GREEDY_HELDOUT = "greedy_heldout"
#: A projection's row id is this prefix followed by its method label (``project:sjlt:0.01``).
PROJECT_PREFIX = "project:"
#: Row types: how the row's components were chosen, and whether its accuracy is in-sample.
NOT_SELECTED = "not_selected"
SELECTED_IN_SAMPLE = "selected_in_sample"
HELD_OUT = "held_out"


def projection_id(method: str) -> str:
    """The headline row id of projection ``method`` (e.g. ``sjlt:0.01``)."""
    return PROJECT_PREFIX + method


@dataclass(frozen=True)
class HeadlineRow:
    """One headline row: ``id`` and ``type`` (module docstring), ``metric`` (display label),
    ``detail``, ``accuracy`` with its bootstrap interval [``ci_lo``, ``ci_hi``], ``k`` (number of
    components; the median kept k for ``greedy_heldout``; NaN where it does not apply) and
    ``param_fraction`` (share of the parameters; NaN where unknown or not applicable)."""

    id: str
    metric: str
    type: str
    detail: str
    accuracy: float
    ci_lo: float
    ci_hi: float
    k: float
    param_fraction: float

    @property
    def projection(self) -> str | None:
        """The projection's method label for a ``project:<method>`` row, else None."""
        return self.id.removeprefix(PROJECT_PREFIX) if self.id.startswith(PROJECT_PREFIX) else None


def headline_rows(table: pd.DataFrame) -> tuple[HeadlineRow, ...]:
    """The rows of a ``headline`` table, in its order."""
    records = table[list(HEADLINE_COLUMNS)].to_dict("records")
    return tuple(
        HeadlineRow(
            **{c: r[c] for c in ("id", "metric", "type", "detail")},
            **{c: float(r[c]) for c in ("accuracy", "ci_lo", "ci_hi", "k", "param_fraction")},
        )
        for r in records
    )


def headline_row(table: pd.DataFrame, row_id: str) -> HeadlineRow | None:
    """The row of a ``headline`` table with id ``row_id`` (None when the table has none: no BM25
    scores, too few queries for the held-out row, a projection the run does not store)."""
    return next((r for r in headline_rows(table) if r.id == row_id), None)


class _Rows:
    """Accumulates headline rows with paired bootstrap CIs (same resamples for every row)."""

    def __init__(self, n_boot: int, seed: int, level: float) -> None:
        self.rows: list[dict[str, object]] = []
        self.n_boot, self.seed, self.level = n_boot, seed, level

    def add(
        self, row_id: str, kind: str, metric: str, detail: str, corr: np.ndarray, **extra: object
    ) -> None:
        lo, hi = bootstrap_ci(corr, n_boot=self.n_boot, seed=self.seed, level=self.level)
        row: dict[str, object] = {"id": row_id, "metric": metric, "type": kind, "detail": detail}
        row |= {"accuracy": corr.mean(), "ci_lo": lo, "ci_hi": hi}
        row |= {"k": np.nan, "param_fraction": np.nan} | extra
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HEADLINE_COLUMNS))


def _selection_rows(rows: _Rows, dots, query_sq, cand_sq, target, valid, names, n_params):
    """Full gradient, best single component and the in-sample greedy peak."""
    k = dots.shape[2]
    full_corr = correct(cosines(dots, query_sq, cand_sq, np.arange(k)), target, valid)
    full_frac = 1.0 if n_params is not None else np.nan
    rows.add(
        FULL,
        NOT_SELECTED,
        "full gradient",
        f"all {k} components",
        full_corr,
        k=k,
        param_fraction=full_frac,
    )
    single = per_component_accuracy(dots, query_sq, cand_sq, target, valid)
    best = int(np.argmax(single))
    best_corr = correct(cosines(dots, query_sq, cand_sq, [best]), target, valid)
    frac = param_fractions(np.array([best]), n_params, k)[0]
    rows.add(
        BEST_SINGLE,
        SELECTED_IN_SAMPLE,
        "best single component",
        names[best],
        best_corr,
        k=1,
        param_fraction=frac,
    )
    steps = greedy_select(dots, query_sq, cand_sq, target, n_params=n_params, valid=valid)
    peak = int(np.argmax([s.accuracy for s in steps]))
    peak_corr = correct(cosines(dots, query_sq, cand_sq, steps[peak].subset), target, valid)
    rows.add(
        GREEDY_PEAK,
        SELECTED_IN_SAMPLE,
        "greedy peak (in-sample)",
        f"first {peak + 1} components",
        peak_corr,
        k=peak + 1,
        param_fraction=steps[peak].param_fraction,
    )


def _heldout_row(rows: _Rows, dots, query_sq, cand_sq, target, valid, folds, seeds) -> None:
    """The accuracy of the whole greedy procedure out of sample (k chosen inside each fold)."""
    est = heldout_estimate(dots, query_sq, cand_sq, target, folds=folds, seeds=seeds, valid=valid)
    ks = est.fold_k
    spread = f"{est.per_seed.min():.3f}–{est.per_seed.max():.3f}"
    rows.add(
        GREEDY_HELDOUT,
        HELD_OUT,
        f"greedy (held-out, {folds}-fold)",
        f"k chosen per fold on its training part ({ks.min()}–{ks.max()}); "
        f"seeds {seeds[0]}–{seeds[-1]}: {spread}",
        est.correct,
        k=float(np.median(ks)),
    )


def _projection_rows(rows: _Rows, dots, target, valid, projected) -> None:
    """Each projection's full-gradient accuracy (arrays of the exact run's shape)."""
    k = dots.shape[2]
    for method, (pdots, pq, pc) in projected.items():
        pdots, pq, pc, _, _ = check_shapes(pdots, pq, pc, target, valid)
        if pdots.shape != dots.shape:
            raise ValueError(
                f"projected {method!r} arrays have shape {pdots.shape}, not {dots.shape}"
            )
        pcorr = correct(cosines(pdots, pq, pc, np.arange(k)), target, valid)
        detail = f"all {k} components, projected"
        rows.add(
            projection_id(method), NOT_SELECTED, f"full gradient ({method})", detail, pcorr, k=k
        )


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
    heldout_seeds: int = 3,
) -> pd.DataFrame:
    """Summary table for ``gradlens select``, the dashboard and ``Run.headline``.

    Rows (ids in the module docstring): full gradient, best single component, greedy peak
    (in-sample), greedy (held-out, ``folds``-fold; skipped when folds < 2 or > N): the
    out-of-sample accuracy of "run greedy and keep its peak", each fold keeping the k its
    training part peaks at, averaged over fold seeds ``seed .. seed + heldout_seeds - 1`` (``k`` =
    the median kept k), BM25 top-1 (when bm25 [N,b] given) and, per entry of ``projected`` (method
    -> (dots, query_sq, cand_sq) with the same N, b and target), its full-gradient accuracy.
    Columns: ``HEADLINE_COLUMNS`` (NaN where not applicable). CIs: paired percentile bootstrap
    over queries."""
    dots, query_sq, cand_sq, target, valid = check_shapes(dots, query_sq, cand_sq, target, valid)
    n, _, k = dots.shape
    if len(names) != k:
        raise ValueError(f"names must have {k} entries, got {len(names)}")
    rows = _Rows(n_boot, seed, level)
    _selection_rows(rows, dots, query_sq, cand_sq, target, valid, names, n_params)
    if 2 <= folds <= n:
        seeds = tuple(range(seed, seed + max(1, heldout_seeds)))
        _heldout_row(rows, dots, query_sq, cand_sq, target, valid, folds, seeds)
    if bm25 is not None:
        bm = np.asarray(bm25, dtype=np.float64)
        if not np.isnan(bm[valid]).any():
            corr = correct(bm, target, valid)
            rows.add(BM25, NOT_SELECTED, "BM25 top-1", "original ranked strictly first", corr)
    _projection_rows(rows, dots, target, valid, projected or {})
    return rows.frame()
