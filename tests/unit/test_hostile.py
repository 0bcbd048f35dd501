"""Hostile input through the Python API: every loader and the store raise the project's one-line
errors (``GradLensError`` subclasses) naming the file, line, field or column, never another
exception; a database file that is not this GradLens's is refused and left as it was. The CLI
side (exit 2, one stderr line) is ``tests/cli/test_hostile_cli.py``; the property-based test at
the end throws random bytes and random JSON at the loaders."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlens.data.examples import Example, load_examples, tokenize_all
from gradlens.errors import (
    DatabaseError,
    DataError,
    GradLensError,
    TableError,
    one_line,
)
from gradlens.runs import read as queries
from gradlens.store.database import SCHEMA_VERSION, Store, check_database
from gradlens.store.importer import read_long_tables
from tests.unit.test_paper_reference import synthetic

ROW = {"id": "a", "prompt": "What is water?", "response": "Water is H2O."}


def one_line_error(exc_info, *parts: str) -> str:
    """The error's message: one line (``splitlines``) holding every part."""
    msg = str(exc_info.value)
    assert len(msg.splitlines()) == 1, msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


def write_lines(path, *lines: object):
    """A JSONL file of ``lines`` (each a Python value dumped as JSON, or raw str/bytes)."""
    out = b""
    for line in lines:
        if isinstance(line, bytes):
            out += line + b"\n"
        elif isinstance(line, str):
            out += line.encode() + b"\n"
        else:
            out += json.dumps(line).encode() + b"\n"
    path.write_bytes(out)
    return path


# --------------------------------------------------------------------------------------------
# dataset files (JSONL, CSV, Parquet)

JSONL_CASES = {
    # a JSON line that is not an object
    "list line": ([ROW, [1, 2]], ":2: expected a JSON object, got list"),
    "number line": ([ROW, 3.5], ":2: expected a JSON object, got float"),
    "string line": (['"text"'], ":1: expected a JSON object, got str"),
    "null line": (["null"], ":1: expected a JSON object, got null"),
    # a required field of the wrong type
    "id is a number": ([{**ROW, "id": 7}], ":1: field 'id' must be a string, got int 7"),
    "id is null": ([{**ROW, "id": None}], ":1: field 'id' must be a string, got null"),
    "prompt is a list": ([{**ROW, "prompt": ["a"]}], ":1: field 'prompt' must be a string"),
    "response is an object": (
        [{**ROW, "response": {"t": 1}}],
        ":1: field 'response' must be a string, got dict",
    ),
    "response is a bool": ([{**ROW, "response": True}], "field 'response' must be a string"),
    "messages not a list": (
        [{"id": "a", "messages": "hi"}],
        ":1: field 'messages' must be a list, got str",
    ),
    "messages of numbers": (
        [{"id": "a", "messages": [1, 2]}],
        ":1: field 'messages' must hold objects",
    ),
    "message content a number": (
        [
            {
                "id": "a",
                "messages": [
                    {"role": "user", "content": 5},
                    {"role": "assistant", "content": "x"},
                ],
            }
        ],
        ":1: field 'messages[user].content' must be a string, got int",
    ),
    # what the CLI rejected before
    "missing field": ([{"id": "a", "prompt": "p"}], ":1: missing field 'response'"),
    "empty id": ([{**ROW, "id": " "}], ":1: field 'id' is empty"),
    "broken JSON": ([ROW, '{"id": '], ":2: broken JSON"),
    # JSON that Python's parser does not turn into a value
    "deep nesting": (["[" * 100_000 + "]" * 100_000], ":1: broken JSON (nested too deeply)"),
    "huge integer": (['{"id": ' + "9" * 5000 + "}"], ":1: broken JSON"),
    # a file that is not text
    "NUL byte": ([b'{"id": "a"\x00}'], ":1: not a text file (NUL byte"),
    "invalid UTF-8": ([b'{"id": "caf\xe9"}'], ":1: invalid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_hostile_jsonl(case, tmp_path):
    lines, expected = JSONL_CASES[case]
    path = write_lines(tmp_path / "d.jsonl", *lines)
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert one_line_error(err, expected).startswith(str(path))


def test_binary_files_are_not_text(tmp_path):
    """A gzip file and a Parquet file named .jsonl: one line naming the file, no traceback."""
    gz = tmp_path / "g.jsonl"
    gz.write_bytes(gzip.compress(json.dumps(ROW).encode() * 50))
    pq = tmp_path / "p.parquet"
    pd.DataFrame([ROW]).to_parquet(pq)
    renamed = tmp_path / "p.jsonl"
    renamed.write_bytes(pq.read_bytes())
    for path in (gz, renamed):
        with pytest.raises(DataError) as err:
            load_examples(path)
        msg = one_line_error(err, str(path))
        assert "not a text file" in msg or "invalid UTF-8" in msg


def test_extra_fields_of_any_type_are_ignored(tmp_path):
    extra = {"hard": True, "score": float("nan"), "meta": {"x": [1, None]}, "n": 10**30}
    path = write_lines(tmp_path / "d.jsonl", {**ROW, **extra}, {**ROW, "id": "b", "list": []})
    csv = tmp_path / "d.csv"
    pd.DataFrame([{**ROW, "extra": 1}]).to_csv(csv, index=False)
    pq = tmp_path / "d.parquet"
    pd.DataFrame([{**ROW, "when": pd.Timestamp(0), "v": [1.5]}]).to_parquet(pq)
    assert [e.id for e in load_examples(path)] == ["a", "b"]
    assert load_examples(csv) == load_examples(pq) == [Example(**ROW)]


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROW).encode() + b"\n")
    assert load_examples(path) == [Example(**ROW)]


