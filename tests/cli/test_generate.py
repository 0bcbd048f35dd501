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


def test_generate_with_an_adapter_writes_the_adapted_models_completions(tmp_path, tiny_model_dir):
    """``--adapter``: the completions are those of the model with the adapter merged in (the
    obvious computation: load it so and generate greedily), which differs from the base."""
    import torch

    from gradlens.data.examples import chat_prefix
    from gradlens.models.loading import load_model
    from tests.helpers import save_lora_adapter

    adapter = save_lora_adapter(tiny_model_dir, tmp_path / "adapter")
    queries = tmp_path / "q.jsonl"
    prompts = ["Name a colour.", "Name a fruit."]
    queries.write_text(
        "".join(
            json.dumps({"id": str(i), "prompt": p, "response": "x"}) + "\n"
            for i, p in enumerate(prompts)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "gen.jsonl"
    args = ["generate", "--model", str(tiny_model_dir), "--queries", str(queries)]
    args += ["--out", str(out), "--max-new-tokens", "4", "--no-progress"]
    assert main([*args, "--adapter", str(adapter)]) == 0

    def greedy(net, tok, prompt):
        ids = tok(
            chat_prefix(tok, prompt, "default"), add_special_tokens=False, return_tensors="pt"
        )["input_ids"]
        with torch.no_grad():
            gen = net.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=4,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        return gen[0, ids.shape[1] :]

    net, tok = load_model(str(tiny_model_dir), adapter=str(adapter), adapter_merge=True)
    base, _ = load_model(str(tiny_model_dir))
    want = [
        tok.decode(greedy(net, tok, p), skip_special_tokens=True).strip() or "(no answer)"
        for p in prompts
    ]
    assert [e.response for e in load_examples(out)] == want
    assert any(not torch.equal(greedy(net, tok, p), greedy(base, tok, p)) for p in prompts), (
        "the adapter changes no completion: the test would not see it ignored"
    )
