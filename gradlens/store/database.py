"""DuckDB store, the write side: the schema (a contract, see the README's "DuckDB schema"), runs,
bulk inserts in one transaction, export. Pages and reports read through ``gradlens.runs.read``.

Every database records its schema version (``meta``: ``schema_version``), written when the
file is created. Opening a file checks it before anything is written: a file that is not
DuckDB, a DuckDB database of another schema version, or one without GradLens tables is refused
with one line (``DatabaseError``) and left byte for byte as it was. A database without a
recorded version is accepted when its tables are this version's; it may lack the
``OPTIONAL_TABLES``, which its first writer creates before recording the version."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from gradlens.errors import DatabaseError, DatabaseLockedError, GradLensError, show

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, name VARCHAR UNIQUE, created_at TIMESTAMP,
    status VARCHAR, config JSON, stats JSON);
CREATE TABLE IF NOT EXISTS components (
    run_id VARCHAR, component_idx INTEGER, component VARCHAR, layer INTEGER, kind VARCHAR,
    n_params BIGINT, param_name VARCHAR);
CREATE TABLE IF NOT EXISTS examples (
    run_id VARCHAR, split VARCHAR, example_id VARCHAR, prompt VARCHAR, response VARCHAR,
    n_tokens INTEGER);
CREATE TABLE IF NOT EXISTS candidates (
    run_id VARCHAR, query_id VARCHAR, candidate_id VARCHAR, rank INTEGER, bm25 DOUBLE);
CREATE TABLE IF NOT EXISTS dots (
    run_id VARCHAR, method VARCHAR, query_id VARCHAR, candidate_id VARCHAR,
    component_idx INTEGER, dot DOUBLE);
CREATE TABLE IF NOT EXISTS norms (
    run_id VARCHAR, method VARCHAR, split VARCHAR, example_id VARCHAR, component_idx INTEGER,
    sqnorm DOUBLE);
CREATE TABLE IF NOT EXISTS progress (run_id VARCHAR, query_id VARCHAR);
CREATE TABLE IF NOT EXISTS selection_curves (
    run_id VARCHAR, method VARCHAR, objective VARCHAR, step INTEGER, component_idx INTEGER,
    component VARCHAR, accuracy DOUBLE, fidelity DOUBLE, param_fraction DOUBLE,
    heldout_accuracy DOUBLE);
CREATE TABLE IF NOT EXISTS restored (run_id VARCHAR, source VARCHAR, digest VARCHAR);
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
"""
#: Tables added to schema version 1 after its first files were written: a database of this
#: version may lack them, and every writer creates the missing ones when it opens the file.
#: Their columns are checked like ``SCHEMA``'s where they exist.
ADDED_TABLES: dict[str, str] = {
    "headline": """CREATE TABLE IF NOT EXISTS headline (
        run_id VARCHAR, method VARCHAR, position INTEGER, id VARCHAR, metric VARCHAR,
        type VARCHAR, detail VARCHAR, in_sample BOOLEAN, accuracy DOUBLE, ci_lo DOUBLE,
        ci_hi DOUBLE, ci_method VARCHAR, null_hi DOUBLE, diff_lo DOUBLE, diff_hi DOUBLE,
        k DOUBLE, param_fraction DOUBLE, heldout_id VARCHAR, folds INTEGER, seed INTEGER,
        null_draws INTEGER)""",
    "null_bands": """CREATE TABLE IF NOT EXISTS null_bands (
        run_id VARCHAR, method VARCHAR, procedure VARCHAR, step INTEGER, component_idx INTEGER,
        band_lo DOUBLE, band_hi DOUBLE, draws INTEGER, seed INTEGER)""",
    "select_timings": """CREATE TABLE IF NOT EXISTS select_timings (
        run_id VARCHAR, method VARCHAR, what VARCHAR, objective VARCHAR, seconds DOUBLE)""",
}
#: The version of ``SCHEMA``, recorded in ``meta``; change it with any change to the tables.
SCHEMA_VERSION = 1
#: Tables a database without a recorded version may lack (its first writer creates them).
OPTIONAL_TABLES = ("selection_curves", "restored", "meta")
#: Tables holding a run's rows (besides ``runs``), in the order they are written.
DATA_TABLES = (
    "components",
    "examples",
    "candidates",
    "dots",
    "norms",
    "progress",
    "selection_curves",
    "restored",
    *ADDED_TABLES,
)
#: Tables an export carries (``progress`` is bookkeeping of an unfinished compute, ``restored``
#: records which exported files a run was restored from: both belong to the database).
EXPORT_TABLES = ("runs",) + tuple(t for t in DATA_TABLES if t not in ("progress", "restored"))


