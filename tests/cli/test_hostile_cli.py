"""Hostile input through the CLI: exit 2 and exactly one stderr line ``gradlens: error: …``
naming the file (and line, field or column), no traceback, and the database not created or not
modified. The Python API's side of the same checks is ``tests/unit/test_hostile.py``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pandas as pd
import pytest

from gradlens.cli import main
from gradlens.store.database import SCHEMA_VERSION, Store
from tests.conftest import REPO
from tests.helpers import synthetic_import_args
from tests.unit.test_hostile import long_tables

GOOD = [
    {"id": "a", "prompt": "What is water?", "response": "Water is H2O."},
    {"id": "b", "prompt": "What is ice?", "response": "Ice is frozen water."},
]
PREFIX = "gradlens: error: "


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of ``gradlens args`` in this process."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()]


def fails(capsys, *args, parts: tuple[str, ...]) -> str:
    """The command exits 2 with one stderr line starting ``gradlens: error:`` holding every
    part; returns that line."""
    rc, lines = run_cli(capsys, *args)
    assert rc == 2 and len(lines) == 1, (rc, lines)
    assert lines[0].startswith(PREFIX), lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def digest(path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def compute(train, queries, db, *extra, model="smollm2"):
    return ("compute", "--model", model, "--train", train, "--queries", queries, "--db", db,
            "--no-progress", *extra)  # fmt: skip


# --------------------------------------------------------------------------------------------
# dataset files: nothing is created


def _write(name: str, content):
    def make(tmp_path):
        path = tmp_path / name
        if isinstance(content, pd.DataFrame):
            content.to_parquet(path)
        else:
            path.write_bytes(content)
        return path

    return make


BAD_DATA = {
    "JSON line that is a list": (
        _write("d.jsonl", json.dumps(GOOD[0]).encode() + b"\n[1, 2]\n"),
        ":2: expected a JSON object, got list",
    ),
    "JSON line that is a number": (
        _write("d.jsonl", b"42\n"),
        ":1: expected a JSON object, got int",
    ),
    "field of the wrong type": (
        _write("d.jsonl", json.dumps({**GOOD[0], "response": ["x"]}).encode()),
        ":1: field 'response' must be a string, got list",
    ),
    "CSV with wrong columns": (
        _write("d.csv", b"question,answer\nq,a\n"),
        "missing column 'id'",
    ),
    "CSV row with extra fields": (
        _write("d.csv", b"id,prompt,response\na,p,r,x\n"),
        ":2: 4 fields, the header has 3",
    ),
    "Parquet with wrong types": (
        _write("d.parquet", pd.DataFrame({"id": [1, 2], "prompt": ["p", "q"], "response": "r"})),
        "column 'id' has type int64, expected string",
    ),
    "file that is not text": (
        _write("d.jsonl", bytes(range(256)) * 4),
        ": not a text file (NUL byte",
    ),
    "Parquet file named .csv": (
        lambda tmp: _write("d.csv", _parquet_bytes(tmp))(tmp),
        "d.csv",
    ),
}


def _parquet_bytes(tmp_path) -> bytes:
    path = tmp_path / "real.parquet"
    pd.DataFrame(GOOD).to_parquet(path)
    return path.read_bytes()


@pytest.mark.parametrize("role", ["train", "queries"])
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_compute_refuses_a_hostile_data_file(case, role, tmp_path, capsys):
    make, expected = BAD_DATA[case]
    bad = make(tmp_path)
    good = write_jsonl(tmp_path / "good.jsonl", GOOD)
    train, queries = (bad, good) if role == "train" else (good, bad)
    db = tmp_path / "x.duckdb"
    fails(capsys, *compute(train, queries, db), parts=(str(bad), expected))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("x.")) == []


def test_compute_max_length_that_leaves_no_loss_bearing_token(tmp_path, capsys, tiny_model_dir):
    """Tokenisation errors come after the model loads: the line names the file, line and
    example and says what --max-length would do; no database is written."""
    train = write_jsonl(tmp_path / "t.jsonl", GOOD)
    queries = write_jsonl(tmp_path / "q.jsonl", [{**GOOD[1], "prompt": "word " * 80}])
    db = tmp_path / "x.duckdb"
    line = fails(
        capsys,
        *compute(train, queries, db, "--max-length", 40, model=tiny_model_dir),
        parts=(f"{queries}:1: example 'b': no loss-bearing token left: --max-length 40 cuts",),
    )
    assert "use --max-length" in line
    assert not db.exists()


# --------------------------------------------------------------------------------------------
# long tables: the database is not created, or not modified


def _import_args(db, dots, norms, run="r"):
    return ("import", "--db", db, "--run", run, "--dots", dots, "--norms", norms)


def _edit(col, row, value):
    def edit(frame):
        frame = frame.copy()
        frame.loc[row, col] = value
        return frame

    return edit


BAD_TABLES = {
    "NaN dot": (dict(dots=_edit("dot", 3, np.nan)), "dots", "column 'dot' must be a finite"),
    "inf dot": (dict(dots=_edit("dot", 0, np.inf)), "dots", "got inf at query_id="),
    "inf sqnorm": (dict(norms=_edit("sqnorm", 1, np.inf)), "norms", "got inf at split="),
    "missing pair component": (
        dict(dots=lambda d: d.drop(index=2)),
        "dots",
        "components: no row for component",
    ),
    "duplicate dots row": (
        dict(dots=lambda d: pd.concat([d, d.iloc[[0]]])),
        "dots",
        "duplicate (query_id, candidate_id, component) row at query_id=",
    ),
    "duplicate norms row": (
        dict(norms=lambda n: pd.concat([n, n.iloc[[0]]])),
        "norms",
        "duplicate (split, example_id, component) row at split=",
    ),
    "wrong column types": (
        dict(dots=lambda d: d.assign(dot=d["dot"].astype(str))),
        "dots",
        "column 'dot' must hold numbers",
    ),
    "wrong columns": (
        dict(norms=lambda n: n.rename(columns={"example_id": "id"})),
        "norms",
        "missing column 'example_id'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_import_refuses_hostile_long_tables(case, tmp_path, capsys, syn_db):
    edits, culprit, expected = BAD_TABLES[case]
    dp, np_, _, _ = long_tables(tmp_path, **edits)
    path = dp if culprit == "dots" else np_
    db = tmp_path / "new.duckdb"
    fails(capsys, *_import_args(db, dp, np_), parts=(f"{PREFIX}{path}: ", expected))
    assert not db.exists()
    # an existing database is not touched either
    old = tmp_path / "old.duckdb"
    shutil.copyfile(syn_db, old)
    before = digest(old)
    fails(capsys, *_import_args(old, dp, np_), parts=(str(path), expected))
    assert digest(old) == before


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02 not a table", b"a;b\n1;2\n"])
def test_import_refuses_a_file_that_is_not_a_table(content, tmp_path, capsys):
    dp, np_, _, _ = long_tables(tmp_path)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    fails(capsys, *_import_args(tmp_path / "x.duckdb", bad, np_), parts=(str(bad),))
    assert not (tmp_path / "x.duckdb").exists()


# --------------------------------------------------------------------------------------------
# database files that are not this GradLens's: one line, the file left as it was


def _duckdb(path, *sql):
    con = duckdb.connect(str(path))
    for statement in sql:
        con.execute(statement)
    con.close()


@pytest.fixture(scope="module")
def syn_db(tmp_path_factory):
    """A database holding the synthetic run ``syn`` (copied by the tests that need one)."""
    tmp = tmp_path_factory.mktemp("hostile-syn")
    assert main(synthetic_import_args(tmp, tmp / "syn.duckdb")) == 0
    return tmp / "syn.duckdb"


def _newer(path, syn_db):
    shutil.copyfile(syn_db, path)
    _duckdb(path, f"UPDATE meta SET value = '{SCHEMA_VERSION + 1}'")


BAD_DBS = {
    "text file": (lambda p, t: p.write_text("id,name\n1,x\n"), "not a DuckDB database file"),
    "random bytes": (
        lambda p, t: p.write_bytes(np.random.default_rng(1).bytes(20_000)),
        "not a DuckDB database file",
    ),
    "DuckDB without GradLens tables": (
        lambda p, t: _duckdb(p, "CREATE TABLE sales (id INTEGER)", "INSERT INTO sales VALUES (1)"),
        "a DuckDB database without GradLens tables",
    ),
    "another schema version": (_newer, f"schema version '{SCHEMA_VERSION + 1}'"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A folder written by ``gradlens export`` (the synthetic run ``syn``)."""
    tmp = tmp_path_factory.mktemp("hostile-export")
    db = tmp / "src.duckdb"
    assert main(synthetic_import_args(tmp, db)) == 0
    assert main(["export", "--db", str(db), "--run", "syn", "--out", str(tmp / "out")]) == 0
    return tmp / "out"


