"""The cost table of a run, in the rows of the paper's Table 2: dot-product precomputation,
greedy selection (per objective; held-out runs and the permutation nulls on their own rows), and
random projection with caching (the projection's own time inside the shared pass) and without
(the paper's procedure, timed by ``compute`` on a few queries and extrapolated to the run).

Every number is a time measured and stored with the run: the compute job's stats
(``seconds``, ``projection_seconds``, ``uncached_projection``: see ``gradlens.engine.costs``) and
the ``select_timings`` rows ``gradlens select`` writes. A time that does not exist (an imported
run, a run never selected) is NaN, and the row says why.
"""

from __future__ import annotations

import math

import pandas as pd

COST_COLUMNS = ("step", "seconds", "includes", "extrapolated")
PRECOMPUTATION = "dot-product precomputation"


def _row(step: str, seconds: float, includes: str, extrapolated: bool = False) -> dict:
    return {"step": step, "seconds": seconds, "includes": includes, "extrapolated": extrapolated}


def _precomputation(stats: dict) -> dict:
    if stats.get("imported") or "seconds" not in stats:
        return _row(PRECOMPUTATION, math.nan, "not measured: the dots were computed elsewhere")
    projected = sum(stats.get("projection_seconds", {}).values())
    uncached = stats.get("uncached_projection", {}).get("wall_seconds", 0.0)
    parts = [
        "the compute job: model load, BM25, one forward+backward per unique example, "
        "exact dots and norms, writes"
    ]
    if projected:
        parts.append(f"without the cached projections' own time ({projected:.1f} s, below)")
    if uncached:
        parts.append(f"without timing the uncached procedure ({uncached:.1f} s)")
    if stats.get("resumed_queries"):
        parts.append(f"the last job only ({stats['resumed_queries']} queries computed earlier)")
    return _row(PRECOMPUTATION, stats["seconds"] - projected - uncached, "; ".join(parts))


def _timing(timings: pd.DataFrame, method: str, what: str, objective: str) -> float:
    hit = timings[
        (timings["method"] == method)
        & (timings["what"] == what)
        & (timings["objective"] == objective)
    ]
    return float(hit["seconds"].sum()) if len(hit) else math.nan


def _selection(timings: pd.DataFrame | None, folds: int | None, draws: int | None) -> list[dict]:
    """The greedy, held-out and null rows of the exact method (NaN before ``select``)."""
    never = "not measured: run gradlens select"
    if timings is None or timings.empty:
        timings = pd.DataFrame(columns=["method", "what", "objective", "seconds"])
    k = f"{folds}-fold" if folds else "k-fold"
    specs = [
        (
            "greedy selection (accuracy)",
            "greedy",
            "accuracy",
            "in-sample greedy by accuracy, all K steps (the headline's peak and the curve)",
        ),
        (
            "greedy selection (fidelity)",
            "greedy",
            "fidelity",
            "in-sample greedy by fidelity, all K steps",
        ),
        (
            "held-out greedy (accuracy)",
            "greedy_heldout",
            "accuracy",
            f"greedy on the training part of each fold, {k}, 3 fold seeds: the whole-procedure "
            "estimate and the accuracy held-out curve",
        ),
        (
            "held-out greedy curve (fidelity)",
            "kfold_curve",
            "fidelity",
            f"greedy by fidelity on the training part of each fold, {k}, one fold seed",
        ),
        (
            "held-out best single component",
            "best_single_heldout",
            "accuracy",
            f"each fold's best component chosen on its training part, {k}, 3 fold seeds",
        ),
        (
            "permutation null",
            "null",
            "accuracy",
            f"best single component and the full greedy curve rerun on {draws or 'the'} draws of "
            "permuted originals",
        ),
    ]
    rows = []
    for step, what, objective, includes in specs:
        seconds = _timing(timings, "exact", what, objective)
        rows.append(_row(step, seconds, includes if not math.isnan(seconds) else never))
    return rows


def _projection(stats: dict, method: str, n_queries: int) -> list[dict]:
    """With and without caching for projection ``method``."""
    cached = stats.get("projection_seconds", {}).get(method)
    with_cache = f"random projection {method}, with caching"
    without = f"random projection {method}, without caching"
    if cached is None:
        why = "not measured: " + (
            "the dots were computed elsewhere" if stats.get("imported") else "no time stored"
        )
        return [_row(with_cache, math.nan, why), _row(without, math.nan, why)]
    rows = [
        _row(
            with_cache,
            cached,
            "projecting each cached gradient once inside the shared pass (no extra "
            "forward+backward)",
        )
    ]
    u = stats.get("uncached_projection")
    if not u or method not in u.get("project_seconds", {}) or not u.get("queries"):
        return rows + [_row(without, math.nan, "not measured: computed before it was timed")]
    measured = u["pass_seconds"] + u["densify_seconds"] + u["project_seconds"][method]
    rows.append(
        _row(
            without,
            measured / u["queries"] * n_queries,
            f"the paper's procedure: 1 + b fresh forward+backward passes per query, each "
            f"gradient densified and projected, then the projected dots; measured on "
            f"{u['queries']} queries ({measured:.2f} s), × {n_queries}/{u['queries']}",
            extrapolated=True,
        )
    )
    return rows


def cost_table(
    stats: dict,
    timings: pd.DataFrame | None,
    n_queries: int,
    methods: tuple[str, ...] = (),
    folds: int | None = None,
    null_draws: int | None = None,
) -> pd.DataFrame:
    """``COST_COLUMNS`` rows: precomputation, the selection rows, then with and without caching
    for each projection in ``methods`` (the run's stored methods; ``exact`` is skipped) or in
    ``stats["projection_seconds"]``. ``timings``: the run's ``select_timings`` rows (None before
    ``select``); ``folds`` / ``null_draws``: what ``select`` ran with (for the wording)."""
    rows = [_precomputation(stats)] + _selection(timings, folds, null_draws)
    projections = dict.fromkeys(
        [m for m in methods if m != "exact"] + list(stats.get("projection_seconds", {}))
    )
    for method in projections:
        rows += _projection(stats, method, n_queries)
    if not projections:
        rows.append(_row("random projection", math.nan, "not measured: the run has no projection"))
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))