_COLUMNS: dict[str, list[tuple[str, str]]] = {}


def _table_columns(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[str, str]]]:
    """``{table: [(column, type), ...]}`` of the main schema of ``con``'s own database."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "ORDER BY table_name, column_index"
    ).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in rows:
        out.setdefault(table, []).append((column, kind))
    for (table,) in con.execute(
        "SELECT table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = 'main'"
    ).fetchall():
        out.setdefault(table, [])
    return out


def expected_columns() -> dict[str, list[tuple[str, str]]]:
    """The tables and columns of ``SCHEMA`` (as DuckDB reports them)."""
    if not _COLUMNS:
        con = duckdb.connect(":memory:")
        try:
            con.execute(SCHEMA)
            for ddl in ADDED_TABLES.values():
                con.execute(ddl)
            _COLUMNS.update(_table_columns(con))
        finally:
            con.close()
    return _COLUMNS


def check_schema(con: duckdb.DuckDBPyConnection, path: str | Path) -> str:
    """Which GradLens database ``con`` holds, reading only: ``"current"`` (this schema version),
    ``"unversioned"`` (this version's tables without a recorded version; the
    ``OPTIONAL_TABLES`` may be missing) or ``"empty"`` (no table at all: a file just created).
    DatabaseError naming the file for anything else."""
    have = _table_columns(con)
    objects = con.execute(
        "SELECT (SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database()) "
        "+ (SELECT count(*) FROM duckdb_views() WHERE database_name = current_database() "
        "AND NOT internal)"
    ).fetchone()[0]
    if not objects:
        return "empty"
    want = expected_columns()
    if "meta" in have:
        try:
            rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except duckdb.Error:
            rows = [("unreadable",)]
        version = rows[0][0] if rows else None
        if version != str(SCHEMA_VERSION):
            try:
                newer = int(version) > SCHEMA_VERSION
            except (TypeError, ValueError):
                newer = None
            hint = {
                True: "written by a newer GradLens: upgrade GradLens to read it",
                False: "written by an older GradLens: recompute or re-import its runs "
                "into a new database",
                None: "pass another --db",
            }[newer]
            raise DatabaseError(
                f"{path}: GradLens database schema version {show(version)}, this GradLens "
                f"reads version {SCHEMA_VERSION} ({hint})"
            )
        state = "current"
    elif not set(have) & set(want):
        raise DatabaseError(
            f"{path}: a DuckDB database without GradLens tables (no table 'runs'); "
            "pass another --db"
        )
    else:
        state = "unversioned"
    optional = (set(OPTIONAL_TABLES) if state == "unversioned" else set()) | set(ADDED_TABLES)
    missing = sorted(set(want) - set(have) - optional)
    if missing:
        raise DatabaseError(
            f"{path}: not a GradLens database of schema version {SCHEMA_VERSION} "
            f"(table {missing[0]} is missing); pass another --db"
        )
    for table in sorted(set(want) & set(have)):
        if have[table] != want[table]:
            raise DatabaseError(
                f"{path}: table {table} has columns {show(have[table], 80)}, schema version "
                f"{SCHEMA_VERSION} has {show(want[table], 80)} (written by another GradLens?)"
            )
    return state


#: DuckDB's file magic, at byte 8 of every database file.
DUCKDB_MAGIC = (8, b"DUCK")
#: Every connection to a database file: no extension is downloaded or loaded on the file's
#: behalf (DuckDB would fetch a SQLite reader for a SQLite file, or a spatial one for a table
#: of its types); what GradLens needs (parquet, json, icu) is built in.
CONNECT_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _is_duckdb_file(path: Path) -> bool:
    """False for an existing file that does not start like a DuckDB database (before DuckDB
    reads it); True when it does, or when it cannot be read here (DuckDB then says why)."""
    try:
        with path.open("rb") as f:
            head = f.read(DUCKDB_MAGIC[0] + len(DUCKDB_MAGIC[1]))
    except FileNotFoundError:
        return True  # a new database
    except OSError:
        return True
    return head[DUCKDB_MAGIC[0] :] == DUCKDB_MAGIC[1]


def _open_error(path: str | Path, exc: Exception) -> GradLensError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "not a valid DuckDB database file" in msg:
        return DatabaseError(f"cannot open database {path}: not a DuckDB database file")
    if "lock" in msg.lower() or "different configuration" in msg:
        return DatabaseLockedError(f"cannot open database {path}: {msg}")
    return DatabaseError(f"cannot open database {path}: {msg}")


def check_database(path: str | Path) -> None:
    """Fail early (DatabaseError, one line) when ``path`` exists and is not a GradLens database
    of this schema version a writer could use; reads only. A missing file, an empty DuckDB
    database and one another process holds (checked again when written) pass."""
    path = Path(path)
    if not path.exists():
        return
    try:
        Store(path, read_only=True).close()
    except DatabaseLockedError:
        return
    except DatabaseError as exc:
        if "an empty DuckDB database" not in str(exc):
            raise


class Store:
    """A GradLens DuckDB file. Bulk writes go through pandas frames (``INSERT ... BY NAME``).

    Opening checks the schema version first (``check_schema``) and refuses, without writing, a
    file that is not a GradLens database of this version; a writer creates a new file's tables
    and records the version."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self._in_transaction = False
        if read_only and not self.path.exists():
            raise DatabaseError(f"database {path} does not exist")
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if not _is_duckdb_file(self.path):
                raise DatabaseError(f"cannot open database {path}: not a DuckDB database file")
            self.con = duckdb.connect(str(self.path), read_only=read_only, config=CONNECT_CONFIG)
        except (duckdb.Error, OSError) as exc:
            raise _open_error(path, exc) from None
        try:
            state = check_schema(self.con, path)
            if state == "empty" and read_only:
                raise DatabaseError(f"{path}: an empty DuckDB database (no GradLens tables)")
            if state != "current" and not read_only:
                with self.transaction():
                    self.con.execute(SCHEMA)
                    self.con.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
                    )
            if not read_only:
                self._add_tables()
        except duckdb.Error as exc:
            self.con.close()
            raise _open_error(path, exc) from None
        except BaseException:
            self.con.close()
            raise

    def _add_tables(self) -> None:
        """Create the ``ADDED_TABLES`` this file lacks (one transaction; none when all exist)."""
        have = {
            r[0]
            for r in self.con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
        }
        missing = [ddl for name, ddl in ADDED_TABLES.items() if name not in have]
        if missing:
            with self.transaction():
                for ddl in missing:
                    self.con.execute(ddl)

    def has_table(self, table: str) -> bool:
        """Whether the file holds ``table`` (an ``ADDED_TABLES`` one may be missing from a
        file no writer opened since it was added)."""
        return bool(
            self.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND table_name = ?",
                [table],
            ).fetchall()[0][0]
        )

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """All writes inside the block land together or not at all (ROLLBACK on any error,
        KeyboardInterrupt included). A block nested in another joins the outer transaction."""
        if self._in_transaction:
            yield self
            return
        self.con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield self
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        self.con.execute("COMMIT")

    # -- runs --------------------------------------------------------------------------------
    def run(self, run_id: str) -> dict | None:
        """The ``runs`` row of ``run_id`` as a dict, or None."""
        df = self.con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
        return None if df.empty else df.iloc[0].to_dict()

    def resolve(self, name_or_id: str) -> dict:
        """The run named (or with id) ``name_or_id``; GradLensError listing the runs if none."""
        df = self.con.execute(
            "SELECT * FROM runs WHERE name = ? OR run_id = ?", [name_or_id, name_or_id]
        ).df()
        if df.empty:
            names = ", ".join(self.con.execute("SELECT name FROM runs").df()["name"]) or "none"
            raise GradLensError(f"no run '{name_or_id}' in {self.path} (runs: {names})")
        return df.iloc[0].to_dict()

    def name_owner(self, name: str, run_id: str) -> str | None:
        """The id of another run than ``run_id`` named ``name``, or None."""
        row = self.con.execute(
            "SELECT run_id FROM runs WHERE name = ? AND run_id <> ?", [name, run_id]
        ).fetchone()
        return None if row is None else row[0]

    def begin_run(self, run_id: str, name: str, config: dict) -> dict:
        """Create the run (status ``running``) unless it exists; returns its row."""
        existing = self.run(run_id)
        if existing is not None:
            return existing
        other = self.con.execute("SELECT run_id FROM runs WHERE name = ?", [name]).fetchone()
        if other is not None:
            raise GradLensError(
                f"run name '{name}' is already used by a run with a different configuration "
                f"({other[0]}); pass another --run"
            )
        self.con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, 'running', ?, NULL)",
            [run_id, name, dt.datetime.now(dt.UTC).replace(tzinfo=None), json.dumps(config)],
        )
        return self.run(run_id)

    def mark_complete(self, run_id: str, stats: dict) -> None:
        self.con.execute(
            "UPDATE runs SET status = 'complete', stats = ? WHERE run_id = ?",
            [json.dumps(stats), run_id],
        )

    def list_runs(self) -> pd.DataFrame:
        return self.con.execute(
            """SELECT r.name, r.run_id, r.status, r.created_at,
                      (SELECT count(DISTINCT query_id) FROM candidates c
                        WHERE c.run_id = r.run_id) AS queries,
                      (SELECT count(*) FROM components k WHERE k.run_id = r.run_id) AS components,
                      (SELECT string_agg(DISTINCT method, ',' ORDER BY method) FROM norms n
                        WHERE n.run_id = r.run_id) AS methods
               FROM runs r ORDER BY r.created_at"""
        ).df()

    # -- bulk writes -------------------------------------------------------------------------
    def insert(self, table: str, run_id: str, frame: pd.DataFrame) -> None:
        """Append ``frame`` (columns by name, without run_id) to ``table`` for ``run_id``."""
        if frame.empty:
            return
        frame = frame.assign(run_id=run_id)
        self.con.register("_gradlens_frame", frame)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _gradlens_frame")
        finally:
            self.con.unregister("_gradlens_frame")

    def has_rows(self, table: str, run_id: str) -> bool:
        return bool(
            self.con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchone()[
                0
            ]
        )

    def done_queries(self, run_id: str) -> set[str]:
        rows = self.con.execute(
            "SELECT query_id FROM progress WHERE run_id = ?", [run_id]
        ).fetchall()
        return {r[0] for r in rows}

    def normed_examples(self, run_id: str, split: str) -> set[str]:
        rows = self.con.execute(
            "SELECT DISTINCT example_id FROM norms WHERE run_id = ? AND split = ?", [run_id, split]
        ).fetchall()
        return {r[0] for r in rows}

    def delete_run(self, run_id: str) -> None:
        """Remove the run and every row of it, in one transaction, then its index folder
        (``X.index/<run_id>/``; inside a caller's transaction the caller places or removes it,
        as ``import --from`` does)."""
        from gradlens.store.index import INDEX_TABLES, has_index_tables, remove_run_index

        outer = self._in_transaction
        index_tables = INDEX_TABLES if has_index_tables(self.con) else ()
        with self.transaction():
            for table in DATA_TABLES + ("runs",) + index_tables:
                self.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        if not outer:
            remove_run_index(self.path, run_id)

    # -- reads -------------------------------------------------------------------------------
    def frame(self, table: str, run_id: str, method: str | None = None) -> pd.DataFrame:
        """All rows of ``table`` for the run (optionally one method), without run_id."""
        sql = f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ?"
        args = [run_id]
        if method is not None:
            sql += " AND method = ?"
            args.append(method)
        return self.con.execute(sql, args).df()

    def methods(self, run_id: str) -> list[str]:
        rows = self.con.execute(
            "SELECT DISTINCT method FROM norms WHERE run_id = ? ORDER BY method = 'exact' DESC, "
            "method",
            [run_id],
        ).fetchall()
        return [r[0] for r in rows]

    def export(self, run_id: str, out_dir: str | Path) -> list[Path]:
        """Write each of ``EXPORT_TABLES``' rows of the run to ``out_dir/<table>.parquet``, and
        its index (if any) into ``out_dir/index/`` (``gradlens.store.index.export_index``).

        Written through Arrow (no SQL string holds the path, so any file name works)."""
        import pyarrow.parquet as pq

        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GradLensError(f"cannot create {out}: {exc.strerror}") from None
        paths = []
        for table in EXPORT_TABLES:
            path = out / f"{table}.parquet"
            if self.has_table(table):
                rows = self.con.sql(
                    f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", params=[run_id]
                ).to_arrow_table()
            else:  # an added table no writer created in this file yet: no rows, its columns
                with duckdb.connect(":memory:") as empty:
                    empty.execute(ADDED_TABLES[table])
                    rows = empty.sql(f"SELECT * FROM {table}").to_arrow_table()
            pq.write_table(rows, path)
            paths.append(path)
        from gradlens.store.index import export_index  # the run's index, into out/index/

        return paths + export_index(self.con, self.path, run_id, out)
