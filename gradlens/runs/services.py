"""Services that write runs (besides ``compute``): import long tables, ``select`` (headline and
greedy curves stored with the run). Reading goes through ``gradlens.runs.read``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.files import file_digest
from gradlens.runs.read import arrays_of
from gradlens.selection import greedy_curve_table, greedy_select, headline, kfold_greedy
from gradlens.store.arrays import RunArrays
from gradlens.store.connect import write_store
from gradlens.store.database import Store
from gradlens.store.importer import read_long_tables

__all__ = ["ImportSummary", "SelectResult", "import_run", "run_headline", "select_run"]


def parse_filters(filters: Sequence[str]) -> dict[str, str]:
    """``["setting=paraphrased"]`` -> ``{"setting": "paraphrased"}`` (GradLensError otherwise)."""
    parsed: dict[str, str] = {}
    for f in filters:
        col, sep, value = f.partition("=")
        if not sep or not col:
            raise GradLensError(f"--filter expects COL=VALUE, got '{f}'")
        parsed[col] = value
    return parsed


@dataclass(frozen=True)
class ImportSummary:
    name: str
    run_id: str
    db: str
    shape: tuple[int, int, int]
    n_dots: int
    seconds: float
    already: bool = False

    def line(self) -> str:
        if self.already:
            return (
                f"run '{self.name}' ({self.run_id}) is already imported in {self.db}: nothing to do"
            )
        n, b, k = self.shape
        return (
            f"run={self.name} imported queries={n} candidates={b} components={k} "
            f"dots={self.n_dots} seconds={self.seconds:.1f} db={self.db}"
        )


def import_run(
    db: str,
    name: str,
    dots_path: str,
    norms_path: str,
    n_params_path: str | None = None,
    filters: Sequence[str] = (),
) -> ImportSummary:
    """Import long tables (``gradlens.store.importer``) as a complete run named ``name``, in one
    transaction: the database shows the whole run, complete, or nothing of it."""
    parsed = parse_filters(filters)
    for p in (dots_path, norms_path, n_params_path):
        if p is not None and not Path(p).is_file():
            raise GradLensError(f"{p}: file not found")
    t0 = time.perf_counter()
    try:
        tables = read_long_tables(dots_path, norms_path, n_params_path, parsed or None)
        shape = tables.to_arrays().shape
    except ValueError as exc:
        raise GradLensError(str(exc)) from None
    config = {
        "source": "import",
        "dots": str(dots_path),
        "norms": str(norms_path),
        "n_params": n_params_path,
        "filters": parsed,
        "digest": [file_digest(p) for p in (dots_path, norms_path, n_params_path)],
    }
    run_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    queries = pd.unique(tables.candidates["query_id"])
    train = pd.unique(tables.candidates["candidate_id"])
    examples = pd.concat(
        [
            pd.DataFrame({"split": "query", "example_id": queries}),
            pd.DataFrame({"split": "train", "example_id": train}),
        ]
    )
    with write_store(db) as store, store.transaction():
        row = store.run(run_id)
        if row is not None and row["status"] == "complete":
            return ImportSummary(row["name"], run_id, db, shape, 0, 0.0, already=True)
        store.delete_run(run_id)  # an incomplete run under this id starts over
        store.begin_run(run_id, name, config)
        store.insert("components", run_id, tables.components)
        store.insert("examples", run_id, examples)
        store.insert("candidates", run_id, tables.candidates)
        store.insert("dots", run_id, tables.dots)
        fault_point("import.write")
        store.insert("norms", run_id, tables.norms)
        seconds = time.perf_counter() - t0
        store.mark_complete(run_id, {"seconds": seconds, "imported": True})
    return ImportSummary(name, run_id, db, shape, len(tables.dots), seconds)


def run_headline(
    exact: RunArrays,
    projected: dict[str, RunArrays] | None = None,
    folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """``selection.headline`` of a run's exact arrays (n_params / BM25 only where known) and its
    projected methods."""
    return headline(
        *exact.core,
        exact.names,
        valid=exact.valid,
        n_params=exact.known_n_params,
        bm25=exact.known_bm25,
        projected={m: (a.dots, a.query_sq, a.cand_sq) for m, a in (projected or {}).items()},
        folds=folds,
        seed=seed,
    )


def greedy_curves(arrays: RunArrays, folds: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Greedy curves (accuracy and fidelity objectives) with the k-fold held-out curve, as
    ``selection_curves`` rows (without run_id), and the seconds each greedy run took."""
    frames, timings = [], {}
    for objective in ("accuracy", "fidelity"):
        t0 = time.perf_counter()
        steps = greedy_select(
            *arrays.core, objective=objective, n_params=arrays.known_n_params, valid=arrays.valid
        )
        timings[objective] = time.perf_counter() - t0
        held = np.full(len(steps), np.nan)
        if 2 <= folds <= len(arrays.target):
            h = kfold_greedy(
                *arrays.core, folds=folds, seed=seed, objective=objective, valid=arrays.valid
            )
            held[: len(h.accuracy)] = h.accuracy
        frame = greedy_curve_table(steps, arrays.names)
        frame.insert(0, "objective", objective)
        frame.insert(0, "method", arrays.method)
        frames.append(frame.assign(heldout_accuracy=held))
    return pd.concat(frames, ignore_index=True), timings


@dataclass(frozen=True, eq=False)
class SelectResult:
    """What ``select`` computed: the run's row, its shape (N, b, K), the headline table, the
    seconds each greedy objective took and the run's stored stats."""

    row: dict
    shape: tuple[int, int, int]
    table: pd.DataFrame
    timings: dict
    stats: dict


def select_run(db: str, run: str, folds: int = 5, seed: int = 0) -> SelectResult:
    """Headline table of a complete run (every stored method) and its greedy curves, which are
    written to ``selection_curves`` for every method (replacing earlier ones in one
    transaction: the old curves or the new ones, never none or a mix)."""
    with Store(db, read_only=True) as store:
        row = store.resolve(run)
        if row["status"] != "complete":
            raise GradLensError(
                f"run '{row['name']}' is {row['status']}: rerun its compute command to finish it"
            )
        run_id = row["run_id"]
        arrays = {m: arrays_of(store, run_id, m) for m in store.methods(run_id)}
    exact = arrays.pop("exact")
    table = run_headline(exact, arrays, folds, seed)
    curves, timings = greedy_curves(exact, folds, seed)
    curves = pd.concat([curves] + [greedy_curves(a, folds, seed)[0] for a in arrays.values()])
    fault_point("select.computed")
    with write_store(db) as store, store.transaction():
        store.con.execute("DELETE FROM selection_curves WHERE run_id = ?", [run_id])
        fault_point("select.write")
        store.insert("selection_curves", run_id, curves)
    stats = json.loads(row["stats"]) if row.get("stats") else {}
    return SelectResult(row, exact.shape, table, timings, stats)
