"""Run-level analyses over stored scalars: import a long table, the ``select`` headline report,
selection curves written back to the DB, and the cost table (the paper's Table 2)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.errors import GradLensError
from gradlens.importer import RunArrays, arrays_from_frames, read_long_tables
from gradlens.selection import greedy_select, headline, kfold_greedy
from gradlens.store import Store

CURVES_SCHEMA = """
CREATE TABLE IF NOT EXISTS selection_curves (
    run_id VARCHAR, method VARCHAR, objective VARCHAR, step INTEGER, component_idx INTEGER,
    component VARCHAR, accuracy DOUBLE, fidelity DOUBLE, param_fraction DOUBLE,
    heldout_accuracy DOUBLE);
"""


def load_arrays(store: Store, run_id: str, method: str = "exact") -> RunArrays:
    """The run's stored scalars for one method as selection arrays (see ``RunArrays``)."""
    components = store.frame("components", run_id)
    candidates = store.con.execute(
        "SELECT query_id, candidate_id, rank, bm25 FROM candidates WHERE run_id = ? ORDER BY rowid",
        [run_id],
    ).df()
    try:
        return arrays_from_frames(
            components,
            candidates,
            store.frame("dots", run_id, method),
            store.frame("norms", run_id, method),
            method=method,
        )
    except ValueError as exc:
        raise GradLensError(f"run {run_id}: {exc}") from None


def _file_digest(path: str | None) -> str:
    if path is None:
        return ""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_run(
    db: str,
    name: str,
    dots_path: str,
    norms_path: str,
    n_params_path: str | None = None,
    filters: Sequence[str] = (),
) -> str:
    """Import long tables as a complete run named ``name``; returns a one-line summary."""
    parsed: dict[str, str] = {}
    for f in filters:
        col, sep, value = f.partition("=")
        if not sep or not col:
            raise GradLensError(f"--filter expects COL=VALUE, got '{f}'")
        parsed[col] = value
    for p in (dots_path, norms_path, n_params_path):
        if p is not None and not Path(p).is_file():
            raise GradLensError(f"{p}: file not found")
    t0 = time.perf_counter()
    try:
        tables = read_long_tables(dots_path, norms_path, n_params_path, parsed or None)
        arrays = arrays_from_frames(tables.components, tables.candidates, tables.dots, tables.norms)
    except ValueError as exc:
        raise GradLensError(str(exc)) from None
    config = {
        "source": "import",
        "dots": str(dots_path),
        "norms": str(norms_path),
        "n_params": n_params_path,
        "filters": parsed,
        "digest": [_file_digest(p) for p in (dots_path, norms_path, n_params_path)],
    }
    run_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    with Store(db) as store:
        row = store.begin_run(run_id, name, config)
        if row["status"] == "complete":
            return f"run '{row['name']}' ({run_id}) is already imported in {db}: nothing to do"
        store.delete_run(run_id)  # a previous import that stopped half-way
        store.begin_run(run_id, name, config)
        examples = pd.concat(
            [
                pd.DataFrame(
                    {"split": "query", "example_id": pd.unique(tables.candidates["query_id"])}
                ),
                pd.DataFrame(
                    {"split": "train", "example_id": pd.unique(tables.candidates["candidate_id"])}
                ),
            ]
        )
        store.con.execute("BEGIN TRANSACTION")
        try:
            store.insert("components", run_id, tables.components)
            store.insert("examples", run_id, examples)
            store.insert("candidates", run_id, tables.candidates)
            store.insert("dots", run_id, tables.dots)
            store.insert("norms", run_id, tables.norms)
            store.con.execute("COMMIT")
        except BaseException:
            store.con.execute("ROLLBACK")
            raise
        seconds = time.perf_counter() - t0
        store.mark_complete(run_id, {"seconds": seconds, "imported": True})
    n, b, k = arrays.dots.shape
    return (
        f"run={name} imported queries={n} candidates={b} components={k} "
        f"dots={len(tables.dots)} seconds={seconds:.1f} db={db}"
    )


def _complete_run(store: Store, run: str) -> dict:
    """The ``runs`` row of ``run``; GradLensError unless its status is complete."""
    row = store.resolve(run)
    if row["status"] != "complete":
        raise GradLensError(
            f"run '{row['name']}' is {row['status']}: rerun its compute command to finish it"
        )
    return row


def _headline(exact: RunArrays, projected: dict, folds: int, seed: int) -> pd.DataFrame:
    """``selection.headline`` for a run's exact arrays (n_params / BM25 only where known)."""
    n_params = exact.n_params if not np.isnan(exact.n_params).any() else None
    bm25 = exact.bm25 if not np.isnan(exact.bm25[exact.valid]).any() else None
    return headline(
        *exact.core,
        exact.names,
        valid=exact.valid,
        n_params=n_params,
        bm25=bm25,
        projected=projected,
        folds=folds,
        seed=seed,
    )


