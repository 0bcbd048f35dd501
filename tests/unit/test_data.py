"""Loaders, chat formatting and loss masks."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from gradlens.data.examples import (
    IGNORE_INDEX,
    Example,
    content_hash,
    load_examples,
    tokenize_all,
    tokenize_example,
)
from gradlens.errors import DataError

EX = Example("x", "Name a prime number.", "Seven is a prime number.")


def test_response_mask_covers_answer_and_end_of_turn(tokenizer):
    ids, labels = tokenize_example(tokenizer, EX)
    assert ids.shape == labels.shape
    labelled = ids[labels != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == "Seven is a prime number.<|im_end|>"
    # the prompt part is exactly the generation prompt
    n_prompt = int((labels == IGNORE_INDEX).sum())
    prefix = tokenizer.apply_chat_template(
        [{"role": "user", "content": EX.prompt}], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(ids[:n_prompt]) == prefix
    assert labels[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_loss_on_all_labels_every_token(tokenizer):
    ids, labels = tokenize_example(tokenizer, EX, loss_on="all")
    assert (labels == ids).all()


def test_max_length_cuts_and_warns_naming_examples(tokenizer, caplog):
    long = Example("long-one", "hi", " ".join(["word"] * 200))
    with caplog.at_level(logging.WARNING):
        toks = tokenize_all(tokenizer, [EX, long], max_length=60)
    assert toks[1].n_tokens == 60 and toks[0].n_tokens < 60
    assert "long-one" in caplog.text and "x," not in caplog.text


def test_max_length_that_leaves_no_label_is_an_error(tokenizer, tmp_path):
    with pytest.raises(DataError, match="no loss-bearing token left: --max-length 5 cuts"):
        tokenize_all(tokenizer, [EX], max_length=5)
    # read from a file, the error names the file and line; it says which length would do
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": EX.prompt, "response": EX.response}) + "\n")
    (ex,) = load_examples(path)
    n = int((tokenize_example(tokenizer, EX)[1] == IGNORE_INDEX).sum())  # prompt tokens
    with pytest.raises(DataError) as err:
        tokenize_all(tokenizer, [ex], max_length=n)
    assert str(err.value).startswith(f"{path}:1: example 'x': no loss-bearing token left")
    assert f"use --max-length {n + 1} or more" in str(err.value)
    assert tokenize_all(tokenizer, [ex], max_length=n + 1)[0].n_tokens == n + 1


def test_formats_agree(tmp_path):
    rows = [
        {"id": "a", "prompt": "p1", "response": "r1"},
        {"id": "b", "prompt": "p2", "response": "r2"},
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    msgs = [
        {
            "id": r["id"],
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": r["response"]},
            ],
        }
        for r in rows
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in msgs), encoding="utf-8")
    loaded = [load_examples(tmp_path / f) for f in ("d.jsonl", "d.csv", "d.parquet", "m.jsonl")]
    assert all(x == loaded[0] for x in loaded)
    assert content_hash(loaded[0]) == content_hash(loaded[3])
    assert loaded[0][0] == Example("a", "p1", "r1")


def test_csv_ids_stay_strings(tmp_path):
    (tmp_path / "d.csv").write_text("id,prompt,response\n007,p,r\n", encoding="utf-8")
    assert load_examples(tmp_path / "d.csv")[0].id == "007"


def test_multi_turn_messages_rejected(tmp_path):
    rec = {
        "id": "a",
        "messages": [
            {"role": "user", "content": "1"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "3"},
        ],
    }
    (tmp_path / "m.jsonl").write_text(json.dumps(rec), encoding="utf-8")
    with pytest.raises(DataError, match=r"m.jsonl:1: field 'messages'"):
        load_examples(tmp_path / "m.jsonl")


def test_demo_data_is_well_formed():
    from tests.conftest import DEMO

    train = load_examples(DEMO / "train.jsonl")
    para = load_examples(DEMO / "paraphrased.jsonl")
    assert len(train) >= 120 and {e.id for e in para} == {e.id for e in train}
    for ex in train:
        assert 30 <= len(ex.response.split()) <= 150, ex.id
    pairs = {e.id: e for e in train}
    assert all(p.prompt != pairs[p.id].prompt for p in para)