def test_ids_with_line_breaks_stay_on_one_line(tmp_path):
    bad = {**ROW, "id": "a\nb\u2028c"}
    path = write_lines(tmp_path / "d.jsonl", bad, bad)
    with pytest.raises(DataError) as err:
        load_examples(path)
    one_line_error(err, f"{path}:2: duplicate id 'a\\nb\\u2028c' (first at {path}:1)")


def test_gradlens_error_messages_are_one_line():
    assert str(GradLensError("a\nb\r\nc\x1cd")) == "a\\nb\\r\\nc\\x1cd"
    assert one_line("x\u2029y").splitlines() == ["x\\u2029y"]


CSV_CASES = {
    "wrong columns": (b"name,text,answer\na,p,r\n", "missing column 'id' (columns: 'name, te"),
    "no response column": (b"id,prompt\na,p\n", "missing column 'response'"),
    "short row": (b"id,prompt,response\na,p\n", ":2: 2 fields, the header has 3"),
    "ragged row": (b"id,prompt,response\na,p,r,x,y\n", ":2: 5 fields, the header has 3"),
    "quoted line break": (b'id,prompt,response\na,"p\nq",r\nb,p\n', ":4: 2 fields"),
    "duplicate column": (b"id,prompt,response,id\na,p,r,b\n", "column 'id' appears 2 times"),
    "bad quoting": (b'id,prompt,response\na,"p"x"\n', ":2: "),
    "empty field": (b"id,prompt,response\na,,r\n", ":2: field 'prompt' is empty"),
    "header only": (b"id,prompt,response\n", "no examples (empty file)"),
    "empty file": (b"\n\n", "no examples (empty file)"),
    "NUL byte": (b"id,prompt,response\na,p\x00,r\n", ":2: not a text file"),
    "invalid UTF-8": (b"id,prompt,response\na,\xff,r\n", ":2: invalid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_hostile_csv(case, tmp_path):
    content, expected = CSV_CASES[case]
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert one_line_error(err, expected).startswith(str(path))


PARQUET_CASES = {
    "id is int64": (
        pd.DataFrame({"id": [1], "prompt": ["p"], "response": ["r"]}),
        "column 'id' has type int64, expected string",
    ),
    "prompt is double": (
        pd.DataFrame({"id": ["a"], "prompt": [1.5], "response": ["r"]}),
        "column 'prompt' has type double, expected string",
    ),
    "response is a list": (
        pd.DataFrame({"id": ["a"], "prompt": ["p"], "response": [["r"]]}),
        "column 'response' has type list<element: string>, expected string",
    ),
    "null prompt": (
        pd.DataFrame({"id": ["a", "b"], "prompt": ["p", None], "response": ["r", "r"]}),
        ": row 2: missing field 'prompt'",
    ),
    "messages of numbers": (
        pd.DataFrame({"id": ["a"], "messages": [[1, 2]]}),
        ": row 1: field 'messages' must hold objects",
    ),
    "wrong columns": (pd.DataFrame({"x": ["a"]}), "missing column 'id' (columns: 'x')"),
}


@pytest.mark.parametrize("case", sorted(PARQUET_CASES))
def test_hostile_parquet(case, tmp_path):
    frame, expected = PARQUET_CASES[case]
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError) as err:
        load_examples(path)
    assert one_line_error(err, expected).startswith(str(path))


def test_parquet_string_kinds_are_accepted(tmp_path):
    """Every Arrow string type is text (a strict type check must not refuse them)."""
    import pyarrow as pa
    import pyarrow.parquet as papq

    table = pa.table(
        {
            "id": pa.array(["a"], pa.string_view()),
            "prompt": pa.array([ROW["prompt"]], pa.large_string()),
            "response": pa.array([ROW["response"]]).dictionary_encode(),
        }
    )
    papq.write_table(table, tmp_path / "d.parquet")
    assert load_examples(tmp_path / "d.parquet") == [Example(**ROW)]


def test_not_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text("id,prompt,response\na,p,r\n")
    with pytest.raises(DataError) as err:
        load_examples(path)
    one_line_error(err, f"{path}: cannot read as Parquet")


def test_unreadable_file(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ROW)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user that reads any file")
        with pytest.raises(DataError) as err:
            load_examples(path)
        one_line_error(err, f"{path}: cannot read (Permission denied)")
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------------------------
# tokenisation: an example with no loss-bearing token


class AsciiTokenizer:
    """A tokenizer without chat template or end token that drops every non-ASCII character."""

    chat_template = None
    eos_token = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text if ord(c) < 128]}


