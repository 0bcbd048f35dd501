"""The read side: everything a page or report needs from a GradLens database, by path.

Each call opens a short-lived read-only connection and closes it before returning, so readers
never hold the file between calls (DuckDB allows many readers or one writer per file). A reader
that meets a writer's lock retries for ``gradlens.store.connect.READ_RETRY_SECONDS`` before
giving up with a clear error."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from gradlens.errors import DatabaseError, GradLensError
from gradlens.runs.costs import cost_table
from gradlens.selection.headline import HEADLINE_COLUMNS
from gradlens.store.arrays import RunArrays, arrays_from_frames
from gradlens.store.connect import read_store
from gradlens.store.database import Store

CURVE_COLUMNS = (
    "method",
    "objective",
    "step",
    "component_idx",
    "component",
    "accuracy",
    "fidelity",
    "param_fraction",
    "heldout_accuracy",
)

__all__ = [
    "RunInfo",
    "costs",
    "curves",
    "db_version",
    "examples",
    "list_runs",
    "load_arrays",
    "null_band",
    "run_info",
    "same_data",
    "select_timings",
    "stored_headline",
]


def db_version(db: str | Path) -> tuple[float, int]:
    """(mtime, size) of the database file: a cache key that changes whenever it is written."""
    try:
        st = Path(db).stat()
    except OSError as exc:
        raise DatabaseError(f"database {db}: {exc.strerror or exc}") from None
    return st.st_mtime, st.st_size


@dataclass(frozen=True)
class RunInfo:
    """One run's identity and summary: ``config`` and ``stats`` as dicts; ``shape`` (N, b, K)
    from its candidates and components; ``methods`` exact first."""

    run_id: str
    name: str
    status: str
    created_at: object
    config: dict
    stats: dict
    n_queries: int
    n_candidates: int
    n_components: int
    methods: tuple[str, ...]

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def same_data(a: RunInfo, b: RunInfo) -> bool:
    """Two runs of the same model on the same training data (two query settings, say): equal
    model weights and training set for computed runs, the same source tables for imports."""
    ca, cb = a.config, b.config
    if ca.get("source") == "import" or cb.get("source") == "import":
        keys = ("dots", "norms", "n_params")
    else:
        keys = ("model_hash", "train_hash", "candidates", "loss_on", "reduction")
    return a.run_id != b.run_id and all(ca.get(k) == cb.get(k) for k in keys)


def list_runs(db: str | Path) -> pd.DataFrame:
    """Every run: name, run_id, status, created_at, queries, components, methods."""
    with read_store(db) as store:
        return store.list_runs()


def _complete(store: Store, run: str) -> dict:
    row = store.resolve(run)
    if row["status"] != "complete":
        raise GradLensError(
            f"run '{row['name']}' is {row['status']}: rerun its compute command to finish it"
        )
    return row


def _json(value: object) -> dict:
    if value is None or (isinstance(value, float) and value != value):
        return {}
    return json.loads(value) if isinstance(value, str) else dict(value)


def run_info(db: str | Path, run: str) -> RunInfo:
    """The RunInfo of the run named (or with id) ``run``."""
    with read_store(db) as store:
        row = store.resolve(run)
        run_id = row["run_id"]
        n, b = store.con.execute(
            "SELECT count(DISTINCT query_id), coalesce(max(n), 0) FROM (SELECT query_id, "
            "count(*) OVER (PARTITION BY query_id) AS n FROM candidates WHERE run_id = ?)",
            [run_id],
        ).fetchone()
        k = store.con.execute(
            "SELECT count(*) FROM components WHERE run_id = ?", [run_id]
        ).fetchone()[0]
        return RunInfo(
            run_id=run_id,
            name=row["name"],
            status=row["status"],
            created_at=row["created_at"],
            config=_json(row.get("config")),
            stats=_json(row.get("stats")),
            n_queries=int(n),
            n_candidates=int(b),
            n_components=int(k),
            methods=tuple(store.methods(run_id)),
        )


def arrays_of(store: Store, run_id: str, method: str = "exact") -> RunArrays:
    """RunArrays of one method of a run, on an open store (queries in candidates' row order)."""
    candidates = store.con.execute(
        "SELECT query_id, candidate_id, rank, bm25 FROM candidates WHERE run_id = ? ORDER BY rowid",
        [run_id],
    ).df()
    try:
        return arrays_from_frames(
            store.frame("components", run_id),
            candidates,
            store.frame("dots", run_id, method),
            store.frame("norms", run_id, method),
            method=method,
        )
    except ValueError as exc:
        raise GradLensError(f"run {run_id}: {exc}") from None


def load_arrays(db: str | Path, run: str, method: str = "exact") -> RunArrays:
    """RunArrays of one method of a complete run (GradLensError if it is not complete)."""
    with read_store(db) as store:
        return arrays_of(store, _complete(store, run)["run_id"], method)


def examples(db: str | Path, run: str, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """split, example_id, prompt, response, n_tokens of the run's examples (all, or ``ids``)."""
    with read_store(db) as store:
        run_id = store.resolve(run)["run_id"]
        frame = store.frame("examples", run_id)
    if ids is not None:
        frame = frame[frame["example_id"].isin(list(ids))]
    return frame.reset_index(drop=True)


def curves(db: str | Path, run: str, method: str = "exact") -> pd.DataFrame:
    """The stored greedy curves of the run (objective, step, component_idx, component,
    accuracy, fidelity, param_fraction, heldout_accuracy); empty until ``select`` ran."""
    with read_store(db) as store:
        run_id = store.resolve(run)["run_id"]
        try:
            frame = store.frame("selection_curves", run_id, method)
        except duckdb.CatalogException:  # a file without the table (one of OPTIONAL_TABLES)
            return pd.DataFrame(columns=CURVE_COLUMNS)
    return frame.sort_values(["objective", "step"], ignore_index=True)


def _added(store: Store, table: str, run_id: str, method: str | None) -> pd.DataFrame | None:
    """The run's rows of one of ``ADDED_TABLES`` in stored order, or None when there are none
    (a file no writer has opened since the table was added has no table at all)."""
    if not store.has_table(table):
        return None
    sql = f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?"
    args = [run_id]
    if method is not None:
        sql += " AND method = ?"
        args.append(method)
    sql += " ORDER BY rowid"
    frame = store.con.execute(sql, args).df()
    return None if frame.empty else frame


def stored_headline(db: str | Path, run: str, method: str = "exact") -> pd.DataFrame | None:
    """The headline rows ``gradlens select`` stored (``HEADLINE_COLUMNS`` then folds, seed,
    null_draws), in their order; None when the run was never selected."""
    with read_store(db) as store:
        frame = _added(store, "headline", store.resolve(run)["run_id"], method)
    if frame is None:
        return None
    frame = frame.sort_values("position", ignore_index=True)
    frame["in_sample"] = frame["in_sample"].astype(bool)
    return frame[[*HEADLINE_COLUMNS, "folds", "seed", "null_draws"]]


def null_band(
    db: str | Path, run: str, method: str = "exact", procedure: str = "greedy_peak"
) -> pd.DataFrame | None:
    """The permutation null's band stored by ``select``: for ``greedy_peak`` columns step,
    band_lo, band_hi (the 5 % and 95 % quantiles of the greedy curve's accuracy at each prefix
    size over the draws; accuracy objective), for ``best_single`` component_idx, band_lo,
    band_hi (each single component's accuracy); None when not stored."""
    with read_store(db) as store:
        frame = _added(store, "null_bands", store.resolve(run)["run_id"], method)
    if frame is None:
        return None
    frame = frame[frame["procedure"] == procedure]
    if frame.empty:
        return None
    x = "step" if procedure == "greedy_peak" else "component_idx"
    frame = frame.astype({x: int}).sort_values(x, ignore_index=True)
    return frame[[x, "band_lo", "band_hi"]]


def select_timings(db: str | Path, run: str) -> pd.DataFrame | None:
    """The seconds ``select`` measured: method, what, objective, seconds (None before it ran)."""
    with read_store(db) as store:
        return _added(store, "select_timings", store.resolve(run)["run_id"], None)


def costs(db: str | Path, run: str) -> pd.DataFrame:
    """The run's cost table (``runs.costs.cost_table``: step, seconds, includes, extrapolated),
    from its stored stats and ``select`` timings."""
    info = run_info(db, run)
    head = stored_headline(db, info.run_id)
    folds = int(head["folds"].iloc[0]) if head is not None else None
    draws = int(head["null_draws"].iloc[0]) if head is not None else None
    return cost_table(
        info.stats,
        select_timings(db, info.run_id),
        info.n_queries,
        info.methods,
        folds=folds,
        null_draws=draws,
    )
