"""Tables over selection results for reports, pages and figures (pandas)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from gradlens.models.naming import KINDS
from gradlens.selection.core import (
    EPS,
    check_shapes,
    correct,
    cosines,
    per_component_accuracy,
    subset_indices,
)
from gradlens.selection.greedy import Step, greedy_select, param_fractions
from gradlens.selection.stats import bootstrap_ci, heldout_estimate
from gradlens.store.arrays import RunArrays

HEADLINE_COLUMNS = ("metric", "detail", "accuracy", "ci_lo", "ci_hi", "k", "param_fraction")


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


def curve_frame(steps: Sequence[Step], names: Sequence[str] | None = None) -> pd.DataFrame:
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


class _Rows:
    """Accumulates headline rows with paired bootstrap CIs (same resamples for every row)."""

    def __init__(self, n_boot: int, seed: int, level: float) -> None:
        self.rows: list[dict[str, object]] = []
        self.n_boot, self.seed, self.level = n_boot, seed, level

    def add(self, metric: str, detail: str, corr: np.ndarray, **extra: object) -> None:
        lo, hi = bootstrap_ci(corr, n_boot=self.n_boot, seed=self.seed, level=self.level)
        row: dict[str, object] = {"metric": metric, "detail": detail, "accuracy": corr.mean()}
        row |= {"ci_lo": lo, "ci_hi": hi, "k": np.nan, "param_fraction": np.nan} | extra
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HEADLINE_COLUMNS))


def _selection_rows(rows: _Rows, dots, query_sq, cand_sq, target, valid, names, n_params):
    """Full gradient, best single component and the in-sample greedy peak."""
    k = dots.shape[2]
    full_corr = correct(cosines(dots, query_sq, cand_sq, np.arange(k)), target, valid)
    full_frac = 1.0 if n_params is not None else np.nan
    rows.add("full gradient", f"all {k} components", full_corr, k=k, param_fraction=full_frac)
    single = per_component_accuracy(dots, query_sq, cand_sq, target, valid)
    best = int(np.argmax(single))
    best_corr = correct(cosines(dots, query_sq, cand_sq, [best]), target, valid)
    frac = param_fractions(np.array([best]), n_params, k)[0]
    rows.add("best single component", names[best], best_corr, k=1, param_fraction=frac)
    steps = greedy_select(dots, query_sq, cand_sq, target, n_params=n_params, valid=valid)
    peak = int(np.argmax([s.accuracy for s in steps]))
    prefix = [s.component_idx for s in steps[: peak + 1]]
    peak_corr = correct(cosines(dots, query_sq, cand_sq, prefix), target, valid)
    rows.add(
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
        f"greedy (held-out, {folds}-fold)",
        f"k chosen per fold on its training part ({ks.min()}–{ks.max()}); "
        f"seeds {seeds[0]}–{seeds[-1]}: {spread}",
        est.correct,
        k=float(np.median(ks)),
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
    """Summary table for ``gradlens select`` and the dashboard.

    Rows (column ``metric``): full gradient, best single component, greedy peak (in-sample),
    greedy (held-out, ``folds``-fold; skipped when folds < 2 or > N): the out-of-sample accuracy
    of "run greedy and keep its peak", each fold keeping the k its training part peaks at,
    averaged over fold seeds ``seed .. seed + heldout_seeds - 1`` (``k`` = the median kept k),
    BM25 top-1 (when bm25 [N,b] given) and, per entry of ``projected`` (method -> (dots,
    query_sq, cand_sq) with the same N, b and target), its full-gradient accuracy. Columns:
    ``HEADLINE_COLUMNS`` (NaN where not applicable). CIs: paired percentile bootstrap over
    queries."""
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
            rows.add("BM25 top-1", "original ranked strictly first", correct(bm, target, valid))
    for method, (pdots, pq, pc) in (projected or {}).items():
        pdots, pq, pc, _, _ = check_shapes(pdots, pq, pc, target, valid)
        if pdots.shape != dots.shape:
            raise ValueError(
                f"projected {method!r} arrays have shape {pdots.shape}, not {dots.shape}"
            )
        pcorr = correct(cosines(pdots, pq, pc, np.arange(k)), target, valid)
        rows.add(f"full gradient ({method})", f"all {k} components, projected", pcorr, k=k)
    return rows.frame()


def _ranks(scores: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """int[N]: 1 + number of valid candidates scoring at least the original's score (so a tie
    with another candidate counts against the original, as in ``correct``)."""
    rows = np.arange(len(target))
    own = scores[rows, target]
    ge = (scores >= own[:, None]) & valid
    ge[rows, target] = False
    return 1 + ge.sum(axis=1)


def query_table(arrays: RunArrays, subset: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """One row per query for ``subset``: query_id, original_id, retrieved_id (best valid
    candidate other than the original), cos_original, cos_retrieved, margin (cos_original -
    cos_retrieved; > 0 iff retrieved correctly), correct, rank (of the original by cosine, 1 =
    retrieved), bm25_rank (the original's place in the candidate list, which is BM25 order)."""
    n, b, _ = arrays.shape
    rows = np.arange(n)
    cos = cosines(arrays.dots, arrays.query_sq, arrays.cand_sq, subset)
    others = np.where(arrays.valid, cos, -np.inf)
    others[rows, arrays.target] = -np.inf
    rival = np.argmax(others, axis=1)
    rival_cos = others[rows, rival]
    has_rival = np.isfinite(rival_cos)
    own = cos[rows, arrays.target]
    margin = np.where(has_rival, own - rival_cos, np.inf)
    return pd.DataFrame(
        {
            "query_id": arrays.query_ids,
            "original_id": arrays.candidate_ids[rows, arrays.target],
            "retrieved_id": np.where(has_rival, arrays.candidate_ids[rows, rival], None),
            "cos_original": own,
            "cos_retrieved": np.where(has_rival, rival_cos, np.nan),
            "margin": margin,
            "correct": margin > 0,
            "rank": _ranks(cos, arrays.target, arrays.valid),
            "bm25_rank": arrays.target + 1,
        }
    )


def failures(arrays: RunArrays, subset: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """The queries whose original ``subset`` does not retrieve (``query_table`` rows with
    correct == False), worst margin first."""
    table = query_table(arrays, subset)
    bad = table[~table["correct"]].sort_values("margin", kind="stable")
    return bad.rename(columns={"retrieved_id": "wrong_id", "cos_retrieved": "cos_wrong"})


def steals(arrays: RunArrays, subset: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Training examples that win the most queries that are not their own under ``subset``:
    candidate_id, stolen (number of queries), queries (their ids, comma-separated)."""
    bad = failures(arrays, subset)
    if bad.empty:
        return pd.DataFrame({"candidate_id": [], "stolen": [], "queries": []})
    grouped = bad.groupby("wrong_id", sort=False)["query_id"]
    out = pd.DataFrame(
        {"stolen": grouped.size(), "queries": grouped.agg(lambda s: ", ".join(map(str, s)))}
    )
    out = out.rename_axis("candidate_id").reset_index()
    return out.sort_values(["stolen", "candidate_id"], ascending=[False, True], kind="stable")


def component_shares(
    arrays: RunArrays, query: int, candidate_slots: Sequence[int], subset: Sequence[int]
) -> pd.DataFrame:
    """Each component's additive share of cos_S(query, j) for the given candidate slots:
    ``dot_c / (sqrt(|q_S|² · |j_S|²) + EPS)`` (the same denominator as the cosine, so a
    column sums to the cosine). Rows: the components of ``subset`` (index order); columns:
    component_idx, component, then one column per slot (``slot_<j>``)."""
    idx = subset_indices(subset, arrays.shape[2])
    qs = arrays.query_sq[query, idx].sum()
    out = pd.DataFrame({"component_idx": idx, "component": [arrays.names[c] for c in idx]})
    for j in candidate_slots:
        den = np.sqrt(qs * arrays.cand_sq[query, j, idx].sum()) + EPS
        out[f"slot_{j}"] = arrays.dots[query, j, idx] / den
    return out


def projection_table(exact: RunArrays, projected: Mapping[str, RunArrays]) -> pd.DataFrame:
    """One row per projection method (label ``METHOD:FRACTION``): method, fraction (dimensions
    per parameter), accuracy of its full gradient, and its fidelity: the cosine between its
    full-gradient cosines over all valid pairs and the exact full gradient's."""
    k = exact.shape[2]
    ref = cosines(exact.dots, exact.query_sq, exact.cand_sq, np.arange(k))[exact.valid]
    rows = []
    for method, a in projected.items():
        cos = cosines(a.dots, a.query_sq, a.cand_sq, np.arange(k))
        acc = correct(cos, a.target, a.valid).mean()
        vec = cos[a.valid]
        den = float(np.linalg.norm(vec) * np.linalg.norm(ref))
        _, _, frac = method.partition(":")
        rows.append(
            {
                "method": method,
                "fraction": float(frac) if frac else np.nan,
                "accuracy": float(acc),
                "fidelity": float(vec @ ref) / den if den > 0 else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["method", "fraction", "accuracy", "fidelity"])