def test_response_without_tokens_is_an_error(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ROW, {**ROW, "id": "b", "response": "ééé"})
    examples = load_examples(path)
    assert len(tokenize_all(AsciiTokenizer(), examples[:1])) == 1
    with pytest.raises(DataError) as err:
        tokenize_all(AsciiTokenizer(), examples)
    one_line_error(err, f"{path}:2: example 'b': no loss-bearing token: the response gives no")


def test_max_length_that_cuts_the_response_away_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ROW, {**ROW, "id": "b", "prompt": "x" * 40})
    examples = load_examples(path)
    n_prompt = len("x" * 40 + "\n")  # AsciiTokenizer: one token a character
    tokenize_all(AsciiTokenizer(), examples, max_length=n_prompt + 1)
    with pytest.raises(DataError) as err:
        tokenize_all(AsciiTokenizer(), examples, max_length=n_prompt)
    one_line_error(
        err,
        f"{path}:2: example 'b': no loss-bearing token left: --max-length {n_prompt} cuts the "
        f"response away",
        f"use --max-length {n_prompt + 1} or more",
    )


# --------------------------------------------------------------------------------------------
# long tables (gradlens import)


@functools.cache
def _setting_a() -> tuple[pd.DataFrame, pd.DataFrame]:
    d, n, _ = synthetic(seed=3)
    d = d[d["setting"] == "a"].drop(columns="setting").reset_index(drop=True)
    n = n[n["setting"] == "a"].drop(columns="setting").reset_index(drop=True)
    return d, n


def long_tables(tmp_path, dots=None, norms=None, fmt="parquet"):
    """The synthetic setting 'a' written as dots/norms files, after ``dots``/``norms`` edits."""
    d, n = (frame.copy() for frame in _setting_a())
    d = dots(d) if dots else d
    n = norms(n) if norms else n
    dp, np_ = tmp_path / f"dots.{fmt}", tmp_path / f"norms.{fmt}"
    if fmt == "parquet":
        d.to_parquet(dp)
        n.to_parquet(np_)
    else:
        d.to_csv(dp, index=False)
        n.to_csv(np_, index=False)
    return dp, np_, d, n


def _set(col, row, value):
    def edit(frame):
        frame = frame.copy()
        if isinstance(value, str) and frame[col].dtype != object:
            frame[col] = frame[col].astype(object)
        frame.loc[row, col] = value
        return frame

    return edit


