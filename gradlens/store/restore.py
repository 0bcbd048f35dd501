"""Restore a folder written by ``gradlens export`` as the same run (``gradlens import --from``).

The run keeps its run_id, name, created_at, status, config and stats, and every exported table
is inserted as it is: DuckDB reads the Parquet files directly (``INSERT ... BY NAME SELECT *
FROM read_parquet``), so no value goes through pandas and every type stays exact.

A digest of the folder's files is recorded in the ``restored`` table: restoring the same files
again is a no-op; other files (or a missing run) replace the run. The replacement (deleting the
old rows and inserting every table) is one transaction, so an interrupted restore leaves the
database as it was.

An export's ``index/`` folder (the run's index, ``gradlens.store.index``) is checked against
the digests it lists, copied beside the database and moved into ``X.index/<run_id>/`` just
before that transaction, which also inserts its ``index_files`` and ``index_rows``; it counts in
the folder's digest. A run restored from an export without one loses its old index.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.files import file_digest
from gradlens.store.connect import write_store
from gradlens.store.database import ADDED_TABLES, EXPORT_TABLES
from gradlens.store.index import (
    exported_index,
    index_digest,
    place_index,
    remove_run_index,
    restore_index_rows,
    stage_index,
)

__all__ = ["RestoreSummary", "folder_digest", "restore_run"]


@dataclass(frozen=True)
class RestoreSummary:
    """What ``gradlens import --from`` did: the run restored (or found already restored), the
    rows inserted per table, and whether an older copy of the run was replaced."""

    name: str
    run_id: str
    db: str
    source: str
    digest: str
    rows: dict[str, int]
    seconds: float
    already: bool = False
    replaced: bool = False

    def line(self) -> str:
        if self.already:
            return (
                f"run '{self.name}' ({self.run_id}) is already restored from {self.source} "
                f"in {self.db}: nothing to do"
            )
        verb = "replaced" if self.replaced else "restored"
        counts = " ".join(f"{t}={n}" for t, n in self.rows.items() if t != "runs")
        return (
            f"run={self.name} {verb} run_id={self.run_id} {counts} "
            f"seconds={self.seconds:.1f} db={self.db}"
        )


def _table_files(folder: Path) -> dict[str, Path]:
    """``{table: path}`` of an export folder; GradLensError naming what is missing or odd."""
    if not folder.is_dir():
        raise GradLensError(f"{folder}: folder not found")
    files = {p.stem: p for p in folder.glob("*.parquet")}
    unknown = sorted(set(files) - set(EXPORT_TABLES))
    if unknown:
        raise GradLensError(
            f"{files[unknown[0]]}: not a table of a GradLens export "
            f"(expected {', '.join(t + '.parquet' for t in EXPORT_TABLES)})"
        )
    for table in EXPORT_TABLES:
        if table not in files and table not in ADDED_TABLES:  # exports from before may lack those
            raise GradLensError(
                f"{folder / (table + '.parquet')}: file not found (is {folder} a folder "
                "written by gradlens export?)"
            )
    return {t: files[t] for t in EXPORT_TABLES if t in files}


def folder_digest(paths: dict[str, Path]) -> str:
    """blake2b-128 over the files' names (sorted) and contents."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(p.name for p in paths.values()):
        h.update(name.encode() + b"\0")
        h.update(file_digest(paths[Path(name).stem]).encode())
    return h.hexdigest()