def write_curves(store: Store, run_id: str, method: str, arrays: RunArrays, folds: int, seed: int):
    """Greedy curves (accuracy and fidelity objectives) with held-out accuracy, into the DB."""
    store.con.execute(CURVES_SCHEMA)
    store.con.execute(
        "DELETE FROM selection_curves WHERE run_id = ? AND method = ?", [run_id, method]
    )
    n_params = arrays.n_params if not np.isnan(arrays.n_params).any() else None
    frames = []
    timings = {}
    for objective in ("accuracy", "fidelity"):
        t0 = time.perf_counter()
        steps = greedy_select(
            *arrays.core,
            objective=objective,
            n_params=n_params,
            valid=arrays.valid,
        )
        timings[objective] = time.perf_counter() - t0
        held = np.full(len(steps), np.nan)
        if 2 <= folds <= len(arrays.target):
            h = kfold_greedy(
                *arrays.core,
                folds=folds,
                seed=seed,
                objective=objective,
                valid=arrays.valid,
            )
            held[: len(h.accuracy)] = h.accuracy
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "objective": objective,
                    "step": np.arange(1, len(steps) + 1, dtype=np.int32),
                    "component_idx": [s.component_idx for s in steps],
                    "component": [arrays.names[s.component_idx] for s in steps],
                    "accuracy": [s.accuracy for s in steps],
                    "fidelity": [s.fidelity for s in steps],
                    "param_fraction": [s.param_fraction for s in steps],
                    "heldout_accuracy": held,
                }
            )
        )
    store.insert("selection_curves", run_id, pd.concat(frames))
    return timings


def select_report(db: str, run: str, folds: int = 5, seed: int = 0) -> str:
    """The headline table of a run (every stored method) and its cost table; greedy curves are
    written to ``selection_curves``. Returns printable text."""
    with Store(db) as store:
        row = _complete_run(store, run)
        run_id = row["run_id"]
        exact = load_arrays(store, run_id, "exact")
        projected = {}
        for m in store.methods(run_id):
            if m != "exact":
                a = load_arrays(store, run_id, m)
                projected[m] = (a.dots, a.query_sq, a.cand_sq)
        table = _headline(exact, projected, folds, seed)
        timings = write_curves(store, run_id, "exact", exact, folds, seed)
        stats = json.loads(row["stats"]) if row.get("stats") else {}
    n, b, k = exact.dots.shape
    lines = [
        f"run '{row['name']}' ({run_id}): {n} queries, {b} candidates, {k} components",
        "",
        _format_headline(table),
        "",
        "cost (measured)",
        _format_costs(stats, timings),
    ]
    return "\n".join(lines)


def _format_headline(table: pd.DataFrame) -> str:
    out = pd.DataFrame(
        {
            "metric": table["metric"],
            "detail": table["detail"],
            "accuracy": table["accuracy"].map(lambda v: f"{v:.4f}"),
            "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(table["ci_lo"], table["ci_hi"])],
            "k": table["k"].map(lambda v: "" if pd.isna(v) else str(int(v))),
            "params": table["param_fraction"].map(lambda v: "" if pd.isna(v) else f"{v:.2%}"),
        }
    )
    return out.to_string(index=False)


def _format_costs(stats: dict, timings: dict) -> str:
    rows = []
    if "seconds" in stats:
        label = "import" if stats.get("imported") else "dot-product precomputation (compute job)"
        rows.append((label, f"{stats['seconds']:.1f} s"))
    for method, seconds in sorted(stats.get("projection_seconds", {}).items()):
        rows.append((f"projection {method} (inside the compute job)", f"{seconds:.1f} s"))
    for objective, seconds in timings.items():
        rows.append((f"greedy selection ({objective}), all steps", f"{seconds:.3f} s"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)


def list_runs(db: str) -> pd.DataFrame:
    """The runs of ``db`` (read-only): name, run_id, status, created_at, queries, ..."""
    with Store(db, read_only=True) as store:
        return store.list_runs()


def run_overview(db: str, run: str, folds: int = 5, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Read-only summary of one complete run for display: ``headline`` (as ``select`` prints
    it, with CIs) and ``layer_kind`` (single-component accuracy, rows = layer, cols = kind)."""
    from gradlens.selection import layer_kind_table, per_component_accuracy

    with Store(db, read_only=True) as store:
        a = load_arrays(store, _complete_run(store, run)["run_id"], "exact")
    table = _headline(a, {}, folds, seed)
    single = per_component_accuracy(a.dots, a.query_sq, a.cand_sq, a.target, a.valid)
    layers = [None if pd.isna(v) else int(v) for v in a.components["layer"]]
    grid = layer_kind_table(single, layers, list(a.components["kind"]))
    return {"headline": table, "layer_kind": grid}
