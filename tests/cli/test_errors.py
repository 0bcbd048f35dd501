"""Bad input: exit code 2 and exactly one line on stderr naming the file/line/field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gradlens.cli import main
from tests.conftest import REPO

GOOD = [
    {"id": "a", "prompt": "What is water?", "response": "Water is H2O."},
    {"id": "b", "prompt": "What is ice?", "response": "Ice is frozen water."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", GOOD)
    queries = write_jsonl(tmp_path / "queries.jsonl", GOOD[:1])
    return tmp_path, train, queries


def run_cli(capsys, *args):
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    return rc, lines


def compute_args(train, queries, db, *extra):
    return [
        "compute",
        "--model",
        "smollm2",
        "--train",
        str(train),
        "--queries",
        str(queries),
        "--db",
        str(db),
        "--no-progress",
        *extra,
    ]


def _bad_train(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


CASES = {
    "empty file": (b"", "empty file"),
    "broken JSON line": (
        json.dumps(GOOD[0]).encode() + b'\n{"id": "b", "prompt": \n',
        ":2: broken JSON",
    ),
    "missing field": (json.dumps({"id": "a", "prompt": "p"}).encode(), "missing field 'response'"),
    "duplicate id": (
        (json.dumps(GOOD[0]) + "\n" + json.dumps(GOOD[0])).encode(),
        "duplicate id 'a'",
    ),
    "non-string prompt": (
        json.dumps({"id": "a", "prompt": 3, "response": "r"}).encode(),
        "field 'prompt' must be a string",
    ),
    "empty prompt": (
        json.dumps({"id": "a", "prompt": "  ", "response": "r"}).encode(),
        "field 'prompt' is empty",
    ),
    "invalid UTF-8": (b'{"id": "a", "prompt": "caf\xe9", "response": "r"}\n', ":1: invalid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_training_file(case, files, capsys):
    tmp_path, _, queries = files
    content, expected = CASES[case]
    bad = _bad_train(tmp_path, "bad.jsonl", content)
    rc, lines = run_cli(capsys, *compute_args(bad, queries, tmp_path / "x.duckdb"))
    assert rc == 2
    assert len(lines) == 1, lines
    assert str(bad) in lines[0] and expected in lines[0]
    assert not (tmp_path / "x.duckdb").exists()  # nothing half-written


def test_query_without_original(files, capsys):
    tmp_path, train, _ = files
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "zzz", "prompt": "p", "response": "r"}])
    rc, lines = run_cli(capsys, *compute_args(train, q, tmp_path / "x.duckdb"))
    assert rc == 2 and len(lines) == 1
    assert "'zzz' has no original" in lines[0] and str(q) in lines[0]


def test_missing_file(files, capsys):
    tmp_path, train, _ = files
    rc, lines = run_cli(capsys, *compute_args(train, tmp_path / "nope.jsonl", tmp_path / "x.db"))
    assert rc == 2 and len(lines) == 1 and "nope.jsonl: file not found" in lines[0]


def test_candidates_zero(files, capsys):
    tmp_path, train, queries = files
    rc, lines = run_cli(
        capsys, *compute_args(train, queries, tmp_path / "x.duckdb", "--candidates", "0")
    )
    assert rc == 2 and len(lines) == 1 and "--candidates" in lines[0]


def test_unknown_model_path(files, capsys):
    tmp_path, train, queries = files
    args = compute_args(train, queries, tmp_path / "x.duckdb")
    args[args.index("smollm2")] = str(tmp_path / "no-such-model")
    rc, lines = run_cli(capsys, *args)
    assert rc == 2 and len(lines) == 1 and "no-such-model" in lines[0]


def test_unwritable_db(files, capsys):
    tmp_path, train, queries = files
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, lines = run_cli(capsys, *compute_args(train, queries, blocker / "sub" / "x.duckdb"))
    assert rc == 2 and len(lines) == 1 and "cannot open database" in lines[0]


def test_csv_and_parquet_errors_name_the_line(tmp_path, capsys):
    import pandas as pd

    csv = tmp_path / "t.csv"
    csv.write_text("id,prompt,response\na,p,r\nb,,r\n", encoding="utf-8")
    rc, lines = run_cli(capsys, *compute_args(csv, csv, tmp_path / "x.duckdb"))
    assert rc == 2 and len(lines) == 1 and f"{csv}:3: field 'prompt' is empty" in lines[0]
    pq = tmp_path / "t.parquet"
    pd.DataFrame({"id": ["a"], "prompt": ["p"]}).to_parquet(pq)
    rc, lines = run_cli(capsys, *compute_args(pq, pq, tmp_path / "x.duckdb"))
    assert rc == 2 and len(lines) == 1 and "missing column 'response'" in lines[0]


def test_console_entry_point_prints_no_traceback(tmp_path):
    """The real process: exit 2, one stderr line, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradlens",
            "compute",
            "--train",
            str(tmp_path / "missing.jsonl"),
            "--queries",
            str(tmp_path / "missing.jsonl"),
            "--db",
            str(tmp_path / "x.duckdb"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "missing.jsonl: file not found" in proc.stderr