def _pair(d, i):
    return f"query_id='{d['query_id'][i]}', candidate_id='{d['candidate_id'][i]}'"


TABLE_CASES = {
    "NaN dot": (
        dict(dots=_set("dot", 4, np.nan)),
        "dots",
        lambda d, n: f"column 'dot' must be a finite number, got nan at {_pair(d, 4)}",
    ),
    "inf dot": (
        dict(dots=_set("dot", 2, np.inf)),
        "dots",
        lambda d, n: (
            f"column 'dot' must be a finite number, got inf at {_pair(d, 2)}, "
            f"component='{d['component'][2]}'"
        ),
    ),
    "-inf sqnorm": (
        dict(norms=_set("sqnorm", 3, -np.inf)),
        "norms",
        lambda d, n: (
            f"column 'sqnorm' must be a finite number >= 0, got -inf at "
            f"split='{n['split'][3]}', example_id='{n['example_id'][3]}'"
        ),
    ),
    "NaN sqnorm": (
        dict(norms=_set("sqnorm", 0, np.nan)),
        "norms",
        lambda d, n: "column 'sqnorm' must be a finite number >= 0, got nan",
    ),
    "negative sqnorm": (
        dict(norms=_set("sqnorm", 1, -1.0)),
        "norms",
        lambda d, n: "column 'sqnorm' must be a finite number >= 0, got -1.0",
    ),
    "inf bm25": (
        dict(dots=lambda d: d.assign(bm25=np.where(d.index == 0, np.inf, d["bm25"]))),
        "dots",
        lambda d, n: (
            f"column 'bm25' must be a finite number (or empty where unknown), got inf "
            f"at {_pair(d, 0)}"
        ),
    ),
    "fractional rank": (
        dict(dots=lambda d: d.assign(rank=d["rank"] + 0.5)),
        "dots",
        lambda d, n: "column 'rank' must be a whole number, got",
    ),
    "missing component of a pair": (
        dict(dots=lambda d: d.drop(index=5).reset_index(drop=True)),
        "dots",
        lambda d, n: "components: no row for component",
    ),
    "duplicate dots row": (
        dict(dots=lambda d: pd.concat([d, d.iloc[[7]]], ignore_index=True)),
        "dots",
        lambda d, n: (
            f"duplicate (query_id, candidate_id, component) row at {_pair(d, 7)}, "
            f"component='{d['component'][7]}'"
        ),
    ),
    "duplicate norms row": (
        dict(norms=lambda n: pd.concat([n, n.iloc[[2]]], ignore_index=True)),
        "norms",
        lambda d, n: (
            f"duplicate (split, example_id, component) row at split='{n['split'][2]}', "
            f"example_id='{n['example_id'][2]}', component='{n['component'][2]}'"
        ),
    ),
    "query_id of lists": (
        dict(dots=lambda d: d.assign(query_id=[[q] for q in d["query_id"]])),
        "dots",
        lambda d, n: "column 'query_id' must hold text or integers, not",
    ),
    "dot as text": (
        dict(dots=lambda d: d.assign(dot=d["dot"].astype(str))),
        "dots",
        lambda d, n: "column 'dot' must hold numbers, not",
    ),
    "sqnorm as bool": (
        dict(norms=lambda n: n.assign(sqnorm=n["sqnorm"] > 1)),
        "norms",
        lambda d, n: "column 'sqnorm' must hold numbers, not bool",
    ),
    "wrong columns": (
        dict(dots=lambda d: d.rename(columns={"dot": "value"})),
        "dots",
        lambda d, n: "missing column 'dot' (columns: 'query_id, candidate_id",
    ),
}


@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_hostile_long_tables(case, tmp_path):
    edits, culprit, expected = TABLE_CASES[case]
    dp, np_, d, n = long_tables(tmp_path, **edits)
    with pytest.raises(TableError) as err:
        read_long_tables(dp, np_)
    path = dp if culprit == "dots" else np_
    assert one_line_error(err, expected(d, n)).startswith(f"{path}: ")
    assert isinstance(err.value, GradLensError) and isinstance(err.value, ValueError)


