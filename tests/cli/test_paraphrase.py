"""`gradlens paraphrase` end to end against a real OpenAI-compatible server started offline
(``transformers serve`` on the bundled SmolLM2, ``tests/paraphrase_server.py``), on 3 examples
with short answers: the query file `gradlens compute` takes, resume after SIGKILL, a server that
is down, and a flaky server (500s for a while, an empty answer) through a fault-injecting proxy.
The API key travels only from its environment variable to the Authorization header."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from gradlens.cli import main
from gradlens.data import paraphrase as pp
from gradlens.data.examples import check_queries, load_examples
from gradlens.files import progress_path, read_progress
from tests.conftest import DEMO, REPO
from tests.paraphrase_server import FaultProxy, shared_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    return shared_server(tmp_path_factory.mktemp("serve"))


@pytest.fixture
def proxy(server):
    p = FaultProxy(server[0])
    yield p
    p.close()


@pytest.fixture
def train(tmp_path):
    """The first 3 examples of the small demo training set."""
    path = tmp_path / "train.jsonl"
    lines = (DEMO / "small" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def argv(train, out, endpoint, model, *extra):
    return [
        "paraphrase",
        "--train",
        str(train),
        "--out",
        str(out),
        "--endpoint",
        endpoint,
        "--model",
        model,
        "--max-tokens",
        "6",
        "--temperature",
        "0",
        "--no-progress",
        *extra,
    ]


def test_three_examples_become_a_query_set_that_compute_takes(
    server, proxy, train, tmp_path, capsys, tiny_model_dir
):
    out = tmp_path / "para.jsonl"
    assert main(argv(train, out, proxy.url, server[1])) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote 3 paraphrases to {out}: ")
    assert proxy.forwarded == 6  # a prompt and a response each
    assert not out.with_name(out.name + ".partial").exists()
    rows = [json.loads(s) for s in out.read_text(encoding="utf-8").splitlines()]
    originals = load_examples(train)
    assert [r["id"] for r in rows] == [ex.id for ex in originals]
    flagged = sum(1 for r in rows if r.get("flag"))
    assert f"{flagged} flagged, 0 rejected" in line
    for r in rows:
        assert r["prompt"].strip() and r["response"].strip()
        assert set(r) <= {"id", "prompt", "response", "flag"}
    check_queries(originals, load_examples(out), str(out))  # valid input for compute
    db = tmp_path / "p.duckdb"
    args = ["compute", "--model", str(tiny_model_dir), "--train", str(train), "--queries"]
    args += [str(out), "--db", str(db), "--candidates", "2", "--no-progress"]
    assert main(args) == 0
    assert "examples=" in capsys.readouterr().out


def test_a_killed_run_resumes_without_asking_again(server, proxy, train, tmp_path):
    out = tmp_path / "para.jsonl"
    partial = out.with_name(out.name + ".partial")
    proxy.gate_after = 1  # the second request is held: the process is killed while it waits
    cmd = [sys.executable, "-m", "gradlens", *argv(train, out, proxy.url, server[1])]
    cmd += ["--field", "prompt", "--concurrency", "1"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and partial.read_text().count("\n") == 1):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no line in the partial file"
            time.sleep(0.05)
        while proxy.seen < 2:  # the second request is on its way
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = partial.read_text(encoding="utf-8")
    assert not out.exists()
    proxy.reset()
    args = argv(train, out, proxy.url, server[1], "--field", "prompt", "--concurrency", "1")
    assert main(args) == 0
    assert proxy.seen == 2  # only the two examples not finished before the kill
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] + "\n" == first  # kept as it was
    originals = load_examples(train)
    rows = [json.loads(s) for s in lines]
    assert [r["id"] for r in rows] == [ex.id for ex in originals]
    # --field prompt: the responses are the originals'
    assert [r["response"] for r in rows] == [ex.response for ex in originals]


def test_a_server_that_is_down_is_one_line_exit_2_and_loses_nothing(
    server, train, tmp_path, capsys
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "para.jsonl"
    partial = out.with_name(out.name + ".partial")
    done = {"id": "demo_001", "prompt": "KEPT", "response": "KEPT TOO"}
    partial.write_text(json.dumps(done) + "\n", encoding="utf-8")
    before = partial.read_bytes()
    t0 = time.monotonic()
    assert main(argv(train, out, f"http://127.0.0.1:{port}/v1", server[1])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gradlens: error: cannot reach http://127.0.0.1:{port}/v1 (")
    assert "is the server running" in err
    assert time.monotonic() - t0 < 30  # said at once, not after minutes of retries
    assert partial.read_bytes() == before and not out.exists()


def test_a_flaky_server_is_retried_and_the_key_only_travels_in_its_header(
    server, proxy, train, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(pp.endpoint, "BACKOFF_BASE", 0.05)
    key = "sk-test-NEVER-PRINTED-0123"
    monkeypatch.setenv("GRADLENS_TEST_KEY", key)
    proxy.inject(3, status=500)  # the first 3 requests fail, then the server answers
    proxy.blank = 1  # and its first answer is empty
    out = tmp_path / "para.jsonl"
    args = argv(train, out, proxy.url, server[1], "--field", "prompt", "--concurrency", "2")
    assert main([*args, "--api-key-env", "GRADLENS_TEST_KEY"]) == 0
    captured = capsys.readouterr()
    assert proxy.failed == 3 and proxy.forwarded == 3
    assert "; 6 requests, 0 resumed" in captured.out
    assert "1 rejected" in captured.out
    rejects = pp.rejects_path(out)
    (reject,) = [json.loads(s) for s in rejects.read_text(encoding="utf-8").splitlines()]
    assert reject["rejected"] == "prompt: empty answer"
    kept = load_examples(out)
    assert len(kept) == 2 and reject["id"] not in {ex.id for ex in kept}
    assert set(proxy.authorization) == {f"Bearer {key}"}
    for text in (captured.out, captured.err, out.read_text(), rejects.read_text()):
        assert key not in text


def test_ctrl_c_stops_at_once_with_the_resume_hint(server, proxy, train, tmp_path):
    """Ctrl-C (or Cancel on the Compute page: SIGINT to the job) does not wait for the answers
    in flight: exit 130 at once, rerun to resume."""
    proxy.gate_after = 0  # every request is held: answers in flight when the signal comes
    out = tmp_path / "para.jsonl"
    cmd = [sys.executable, "-m", "gradlens", *argv(train, out, proxy.url, server[1])]
    proc = subprocess.Popen(cmd + ["--concurrency", "2"], cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while proxy.seen < 2:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - t0 < 15
    assert err.strip().splitlines()[-1] == (
        "gradlens: interrupted; run the same command again to resume"
    )
    assert not out.exists()


def test_progress_is_reported_until_the_set_is_written(server, proxy, train, tmp_path):
    """``<out>.progress.json`` holds compute's progress fields: a run that fails leaves it
    saying so (with the examples resumed from the partial file done); the rerun that writes
    the query set removes it."""
    out = tmp_path / "para.jsonl"
    partial = out.with_name(out.name + ".partial")
    done = {"id": "demo_001", "prompt": "KEPT", "response": "KEPT TOO"}
    partial.write_text(json.dumps(done) + "\n", encoding="utf-8")
    proxy.inject(1, status=400)  # refused: not retried, the run stops
    args = argv(train, out, proxy.url, server[1], "--field", "prompt", "--concurrency", "1")
    assert main(args) == 2
    progress = read_progress(progress_path(out))
    assert (progress.name, progress.run_id, progress.db) == ("paraphrase", "", "")
    assert (progress.state, progress.done, progress.total, progress.passes) == ("failed", 1, 3, 0)
    assert progress.pid == os.getpid() and progress.eta is None
    proxy.reset()
    assert main(args) == 0
    assert out.exists() and not progress_path(out).exists()
