"""BM25 candidates against rank_bm25 directly; component discovery."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from gradlens.data.candidates import bm25_candidates
from gradlens.data.examples import Example
from gradlens.errors import GradLensError
from gradlens.models.loading import discover_components
from tests.conftest import build_tiny

TRAIN = [
    Example("t0", "how to boil an egg", "r"),
    Example("t1", "how to boil water fast", "r"),
    Example("t2", "why is the sky blue", "r"),
    Example("t3", "how to fry an egg", "r"),
    Example("t4", "best way to boil pasta", "r"),
    Example("t5", "what colour is the sky at night", "r"),
]


def test_bm25_matches_rank_bm25_and_keeps_the_original():
    queries = [Example("t2", "how do I boil an egg quickly", "r"), Example("t0", "boil egg", "r")]
    cands = bm25_candidates(TRAIN, queries, b=3)
    bm25 = BM25Okapi([e.prompt.split() for e in TRAIN])
    for q in queries:
        got = cands[cands.query_id == q.id].sort_values("rank")
        scores = bm25.get_scores(q.prompt.split())
        top = list(np.argsort(-scores, kind="stable")[:3])
        if TRAIN.index(next(e for e in TRAIN if e.id == q.id)) not in top:
            top[-1] = [e.id for e in TRAIN].index(q.id)
        assert set(got.candidate_id) == {TRAIN[j].id for j in top}
        assert q.id in set(got.candidate_id)
        assert list(got["rank"]) == [1, 2, 3]
        assert got.bm25.is_monotonic_decreasing
        np.testing.assert_allclose(
            got.bm25, [scores[[e.id for e in TRAIN].index(c)] for c in got.candidate_id]
        )
    # t2 ("sky") is not lexically close to the egg query: it replaced the lowest-scoring one
    assert "t2" in set(cands[cands.query_id == "t2"].candidate_id)


def test_bad_b():
    with pytest.raises(GradLensError, match="--candidates"):
        bm25_candidates(TRAIN, TRAIN[:1], b=0)


@pytest.mark.parametrize(
    "family,expected",
    [
        (
            "llama",
            ["embed"] + [f"L{i}.{k}" for i in range(2) for k in "q k v o gate up down".split()],
        ),
        (
            "gpt2",
            ["embed", "pos_embed"]
            + [f"L{i}.{k}" for i in range(2) for k in ("qkv", "o", "fc_in", "fc_out")],
        ),
        (
            "neox",
            ["embed"]
            + [f"L{i}.{k}" for i in range(2) for k in ("qkv", "o", "fc_in", "fc_out")]
            + ["lm_head"],
        ),
    ],
)
def test_discover_components(family, expected, tokenizer):
    comps = discover_components(build_tiny(family, tokenizer))
    assert [c.name for c in comps] == expected
    assert all(c.n_params == c.shape[0] * c.shape[1] for c in comps)


def test_unmappable_architecture_names_the_class():
    from torch import nn
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(
        BertConfig(
            vocab_size=50,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    )
    model.bert.mystery = nn.Linear(8, 8)  # a 2-D weight no naming rule knows
    with pytest.raises(GradLensError, match="BertForMaskedLM"):
        discover_components(model)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("8G", 8 << 30),
        ("512M", 512 << 20),
        ("1.5GB", int(1.5 * (1 << 30))),
        ("2GiB", 2 << 30),
        ("1000", 1000),
    ],
)
def test_parse_memory(text, expected):
    from gradlens.engine.schedule import parse_memory

    assert parse_memory(text) == expected


def test_parse_memory_rejects_garbage():
    from gradlens.engine.schedule import parse_memory

    with pytest.raises(GradLensError, match="--max-memory"):
        parse_memory("lots")