CSV_TABLE_CASES = {
    "text in dot": (
        dict(dots=_set("dot", 1, "abc")),
        "column 'dot' must be a finite number, got 'abc' at",
    ),
    "empty dot": (dict(dots=_set("dot", 1, np.nan)), "column 'dot' must be a finite number, got"),
    "wrong columns": (
        dict(dots=lambda d: d.rename(columns={"query_id": "q"})),
        "missing column 'query_id'",
    ),
}


@pytest.mark.parametrize("case", sorted(CSV_TABLE_CASES))
def test_hostile_csv_long_tables(case, tmp_path):
    edits, expected = CSV_TABLE_CASES[case]
    dp, np_, _, _ = long_tables(tmp_path, fmt="csv", **edits)
    with pytest.raises(TableError) as err:
        read_long_tables(dp, np_)
    assert one_line_error(err, expected).startswith(f"{dp}: ")


@pytest.mark.parametrize(
    "content",
    [b"", b"PAR1garbage", os.urandom(64), b"a,b\n1,2\n"],
    ids=["empty", "magic", "rnd", "csv"],
)
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_long_table_that_is_not_a_table(content, suffix, tmp_path):
    dp, np_, _, _ = long_tables(tmp_path)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    with pytest.raises(TableError) as err:
        read_long_tables(bad, np_)
    one_line_error(err, str(bad))
    with pytest.raises(TableError) as err:
        read_long_tables(dp, bad)
    one_line_error(err, str(bad))


def test_n_params_that_is_not_json(tmp_path):
    dp, np_, _, _ = long_tables(tmp_path)
    nj = tmp_path / "n.json"
    for content in (b"\xff\xfe", b"[" * 100_000, b'{"a": ' + b"9" * 5000 + b"}", b"[1]"):
        nj.write_bytes(content)
        with pytest.raises(TableError) as err:
            read_long_tables(dp, np_, nj)
        one_line_error(err, str(nj))


# --------------------------------------------------------------------------------------------
# database files


