"""gradlens.models.info on the tiny Llama (SmolLM2 tokenizer): the architecture summary against
the config, the components table against discover_components, and the token preview against
tokenize_example's labels and the tokenizer's own decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradlens.data.examples import IGNORE_INDEX, Example, load_examples, tokenize_example
from gradlens.data.preview import PREVIEW_COLUMNS, token_preview
from gradlens.errors import GradLensError
from gradlens.figures.layers import human_count, params_grid
from gradlens.models.info import (
    SOURCES,
    WEIGHT_TABLE_COLUMNS,
    architecture_summary,
    source_of,
    spec_for,
    weight_table,
)
from gradlens.models.loading import discover_components
from gradlens.models.tokens import decode, token_pieces, visible
from tests.conftest import DEMO, build_tiny


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return build_tiny("llama", tokenizer)


@pytest.fixture(scope="module")
def demo_examples():
    return load_examples(DEMO / "train.jsonl")[:20]


def test_architecture_summary_reads_the_config(tiny):
    s = architecture_summary(tiny)
    assert s["model class"] == "LlamaForCausalLM"
    assert s["model_type"] == "llama"
    assert s["hidden size"] == "32"
    assert s["layers"] == "2"
    assert s["attention heads"] == "4"
    assert s["key/value heads"] == "2"
    assert s["MLP size"] == "64"
    assert s["vocab size"] == f"{tiny.config.vocab_size:,}"
    assert s["dtype"] == "float32"
    assert s["parameters"] == f"{sum(p.numel() for p in tiny.parameters()):,}"
    assert s["tied embeddings"] == "yes"
    assert all(isinstance(v, str) for v in s.values())


def test_architecture_summary_of_other_families(tokenizer):
    gpt2 = build_tiny("gpt2", tokenizer)
    s = architecture_summary(gpt2)
    assert (s["model_type"], s["hidden size"], s["layers"], s["attention heads"]) == (
        "gpt2",
        "32",
        "2",
        "4",
    )
    neox = build_tiny("neox", tokenizer).to(torch.bfloat16)
    s = architecture_summary(neox)
    assert s["dtype"] == "bfloat16"
    assert s["tied embeddings"] == "no"


def test_components_frame_equals_discover_components(tiny):
    comps = discover_components(tiny)
    frame = weight_table(comps)
    assert list(frame.columns) == list(WEIGHT_TABLE_COLUMNS)
    assert len(frame) == len(comps)
    assert list(frame["component"]) == [c.name for c in comps]
    assert [None if pd_na(x) else int(x) for x in frame["layer"]] == [c.layer for c in comps]
    assert list(frame["kind"]) == [c.kind for c in comps]
    assert list(frame["n_params"]) == [c.n_params for c in comps]
    assert list(frame["shape"]) == [f"{c.shape[0]} × {c.shape[1]}" for c in comps]
    assert list(frame["parameter"]) == [c.params[0] for c in comps]
    # the tiny Llama: tied embedding, 7 matrices per block, 2 blocks
    assert frame["component"].iloc[0] == "embed" and pd_na(frame["layer"].iloc[0])
    assert len(frame) == 1 + 7 * 2
    assert int(frame["n_params"].sum()) == sum(p.numel() for p in tiny.parameters() if p.dim() == 2)


def pd_na(x) -> bool:
    import pandas as pd

    return x is None or x is pd.NA or (isinstance(x, float) and x != x)


@pytest.mark.parametrize("loss_on", ["response", "all"])
@pytest.mark.parametrize("max_length", [None, 40])
def test_token_preview_matches_tokenize_example(tokenizer, demo_examples, loss_on, max_length):
    for ex in demo_examples:
        ids, labels = tokenize_example(tokenizer, ex, loss_on=loss_on, max_length=max_length)
        frame = token_preview(tokenizer, ex, loss_on=loss_on, max_length=max_length)
        assert list(frame.columns) == list(PREVIEW_COLUMNS)
        assert list(frame["position"]) == list(range(len(ids)))
        assert list(frame["token_id"]) == ids.tolist()
        assert list(frame["loss"]) == (labels != IGNORE_INDEX).tolist()
        assert "".join(frame["token"]) == tokenizer.decode(
            ids.tolist(), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        if loss_on == "all":
            assert frame["loss"].all()
        elif max_length is None:
            assert frame["loss"].iloc[-1] and not frame["loss"].iloc[0]


def test_pieces_concatenate_across_multibyte_characters(tokenizer):
    ex = Example("u", "Écris « naïve » en 日本語 😀 ²", "Très bien : 東京 🎉 — ok")
    ids, _ = tokenize_example(tokenizer, ex)
    pieces = token_pieces(tokenizer, ids.tolist())
    assert "".join(pieces) == decode(tokenizer, ids.tolist())
    assert "日本語" in "".join(pieces) and "\ufffd" not in "".join(pieces)
    assert "" in pieces  # byte-level BPE splits these characters: some tokens only start one
    # a cut in the middle of a character decodes like the tokenizer does (replacement char)
    emoji = tokenizer("😀", add_special_tokens=False)["input_ids"]
    if len(emoji) > 1:
        part = emoji[:1]
        assert "".join(token_pieces(tokenizer, part)) == decode(tokenizer, part)


def test_visible_and_human_count():
    assert visible(" a\nb\t") == "␣a⏎b⇥"
    assert visible("") == "(partial)"
    assert human_count(28_311_552) == "28.3M"
    assert human_count(884_736) == "885k"
    assert human_count(512) == "512"


def test_spec_for_each_source(tmp_path):
    assert spec_for(SOURCES[0], "ignored") == "smollm2"
    assert spec_for(SOURCES[1], f" {tmp_path} ") == str(tmp_path.resolve())
    assert spec_for(SOURCES[2], "org/name") == "org/name"
    for source, text, part in (
        (SOURCES[1], "", "path"),
        (SOURCES[1], str(tmp_path / "missing"), "no folder"),
        (SOURCES[2], "  ", "hub id"),
        ("ftp", "x", "unknown model source"),
    ):
        with pytest.raises(GradLensError, match=part):
            spec_for(source, text)
    assert source_of(None) == (SOURCES[0], "")
    assert source_of("smollm2") == (SOURCES[0], "")
    assert source_of(str(tmp_path)) == (SOURCES[1], str(tmp_path))
    assert source_of("org/name") == (SOURCES[2], "org/name")


def test_params_grid_colours_by_log_count(tiny):
    frame = weight_table(discover_components(tiny))
    fig = params_grid(frame)
    trace = fig.data[0]
    assert list(trace.y) == ["model"] + ["L0"] * 7 + ["L1"] * 7
    assert np.allclose(np.asarray(trace.marker.color), np.log10(frame["n_params"]))
    assert "accuracy" not in " ".join(trace.hovertext)
    assert f"{int(frame['n_params'].iloc[0]):,} parameters" in trace.hovertext[0]
    assert trace.marker.colorbar.title.text == "parameters (log scale)"
    assert [a.text for a in fig.layout.annotations] == [
        f"{len(frame)} components, {int(frame['n_params'].sum()):,} parameters · "
        "colour: log10 of the count"
    ]