def _column_types(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> set[str]:
    """``"name TYPE"`` of each column a DESCRIBE returns (JSON is stored as VARCHAR in
    Parquet, so it counts as VARCHAR)."""
    rows = con.execute(f"DESCRIBE {sql}", params).fetchall()
    return {f"{r[0]} {'VARCHAR' if r[1] == 'JSON' else r[1]}" for r in rows}


def _check_file(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    """The Parquet file has the table's columns and types; GradLensError naming it otherwise."""
    try:
        got = _column_types(con, "SELECT * FROM read_parquet(?)", [str(path)])
    except duckdb.Error as exc:
        msg = str(exc).splitlines()[0]
        raise GradLensError(f"{path}: cannot read as Parquet: {msg}") from None
    want = _column_types(con, table, [])
    if got != want:
        missing = ", ".join(sorted(want - got)) or "none"
        extra = ", ".join(sorted(got - want)) or "none"
        raise GradLensError(
            f"{path}: columns differ from table {table} (missing: {missing}; unexpected: {extra})"
        )


def _the_run(con: duckdb.DuckDBPyConnection, files: dict[str, Path]) -> dict:
    """The one run of the folder (run_id, name, status) and checks that every table holds
    only its rows."""
    path = files["runs"]
    rows = con.execute("SELECT run_id, name, status FROM read_parquet(?)", [str(path)]).fetchall()
    if len(rows) != 1:
        raise GradLensError(f"{path}: expected exactly one run, found {len(rows)}")
    run_id, name, status = rows[0]
    if not run_id or not name:
        raise GradLensError(f"{path}: the run has no run_id or name")
    for p in files.values():
        other = con.execute(
            "SELECT run_id FROM read_parquet(?) WHERE run_id IS DISTINCT FROM ? LIMIT 1",
            [str(p), run_id],
        ).fetchone()
        if other is not None:
            raise GradLensError(f"{p}: holds rows of run {other[0]}, not of {run_id} ({name})")
    return {"run_id": run_id, "name": name, "status": status}


def restore_run(db: str | Path, folder: str | Path) -> RestoreSummary:
    """Restore the run exported to ``folder`` (by ``gradlens export``) into ``db`` as the same
    run. A no-op when it was restored from the same files; otherwise the run's old rows (if
    any) are replaced, in one transaction. GradLensError (one line, naming the file) on a bad
    folder or when another run already uses the run's name."""
    t0 = time.perf_counter()
    folder = Path(folder)
    files = _table_files(folder)
    index = exported_index(folder)
    digest = folder_digest(files)
    if index is not None:
        both = f"{digest}:{index_digest(index)}".encode()
        digest = hashlib.blake2b(both, digest_size=16).hexdigest()
    with write_store(db) as store:
        con = store.con
        for table, path in files.items():
            _check_file(con, table, path)
        run = _the_run(con, files)
        run_id, name = run["run_id"], run["name"]
        other = store.name_owner(name, run_id)
        if other is not None:
            raise GradLensError(
                f"run name '{name}' is already used by another run ({other}) in {db}: "
                f"delete that database or restore {folder} into another one"
            )
        existing = store.run(run_id)
        recorded = con.execute("SELECT digest FROM restored WHERE run_id = ?", [run_id]).fetchall()
        if existing is not None and [r[0] for r in recorded] == [digest]:
            return RestoreSummary(name, run_id, str(db), str(folder), digest, {}, 0.0, True)
        rows = {}
        if index is not None:
            place_index(stage_index(con, index, db, run_id), db, run_id)
        try:
            with store.transaction():
                store.delete_run(run_id)
                for table, path in files.items():
                    rows[table] = con.execute(
                        f"INSERT INTO {table} BY NAME SELECT * FROM read_parquet(?)", [str(path)]
                    ).fetchone()[0]
                    fault_point("restore.write")
                if index is not None:
                    rows |= restore_index_rows(store, index, run_id)
                con.execute("INSERT INTO restored VALUES (?, ?, ?)", [run_id, str(folder), digest])
        except duckdb.Error as exc:
            msg = str(exc).splitlines()[0]
            raise GradLensError(f"cannot restore {folder} into {db}: {msg}") from None
        if index is None:
            remove_run_index(db, run_id)
    seconds = time.perf_counter() - t0
    return RestoreSummary(
        name, run_id, str(db), str(folder), digest, rows, seconds, replaced=existing is not None
    )