COMMANDS = {
    "runs": lambda db, tmp, ex, model: ("runs", "--db", db),
    "select": lambda db, tmp, ex, model: ("select", "--db", db, "--run", "syn", "--folds", "2"),
    "export": lambda db, tmp, ex, model: ("export", "--db", db, "--run", "syn", "--out", tmp / "o"),
    "import": lambda db, tmp, ex, model: (*synthetic_import_args(tmp / "src", db),),
    "import --from": lambda db, tmp, ex, model: ("import", "--db", db, "--from", ex),
    "compute": lambda db, tmp, ex, model: compute(
        write_jsonl(tmp / "t.jsonl", GOOD), write_jsonl(tmp / "q.jsonl", GOOD[:1]), db, model=model
    ),
}


#: Every command meets a non-DuckDB file and another schema version; the other kinds (the
#: Store checks every kind for readers and writers, tests/unit/test_hostile.py) one reader and
#: one writer.
DB_MATRIX = [
    (case, command) for case in ("random bytes", "another schema version") for command in COMMANDS
] + [
    (case, command)
    for case in ("text file", "DuckDB without GradLens tables")
    for command in ("runs", "import")
]


@pytest.mark.parametrize(("case", "command"), DB_MATRIX)
def test_foreign_database_is_refused_and_left_as_it_was(
    case, command, tmp_path, capsys, exported, tiny_model_dir, syn_db
):
    make, expected = BAD_DBS[case]
    db = tmp_path / "x.duckdb"
    make(db, syn_db)
    capsys.readouterr()
    (tmp_path / "src").mkdir()
    before = digest(db)
    args = COMMANDS[command](db, tmp_path, exported, tiny_model_dir)
    line = fails(capsys, *args, parts=(str(db), expected))
    assert "another process" not in line, line  # said as what it is, not as a lock
    assert digest(db) == before
    assert not (tmp_path / "x.duckdb.wal").exists()
    # refused before anything starts: compute (and the dashboard's Compute page, which runs the
    # same validate_inputs) creates no work folder beside the database
    assert not (tmp_path / "x.duckdb.work").exists()


def test_database_of_this_version_without_a_recorded_version_keeps_working(
    tmp_path, capsys, syn_db
):
    """A database the current code wrote before ``meta`` existed: read as it is, and the first
    write records the version."""
    db = tmp_path / "old.duckdb"
    shutil.copyfile(syn_db, db)
    _duckdb(db, "DROP TABLE meta")
    before = digest(db)
    assert main(["runs", "--db", str(db)]) == 0
    assert "syn" in capsys.readouterr().out
    assert digest(db) == before
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    with Store(db, read_only=True) as store:
        assert store.con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]


# --------------------------------------------------------------------------------------------
# the real process: no traceback


def test_console_entry_point_prints_one_line(tmp_path):
    """A real ``gradlens import`` process on a NaN dot and a database that is not DuckDB."""
    db = tmp_path / "x.duckdb"
    db.write_bytes(b"\x00" * 100)
    dp, np_, _, _ = long_tables(tmp_path, dots=_edit("dot", 0, np.nan))
    args, culprit = [*_import_args(db, dp, np_)], dp
    proc = subprocess.run(
        [sys.executable, "-m", "gradlens", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(PREFIX), proc.stderr
    assert "Traceback" not in proc.stderr and str(culprit) in proc.stderr
