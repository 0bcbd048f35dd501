"""Discovery of encoder-decoder (T5) and masked-LM (BERT) models: every 2-D weight is mapped
(T5's relative_attention_bias, BERT's position / token-type embeddings and MLM head included),
with unique names and unique (layer, kind), and the import parser reads the names back.

The tokenizer is a small word-level vocabulary built here (``tokenizers``), with T5's sentinel
and BERT's mask tokens: nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

from gradlens.models.loading import discover_components
from gradlens.models.naming import KINDS, MODEL_WIDE, encoder_blocks_in, parse_component_name

SPECIALS = ["<pad>", "</s>", "<unk>", "<extra_id_0>", "<extra_id_1>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "i you we they he she it like love hate to eat drink cook bake buy sell want need the a an "
    "and or but not no yes is are was were be have has had do does did can will would should "
    "pizza pasta bread cheese apple banana orange soup salad rice fish meat cake tea coffee "
    "water milk juice wine beer dog cat bird horse cow house car road city river sea sky sun "
    "moon star tree flower book pen paper table chair door window red green blue black white "
    "big small hot cold good bad new old fast slow happy sad day night morning evening today "
    "tomorrow yesterday one two three four five six seven eight nine ten what who where when "
    "why how this that these those my your our their his her its in on at by for with from of "
    "up down over under very much many more most some any every all . , ! ? : ; ' \" - ( )"
).split()


def word_tokenizer():
    """A word-level fast tokenizer: T5's ``<pad>`` (id 0), ``</s>`` (1), ``<unk>``, sentinels
    ``<extra_id_N>``, BERT's ``[MASK]`` etc., ~200 lowercase words and punctuation, then filler
    words ``w0`` … up to 300 entries. Splits on whitespace and punctuation."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for word in SPECIALS + BERT_SPECIALS + WORDS:
        vocab.setdefault(word, len(vocab))
    for i in range(300 - len(vocab)):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        additional_special_tokens=["<extra_id_0>", "<extra_id_1>"],
    )


def tiny_t5(vocab_size: int, gated: bool = False, seed: int = 0):
    """A 2 + 2 block T5 (d_model 32) in eval mode; ``gated``: wi_0 / wi_1 (gated-gelu, T5 v1.1
    style). transformers 5 always ties T5's output projection to ``shared`` (the config forces
    ``tie_word_embeddings=True``), so there is no separate lm_head."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu" if gated else "relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5ForConditionalGeneration(cfg).eval()


def tiny_bert(vocab_size: int, tied: bool = True, seed: int = 0, initializer_range: float = 0.02):
    """A 2-layer BERT masked LM (hidden 32, eager attention) in eval mode."""
    from transformers import AutoModelForMaskedLM, BertConfig

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        initializer_range=initializer_range,
    )
    return AutoModelForMaskedLM.from_config(cfg, attn_implementation="eager").eval()


def _check_every_weight_mapped(model) -> list:
    comps = discover_components(model)
    weights = {id(p) for p in model.parameters() if p.dim() == 2}
    params = dict(model.named_parameters())
    assert {id(params[c.params[0]]) for c in comps} == weights  # every 2-D weight, once
    assert len(comps) == len(weights)
    names = [c.name for c in comps]
    assert len(set(names)) == len(names)
    cells = [(c.layer, c.kind) for c in comps]
    assert len(set(cells)) == len(cells)
    assert all(c.kind in KINDS for c in comps)
    assert all((c.layer is None) == (c.kind in MODEL_WIDE) for c in comps)
    # the import parser reads the parameter names (and the user-facing names) back identically
    blocks = encoder_blocks_in([c.params[0] for c in comps])
    for c in comps:
        assert parse_component_name(c.params[0], blocks) == (c.name, c.layer, c.kind)
        assert parse_component_name(c.name, blocks) == (c.name, c.layer, c.kind)
    return comps


def test_word_tokenizer_has_the_sentinel_and_mask_tokens() -> None:
    tok = word_tokenizer()
    ids = tok("I like to eat <extra_id_0>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["i", "like", "to", "eat", "<extra_id_0>"]
    assert tok.convert_ids_to_tokens(tok("pizza.")["input_ids"]) == ["pizza", "."]
    assert tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.mask_token == "[MASK]" and tok.mask_token_id is not None
    assert len(tok) == 300


@pytest.mark.parametrize("gated", [False, True])
def test_t5_every_weight_mapped(gated) -> None:
    model = tiny_t5(len(word_tokenizer()), gated=gated)
    comps = _check_every_weight_mapped(model)
    by_name = {c.name: c for c in comps}
    # relative-position tables: block 0 of each stack; the decoder's lives at depth E = 2
    assert (by_name["enc.L0.rel_bias"].layer, by_name["dec.L0.rel_bias"].layer) == (0, 2)
    assert by_name["enc.L0.rel_bias"].shape == (8, 4)  # [buckets, heads]
    assert by_name["dec.L1.xq"].layer == 3 and by_name["dec.L1.q"].layer == 3
    assert by_name["embed"].params == ("shared.weight",)
    assert "lm_head" not in by_name  # tied to shared: counted once, as embed
    mlp = {"gate", "up", "fc_out"} if gated else {"fc_in", "fc_out"}
    assert {c.kind for c in comps if c.name.startswith("enc.L1.")} == {"q", "k", "v", "o"} | mlp
    assert len(comps) == 1 + 2 * (4 + len(mlp)) + 2 * (8 + len(mlp)) + 2


@pytest.mark.parametrize("tied", [True, False])
def test_bert_every_weight_mapped(tied) -> None:
    model = tiny_bert(len(word_tokenizer()), tied=tied)
    comps = _check_every_weight_mapped(model)
    by_param = {c.params[0]: c for c in comps}
    assert by_param["bert.embeddings.word_embeddings.weight"].name == "embed"
    assert by_param["bert.embeddings.position_embeddings.weight"].name == "pos_embed"
    assert by_param["bert.embeddings.token_type_embeddings.weight"].name == "type_embed"
    assert by_param["cls.predictions.transform.dense.weight"].name == "head_dense"
    layer1 = {
        "attention.self.query": "q",
        "attention.self.key": "k",
        "attention.self.value": "v",
        "attention.output.dense": "o",
        "intermediate.dense": "fc_in",
        "output.dense": "fc_out",
    }
    for module, kind in layer1.items():
        comp = by_param[f"bert.encoder.layer.1.{module}.weight"]
        assert (comp.name, comp.layer, comp.kind) == (f"enc.L1.{kind}", 1, kind)
    if tied:
        assert "cls.predictions.decoder.weight" not in by_param  # counted once, as embed
    else:
        assert by_param["cls.predictions.decoder.weight"].name == "lm_head"
    assert len(comps) == 4 + 2 * 6 + (not tied)