def digest(path) -> tuple[str, int]:
    """(content hash, mtime in ns): both unchanged when nothing touched the file."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _duckdb_file(path, *sql: str):
    con = duckdb.connect(str(path))
    for statement in sql:
        con.execute(statement)
    con.close()
    return path


def _gradlens_db(path):
    with Store(path) as store:
        store.begin_run("r1", "one", {"model": "m"})
    return path


def _with_version(version: str):
    def make(path):
        _gradlens_db(path)
        return _duckdb_file(path, f"UPDATE meta SET value = '{version}'")

    return make


def _bytes(content: bytes):
    def make(path):
        path.write_bytes(content)
        return path

    return make


#: name -> (make the file at path, what the message says)
BAD_DBS = {
    "text file": (_bytes(b"not a database\n"), "not a DuckDB database file"),
    "zero bytes": (_bytes(b""), "not a DuckDB database file"),
    "random bytes": (_bytes(np.random.default_rng(0).bytes(8192)), "not a DuckDB database file"),
    "SQLite file": (_bytes(b"SQLite format 3\x00" + bytes(4080)), "not a DuckDB database file"),
    "other DuckDB tables": (
        lambda p: _duckdb_file(p, "CREATE TABLE sales (id INTEGER, amount DOUBLE)"),
        "a DuckDB database without GradLens tables",
    ),
    "newer schema version": (
        _with_version(str(SCHEMA_VERSION + 1)),
        f"schema version '{SCHEMA_VERSION + 1}', this GradLens reads version {SCHEMA_VERSION} "
        "(written by a newer GradLens",
    ),
    "older schema version": (_with_version("0"), "(written by an older GradLens"),
    "other columns": (
        lambda p: _duckdb_file(
            _gradlens_db(p), "DROP TABLE meta", "ALTER TABLE runs DROP COLUMN stats"
        ),
        "table runs has columns",
    ),
    "missing table": (
        lambda p: _duckdb_file(_gradlens_db(p), "DROP TABLE dots"),
        "table dots is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DBS))
@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer"])
def test_foreign_database_is_refused_and_left_as_it_was(case, read_only, tmp_path):
    make, expected = BAD_DBS[case]
    db = make(tmp_path / "x.duckdb")
    before = digest(db)
    with pytest.raises(DatabaseError) as err:
        Store(db, read_only=read_only)
    one_line_error(err, str(db), expected)
    assert digest(db) == before
    assert sorted(os.listdir(tmp_path)) == ["x.duckdb"]  # no .wal either


@pytest.mark.parametrize("case", ["text file", "other DuckDB tables", "newer schema version"])
def test_read_api_refuses_a_foreign_database(case, tmp_path):
    make, expected = BAD_DBS[case]
    db = make(tmp_path / "x.duckdb")
    before = digest(db)
    for call in (
        lambda: queries.list_runs(db),
        lambda: queries.run_info(db, "one"),
        lambda: queries.load_arrays(db, "one"),
        lambda: queries.examples(db, "one"),
        lambda: queries.curves(db, "one"),
    ):
        with pytest.raises(DatabaseError) as err:
            call()
        one_line_error(err, expected)
    assert digest(db) == before
    with pytest.raises(DatabaseError, match="does not exist"):
        queries.list_runs(tmp_path / "none.duckdb")


def test_new_database_records_its_schema_version(tmp_path):
    db = _gradlens_db(tmp_path / "x.duckdb")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT key, value FROM meta").fetchall() == [
        ("schema_version", str(SCHEMA_VERSION))
    ]
    con.close()


def test_database_written_before_the_version_was_recorded(tmp_path):
    """This version's tables without ``meta`` (and without the tables added later): readers
    read it and leave it as it was; a writer records the version and creates the tables."""
    db = _duckdb_file(
        _gradlens_db(tmp_path / "old.duckdb"),
        "DROP TABLE meta",
        "DROP TABLE restored",
        "DROP TABLE selection_curves",
    )
    before = digest(db)
    assert list(queries.list_runs(db)["name"]) == ["one"]
    assert queries.curves(db, "one").empty
    assert digest(db) == before
    with Store(db) as store:
        assert store.run("r1")["name"] == "one"
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta").fetchall() == [(str(SCHEMA_VERSION),)]
    assert con.execute("SELECT count(*) FROM restored").fetchone() == (0,)
    con.close()


def test_empty_duckdb_file_is_created_by_a_writer_refused_by_a_reader(tmp_path):
    """A DuckDB file with no table at all (what a creation cut short leaves) holds nothing to
    lose: a writer creates the schema in it; a reader says what it is."""
    db = _duckdb_file(tmp_path / "e.duckdb")
    with pytest.raises(DatabaseError) as err:
        Store(db, read_only=True)
    one_line_error(err, "an empty DuckDB database")
    with Store(db) as store:
        assert store.list_runs().empty


# --------------------------------------------------------------------------------------------
# property-based: random bytes and random JSON never raise anything but a one-line GradLensError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
#: A value where a field's text belongs: text (often) or any JSON value.
VALUE = st.text(max_size=10) | JSON
#: Objects that look like records: each real key present or not, with a random value (a turn
#: list for ``messages``, its turns objects or not), plus an extra key of any JSON value.
TURN = st.fixed_dictionaries(
    {},
    optional={"role": st.sampled_from(["user", "assistant", "system"]) | JSON, "content": VALUE},
)
RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "id": VALUE,
        "prompt": VALUE,
        "response": VALUE,
        "messages": st.lists(TURN | JSON, max_size=3) | JSON,
        "extra": JSON,
    },
)
#: A column of one random type (so that Parquet can store it).
COLUMN = st.one_of(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4),
    st.lists(st.floats(), min_size=1, max_size=4),
    st.lists(st.text(max_size=6), min_size=1, max_size=4),
    st.lists(st.booleans(), min_size=1, max_size=4),
    st.lists(st.none(), min_size=1, max_size=4),
    st.lists(st.lists(st.integers(0, 9), max_size=2), min_size=1, max_size=4),
    st.lists(st.dictionaries(st.sampled_from("ab"), st.integers(0, 9)), min_size=1, max_size=4),
)
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def only_one_line_errors(call) -> None:
    """``call()`` succeeds or raises a GradLensError whose message is one line."""
    try:
        call()
    except GradLensError as exc:
        assert len(str(exc).splitlines()) == 1, str(exc)


@PROPERTY
@given(content=st.binary(max_size=512), suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
def test_random_bytes_to_the_dataset_loader(tmp_path, content, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(content)
    only_one_line_errors(lambda: load_examples(path))


@PROPERTY
@given(line=JSON)
def test_random_json_to_the_dataset_loader(tmp_path, line):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(line), encoding="utf-8")
    only_one_line_errors(lambda: load_examples(path))


@PROPERTY
@given(records=st.lists(RECORDS, min_size=1, max_size=2))
def test_random_records_to_the_dataset_loader(tmp_path, records):
    """JSON objects with the real keys (each present or not) holding random values."""
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in records), encoding="utf-8")
    only_one_line_errors(lambda: load_examples(path))


@PROPERTY
@given(
    records=st.lists(RECORDS, min_size=1, max_size=3), suffix=st.sampled_from([".csv", ".parquet"])
)
def test_random_records_as_tables_to_the_dataset_loader(tmp_path, records, suffix):
    """Random JSON values in CSV cells and Parquet columns (where pyarrow can store them)."""
    path = tmp_path / f"d{suffix}"
    frame = pd.DataFrame(records)
    try:
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
    except Exception:  # noqa: BLE001 - a frame pyarrow cannot store: nothing to load
        return
    only_one_line_errors(lambda: load_examples(path))


@PROPERTY
@given(
    content=st.binary(max_size=512),
    suffix=st.sampled_from([".parquet", ".csv"]),
    which=st.sampled_from(["dots", "norms"]),
)
def test_random_bytes_to_the_long_table_reader(tmp_path, content, suffix, which):
    dp, np_, _, _ = long_tables(tmp_path)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    args = (bad, np_) if which == "dots" else (dp, bad)
    only_one_line_errors(lambda: read_long_tables(*args))


@PROPERTY
@given(
    cells=COLUMN,
    column=st.sampled_from(["query_id", "candidate_id", "component", "dot", "rank", "bm25"]),
    fmt=st.sampled_from(["parquet", "csv"]),
)
def test_random_columns_in_long_tables(tmp_path, cells, column, fmt):
    """One dots column replaced by random values of one random type (repeated down it)."""

    def edit(d):
        d = d.copy()
        d[column] = pd.Series([cells[i % len(cells)] for i in range(len(d))], dtype=object)
        return d

    try:
        dp, np_, _, _ = long_tables(tmp_path, dots=edit, fmt=fmt)
    except Exception:  # noqa: BLE001 - a column pyarrow cannot store: nothing to read
        return
    only_one_line_errors(lambda: read_long_tables(dp, np_))


@PROPERTY
@given(content=st.binary(min_size=0, max_size=4096))
def test_random_bytes_as_a_database(tmp_path, content):
    db = tmp_path / "r.duckdb"
    db.write_bytes(content)
    before = digest(db)
    for read_only in (True, False):
        only_one_line_errors(lambda ro=read_only: Store(db, read_only=ro).close())
    assert digest(db) == before
    for extra in tmp_path.iterdir():
        if extra.name != "r.duckdb":
            extra.unlink()


def test_no_extension_is_fetched_for_a_database_file(tmp_path):
    """DuckDB would download and load an extension a file asks for (a SQLite reader for a
    SQLite file, say): GradLens's connections do neither."""
    with Store(tmp_path / "x.duckdb") as store:
        settings_now = store.con.execute(
            "SELECT current_setting('autoinstall_known_extensions'), "
            "current_setting('autoload_known_extensions')"
        ).fetchone()
    assert settings_now == (False, False)


def test_check_database_before_a_job_starts(tmp_path):
    """``check_database`` (what a job can run before its model loads): the refusals of a
    writer, reading only; a missing file, an empty DuckDB file and a GradLens one pass."""
    for case in ("text file", "other DuckDB tables", "newer schema version"):
        make, expected = BAD_DBS[case]
        db = make(tmp_path / f"{case}.duckdb")
        before = digest(db)
        with pytest.raises(DatabaseError) as err:
            check_database(db)
        one_line_error(err, expected)
        assert digest(db) == before
    check_database(tmp_path / "missing.duckdb")
    check_database(_duckdb_file(tmp_path / "empty.duckdb"))
    check_database(_gradlens_db(tmp_path / "ok.duckdb"))
    assert not (tmp_path / "missing.duckdb").exists()
