"""`gradlens generate`: greedy completions of each query's prompt, resumable."""

from __future__ import annotations

import json

from gradlens.cli import main
from gradlens.data.examples import load_examples


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
