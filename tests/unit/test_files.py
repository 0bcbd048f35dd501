"""gradlens.files: the atomic write, the partial JSONL files of resumable commands, progress."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from gradlens import files
from gradlens.errors import GradLensError


def test_write_atomically_replaces_the_file_and_leaves_no_scratch(tmp_path):
    path = tmp_path / "status.json"
    path.write_text("old")
    seen = []
    files.write_atomically(
        path, ["new ", "text"], before_rename=lambda: seen.append(path.read_text())
    )
    assert seen == ["old"]  # before the rename the old file is whole
    assert path.read_text() == "new text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_write_jsonl_reads_back_through_the_partial_reader(tmp_path):
    records = [{"id": "a", "text": "é ✓"}, {"id": "b", "text": "line\nbreak"}]
    path = tmp_path / "out.jsonl"
    files.write_jsonl(path, records)
    assert [json.loads(s) for s in path.read_text(encoding="utf-8").splitlines()] == records
    assert "é ✓" in path.read_text(encoding="utf-8")  # not escaped
    assert files.read_partial(path) == {r["id"]: r for r in records}


def test_a_partial_file_is_appended_and_resumed_and_a_cut_line_dropped(tmp_path):
    out = tmp_path / "out.jsonl"
    assert files.partial_path(out) == tmp_path / "out.jsonl.partial"
    done, handle = files.open_partial(out)
    assert done == {}
    with handle:
        files.append_record(handle, {"id": "a", "v": 1})
        handle.write('{"id": "b", "v"')  # a process killed mid-line
    done, handle = files.open_partial(out)
    handle.close()
    assert done == {"a": {"id": "a", "v": 1}}
    assert files.partial_path(out).read_text() == '{"id": "a", "v": 1}\n'
    files.partial_path(out).write_text("not json\n")
    with pytest.raises(GradLensError, match=r"out.jsonl.partial:1: not a line"):
        files.open_partial(out)


def test_file_digest_is_blake2b_128_of_the_bytes(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x00gradlens" * 300_000)  # more than one read chunk
    want = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    assert files.file_digest(path) == want and files.file_digest(None) == ""


def test_progress_round_trips_and_the_reporter_records_how_a_job_ends(tmp_path):
    out = tmp_path / "q.jsonl"
    path = files.progress_path(out)
    assert path == tmp_path / "q.jsonl.progress.json"
    assert files.read_progress(path) is None
    reporter = files.ProgressReporter(path, "generate", done=1, total=4)
    first = files.read_progress(path)
    assert (first.state, first.done, first.total, first.eta) == ("running", 1, 4, None)
    assert first.pid == os.getpid() and first.alive and first.fraction == 0.25
    with pytest.raises(KeyboardInterrupt), reporter.reporting():
        reporter.advance(passes=7)
        raise KeyboardInterrupt
    p = files.read_progress(path)
    assert (p.state, p.done, p.passes, p.run_id, p.db) == ("interrupted", 2, 7, "", "")
    assert p.eta is not None and p.eta >= 0
    with pytest.raises(ValueError), reporter.reporting():
        raise ValueError("boom")
    assert files.read_progress(path).state == "failed"
    path.write_text("{half")
    assert files.read_progress(path) is None
