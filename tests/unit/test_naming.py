"""One naming table for discovery and import: every family's names, GPT-2's pos_embed, and
encoder-decoder stacks that never collide on (layer, kind)."""

from __future__ import annotations

import pytest

from gradlens.models.loading import discover_components
from gradlens.models.naming import KINDS, parse_component_name
from gradlens.store.importer import parse_component_name as imported_parse
from tests.conftest import build_tiny


@pytest.mark.parametrize(
    "name, want",
    [
        ("model.layers.9.mlp.down_proj.weight", ("L9.down", 9, "down")),
        ("model.embed_tokens.weight", ("embed", None, "embed")),
        ("lm_head.weight", ("lm_head", None, "lm_head")),
        ("transformer.h.3.attn.c_attn.weight", ("L3.qkv", 3, "qkv")),
        ("transformer.h.3.mlp.c_proj.weight", ("L3.fc_out", 3, "fc_out")),
        ("transformer.wpe.weight", ("pos_embed", None, "pos_embed")),
        ("gpt_neox.layers.1.attention.dense.weight", ("L1.o", 1, "o")),
        ("model.decoder.layers.2.fc1.weight", ("L2.fc_in", 2, "fc_in")),
        ("L3.gate", ("L3.gate", 3, "gate")),
        ("pos_embed", ("pos_embed", None, "pos_embed")),
    ],
)
def test_parse_component_name(name, want) -> None:
    assert parse_component_name(name) == want
    assert imported_parse(name) == want  # the importer uses the same table


def test_encoder_decoder_names_do_not_collide() -> None:
    names = [
        "encoder.block.1.layer.0.SelfAttention.q.weight",
        "decoder.block.1.layer.0.SelfAttention.q.weight",
        "decoder.block.1.layer.1.EncDecAttention.q.weight",
        "decoder.block.1.layer.2.DenseReluDense.wo.weight",
    ]
    parsed = [parse_component_name(n, encoder_blocks=4) for n in names]
    assert parsed == [
        ("enc.L1.q", 1, "q"),
        ("dec.L1.q", 5, "q"),
        ("dec.L1.xq", 5, "xq"),
        ("dec.L1.fc_out", 5, "fc_out"),
    ]
    assert len({(layer, kind) for _, layer, kind in parsed}) == len(parsed)
    assert parse_component_name("dec.L1.xq", encoder_blocks=4) == ("dec.L1.xq", 5, "xq")


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot map parameter"):
        parse_component_name("model.layers.0.mystery.weight")
    with pytest.raises(ValueError):
        parse_component_name("L3.nonsense")


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox"])
def test_discovery_names_round_trip_through_the_import_parser(family, tokenizer) -> None:
    """What discovery emits (incl. GPT-2's pos_embed), the importer reads back identically."""
    comps = discover_components(build_tiny(family, tokenizer))
    for c in comps:
        assert c.kind in KINDS
        assert parse_component_name(c.params[0]) == (c.name, c.layer, c.kind)
        assert parse_component_name(c.name) == (c.name, c.layer, c.kind)
    if family == "gpt2":
        assert "pos_embed" in [c.name for c in comps]
