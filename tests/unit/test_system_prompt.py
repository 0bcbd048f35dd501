"""``--system-prompt default|none|TEXT``: what reaches the token ids (the bundled SmolLM2
tokenizer's template inserts its own system turn by default), and the run key (unchanged at
``default``, so existing run ids stay)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from gradlens.config import CONFIG_VERSION, DATA_READING, ComputeConfig
from gradlens.data.examples import Example, chat_prefix, render_chat, tokenize_example
from gradlens.engine.job import compute
from gradlens.errors import DataError
from gradlens.store.database import Store

EX = Example("a", "What is 2 + 2?", "4")
#: What SmolLM2's chat template writes when the conversation has no system turn.
SMOLLM2_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _text(tokenizer, system: str) -> str:
    ids, _ = tokenize_example(tokenizer, EX, system=system)
    return tokenizer.decode(ids)


def test_the_system_turn_in_the_token_ids(tokenizer):
    default, none, own = (_text(tokenizer, s) for s in ("default", "none", "Answer briefly."))
    user_turn = "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>"
    assert default == f"<|im_start|>system\n{SMOLLM2_DEFAULT}<|im_end|>\n" + user_turn
    assert none == user_turn  # no system turn at all
    assert own == "<|im_start|>system\nAnswer briefly.<|im_end|>\n" + user_turn
    # the labels still mask exactly the prompt part (up to the assistant's answer)
    for system in ("default", "none", "Answer briefly."):
        ids, labels = tokenize_example(tokenizer, EX, system=system)
        prefix = tokenizer(chat_prefix(tokenizer, EX.prompt, system), add_special_tokens=False)
        n = len(prefix["input_ids"])
        assert ids[:n].tolist() == prefix["input_ids"]
        assert (labels[:n] == -100).all() and (labels[n:] != -100).all()


class _NoSystemTemplate:
    """A template that refuses a system turn (as Gemma's does) and one that cannot be cut."""

    chat_template = "x"

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert not tokenize  # render_chat asks for text
        if self.refuse and any(m["role"] == "system" for m in messages):
            raise ValueError("System role not supported")
        body = "".join(f"[{m['role']}]{m['content']}" for m in messages)
        # a template whose system turn moves behind the first user turn cannot be cut out
        if not self.refuse and messages and messages[0]["role"] == "system":
            body = "".join(f"[{m['role']}]{m['content']}" for m in messages[1:])
            body += f"[system]{messages[0]['content']}"
        return body + ("[assistant]" if add_generation_prompt else "")


def test_templates_without_a_cuttable_system_turn():
    user = [{"role": "user", "content": "hi"}]
    refusing = _NoSystemTemplate(refuse=True)
    assert render_chat(refusing, user, "none") == "[user]hi"  # it has no system turn to drop
    with pytest.raises(DataError, match="takes no system turn"):
        render_chat(refusing, user, "Be brief.")
    with pytest.raises(DataError, match="cannot be cut out"):
        render_chat(_NoSystemTemplate(refuse=False), user, "none")


def _config(system_prompt: str) -> ComputeConfig:
    base = dict(model="m", model_hash="h", train_hash="t", queries_hash="q", train_path="a",
                queries_path="b")  # fmt: skip
    return ComputeConfig(**base, system_prompt=system_prompt)


def test_run_key_changes_only_away_from_default():
    """Every other value is a key of its own; at ``default`` the key is the hash of the other
    fields exactly as before the option existed (tests/cli/test_pinned.py pins such an id)."""
    keys = {s: _config(s).key() for s in ("default", "none", "Be brief.", "be brief.")}
    assert len(set(keys.values())) == 4
    fields = dataclasses.asdict(_config("default"))
    # (and without the adapter's fields, which a run without an adapter does not store)
    adapter = ("adapter", "adapter_hash", "adapter_merge")
    # nor how the data files were read (never in the key)
    for name in ("train_path", "queries_path", "system_prompt", *adapter, *DATA_READING):
        fields.pop(name)
    fields["version"] = CONFIG_VERSION
    blob = json.dumps(fields, sort_keys=True, default=list).encode()
    assert keys["default"] == hashlib.sha256(blob).hexdigest()[:16]


def test_compute_with_no_system_turn(tmp_path, tiny_model_dir):
    from tests.conftest import DEMO

    train = tmp_path / "train.jsonl"
    queries = tmp_path / "queries.jsonl"
    lines = (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    queries.write_text(lines[0] + "\n", encoding="utf-8")
    db = tmp_path / "x.duckdb"
    a = compute(str(tiny_model_dir), train, queries, db, candidates=2, progress=False, run="a")
    b = compute(
        str(tiny_model_dir), train, queries, db, candidates=2, progress=False, run="b",
        system_prompt="none",
    )  # fmt: skip
    assert a.run_id != b.run_id
    with Store(db, read_only=True) as s:
        tokens = {
            run: dict(s.con.execute(
                "SELECT example_id, n_tokens FROM examples WHERE run_id = ? AND split = 'query'",
                [run],
            ).fetchall())
            for run in (a.run_id, b.run_id)
        }  # fmt: skip
        config = s.run(b.run_id)["config"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    system_turn = tok(
        f"<|im_start|>system\n{SMOLLM2_DEFAULT}<|im_end|>\n", add_special_tokens=False
    )
    for ex_id, n in tokens[a.run_id].items():
        assert n - tokens[b.run_id][ex_id] == len(system_turn["input_ids"])
    assert '"system_prompt": "none"' in config
