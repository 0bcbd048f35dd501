"""Where a running compute job writes, so that the database it reports into is never held for the
whole job (docs/design.md, "Readers and writers").

DuckDB allows one read-write process or many readers per file, never both. A compute job for
``--db X`` therefore writes every row into its own file ``X.work/<run_id>.duckdb`` (the schema of
``gradlens.store.database``; resumable: a rerun continues from it), writes its progress to
``X.work/<run_id>.progress.json`` (a ``gradlens.files.Progress``, replaced atomically), and only
when the run is complete publishes it into X: one short read-write connection, retried while
readers hold the file, that copies the run's rows in one transaction. The dashboard reads X with
short read-only connections and never meets a lock held for longer than a publish.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from gradlens.errors import DatabaseLockedError, GradLensError
from gradlens.faults import fault_point
from gradlens.files import Progress, read_progress
from gradlens.store.connect import write_store
from gradlens.store.database import DATA_TABLES, Store
from gradlens.store.index import INDEX_TABLES, ensure_index_tables, has_index_tables

__all__ = [
    "RunLock",
    "job_files",
    "progress_file",
    "publish",
    "running_jobs",
    "work_dir",
    "work_file",
]


def work_dir(db: str | Path) -> Path:
    """``X.work/`` beside the database ``X``."""
    db = Path(db)
    return db.with_name(db.name + ".work")


def work_file(db: str | Path, run_id: str) -> Path:
    return work_dir(db) / f"{run_id}.duckdb"


class RunLock:
    """An exclusive lock on computing one run into one database (``X.work/<run_id>.lock``,
    ``flock``: held per open file, so a second job conflicts whether it runs in another process
    or in this one; released when the holder exits, however it exits)."""

    def __init__(self, db: str | Path, run_id: str, name: str) -> None:
        self.path = work_dir(db) / f"{run_id}.lock"
        self.run_id, self.name = run_id, name
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise GradLensError(
                f"run '{self.name}' ({self.run_id}) is already being computed by process "
                f"{holder}; wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def open_work_store(db: str | Path, run_id: str, name: str) -> Store:
    """The job's own read-write file (call with the run's ``RunLock`` held)."""
    path = work_file(db, run_id)
    try:
        return Store(path)
    except DatabaseLockedError:
        raise GradLensError(
            f"run '{name}' ({run_id}): {path} is held by another process; wait for it to "
            "finish or stop it"
        ) from None


def publish(
    work: str | Path,
    db: str | Path,
    run_id: str,
    record: Callable[[Store], None] | None = None,
) -> None:
    """Copy every row of ``run_id`` from the finished work file into ``db`` (replacing any
    earlier rows of that run, its index description included) in one transaction under a short
    write lock, then delete the work file. The work file must be closed. ``record(store)`` adds
    rows inside the same transaction (the run's index, already moved into place)."""
    work = Path(work)
    tables = ("runs",) + tuple(t for t in DATA_TABLES if t != "progress")
    with write_store(db) as store:
        store.con.execute("ATTACH ? AS work (READ_ONLY)", [str(work)])
        try:
            with store.transaction():
                indexed = record is not None or has_index_tables(store.con)
                if indexed:
                    ensure_index_tables(store.con)
                for table in ("runs",) + DATA_TABLES + (INDEX_TABLES if indexed else ()):
                    store.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
                for table in tables:
                    store.con.execute(
                        f"INSERT INTO {table} BY NAME SELECT * FROM work.{table} WHERE run_id = ?",
                        [run_id],
                    )
                    fault_point("compute.publish")
                if record is not None:
                    record(store)
        finally:
            store.con.execute("DETACH work")
    fault_point("compute.published")
    for path in (work, _wal(work)):
        path.unlink(missing_ok=True)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def job_files(db: str | Path, run_id: str) -> list[Path]:
    """The files a compute job of ``run_id`` writes beside ``db`` (work file, its WAL and the
    progress file; not the lock file, which stays)."""
    work = work_file(db, run_id)
    return [work, _wal(work), progress_file(db, run_id)]


def progress_file(db: str | Path, run_id: str) -> Path:
    return work_dir(db) / f"{run_id}.progress.json"


def running_jobs(db: str | Path) -> list[Progress]:
    """Progress of every job that reports into ``db`` (newest first), finished ones included
    until their files are removed."""
    out = [read_progress(p) for p in sorted(work_dir(db).glob("*.progress.json"))]
    return sorted((p for p in out if p is not None), key=lambda p: -p.updated)
