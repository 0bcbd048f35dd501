"""`gradlens generate`: greedy completions of each query's prompt, resumable."""

from __future__ import annotations

import json
import os

from gradlens import faults
from gradlens.cli import main
from gradlens.data.examples import load_examples
from gradlens.files import progress_path, read_progress


def test_generate_writes_every_query_and_resumes(tmp_path, tiny_model_dir, capsys):
    queries = tmp_path / "q.jsonl"
    rows = [
        {"id": "a", "prompt": "Name a colour.", "response": "Blue."},
        {"id": "b", "prompt": "Name a fruit.", "response": "An apple."},
        {"id": "c", "prompt": "Name a tree.", "response": "An oak."},
    ]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "gen.jsonl"
    # a previous run that stopped after the first query
    partial = tmp_path / "gen.jsonl.partial"
    partial.write_text(
        json.dumps({"id": "a", "prompt": "Name a colour.", "response": "KEPT"}) + "\n"
    )
    args = [
        "generate",
        "--model",
        str(tiny_model_dir),
        "--queries",
        str(queries),
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "wrote 3 examples" in capsys.readouterr().out
    assert not partial.exists()
    got = load_examples(out)  # valid input for `gradlens compute`
    assert [e.id for e in got] == ["a", "b", "c"]
    assert [e.prompt for e in got] == [r["prompt"] for r in rows]
    assert got[0].response == "KEPT"  # resumed, not recomputed
    assert all(e.response.strip() for e in got)
    # greedy decoding is deterministic
    out2 = tmp_path / "gen2.jsonl"
    assert main([*args[:-4], str(out2), "--max-new-tokens", "4", "--no-progress"]) == 0
    assert load_examples(out2)[1:] == got[1:]


def test_generate_reports_progress_until_the_set_is_written(tmp_path, tiny_model_dir, monkeypatch):
    """``OUT.progress.json`` holds compute's progress fields after every example: Ctrl-C after
    the second one leaves it ``interrupted`` at 2 of 3; the rerun that writes OUT removes it."""
    queries = tmp_path / "q.jsonl"
    rows = [{"id": i, "prompt": f"Name a {i}.", "response": "x"} for i in ("a", "b", "c")]
    queries.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "gen.jsonl"
    args = ["generate", "--model", str(tiny_model_dir), "--queries", str(queries)]
    args += ["--out", str(out), "--max-new-tokens", "2", "--no-progress"]
    monkeypatch.setattr(faults, "_reached", faults.Counter())
    monkeypatch.setenv(faults.ENV, "generate.line:2:int")
    assert main(args) == 130
    progress = read_progress(progress_path(out))
    assert (progress.name, progress.run_id, progress.db) == ("generate", "", "")
    assert (progress.state, progress.done, progress.total) == ("interrupted", 2, 3)
    assert progress.pid == os.getpid() and progress.eta is not None and progress.elapsed >= 0
    monkeypatch.delenv(faults.ENV)
    assert main(args) == 0
    assert len(load_examples(out)) == 3 and not progress_path(out).exists()
