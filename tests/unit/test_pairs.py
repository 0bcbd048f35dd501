"""The pair inspector (``gradlens.lenses.pairs``) against independent autograd: full and
per-component cosines of a tiny Llama, GPT-2 and T5; the per-token decomposition (shares sum to
1, the per-token gradients add up to the example's gradient, for mean and sum); an identical pair;
the figures; and one SmolLM2 pair of the shipped demo against the cosine the demo stores."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gradlens.data.examples import IGNORE_INDEX, Example, Tokenized, tokenize_example
from gradlens.engine.reference import flat_component_grads
from gradlens.errors import DataError
from gradlens.figures import pair_cosine_grid, token_bars, token_cosine_heatmap
from gradlens.figures.pairs import COSINE_SCALE, UNDEFINED_COLOR
from gradlens.lenses.pairs import (
    IDENTICAL,
    PairComparison,
    TokenDecomposition,
    compare_pair,
    dominant_token,
    encode_example,
    explain,
    token_losses,
    token_reading,
)
from gradlens.lenses.token_gram import recording, token_gram
from gradlens.models.loading import discover_components
from gradlens.models.surgery import frozen
from gradlens.options import REDUCTIONS
from tests.conftest import DEMO, build_tiny
from tests.unit.test_t5_bert_discovery import tiny_t5, word_tokenizer

A = Example("a", "I like to eat", " pizza")
B = Example("b", "I like to eat", " pizza.")
T5_A = Example("a", "I like to eat <extra_id_0>", "<extra_id_0> pizza")
T5_B = Example("b", "I like to eat <extra_id_0>", "<extra_id_0> pizza .")


def _cosines(ga: list[torch.Tensor], gb: list[torch.Tensor]) -> tuple[float, np.ndarray]:
    """Full and per-component cosines of two lists of flat component gradients (float64)."""
    dots = np.array([torch.dot(x.double(), y.double()).item() for x, y in zip(ga, gb)])
    sa = np.array([torch.dot(x.double(), x.double()).item() for x in ga])
    sb = np.array([torch.dot(y.double(), y.double()).item() for y in gb])
    return dots.sum() / math.sqrt(sa.sum() * sb.sum()), dots / np.sqrt(sa * sb)


def _t5_inputs(model, tokenizer, ex: Example) -> tuple[list, torch.Tensor, torch.Tensor]:
    """Every component's weight, and the encoder input and targets (end token appended)."""
    params = dict(model.named_parameters())
    weights = [params[c.params[0]] for c in discover_components(model)]
    eos = [tokenizer.eos_token_id]
    src = torch.tensor([tokenizer(ex.prompt)["input_ids"] + eos])
    tgt = torch.tensor([tokenizer(ex.response)["input_ids"] + eos])
    return weights, src, tgt


def _t5_grads(model, tokenizer, ex: Example, reduction: str) -> list[torch.Tensor]:
    """Reference for T5: the model's own loss (labels=, its own shift to decoder inputs)."""
    weights, src, tgt = _t5_inputs(model, tokenizer, ex)
    with torch.enable_grad():
        loss = model(input_ids=src, labels=tgt).loss  # mean over the target tokens
        if reduction == "sum":
            loss = loss * tgt.numel()
        grads = torch.autograd.grad(loss, weights)
    return [g.reshape(-1).float() for g in grads]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_decoder_cosines_match_reference_autograd(family, reduction, tokenizer) -> None:
    model = build_tiny(family, tokenizer)
    comps = discover_components(model)
    got = compare_pair(model, tokenizer, A, B, reduction=reduction, per_token=False)
    refs = [
        flat_component_grads(
            model, comps, Tokenized(ex, *tokenize_example(tokenizer, ex)), reduction
        )
        for ex in (A, B)
    ]
    full, per_comp = _cosines(*refs)
    assert got.cosine == pytest.approx(full, abs=1e-6)
    np.testing.assert_allclose(got.component_cosine, per_comp, atol=1e-5)
    assert got.names == [c.name for c in comps]
    assert got.tokens is None
    assert got.norms[0] == pytest.approx(
        math.sqrt(sum(float(g.double() @ g.double()) for g in refs[0]))
    )


def test_raw_text_cosine_matches_reference(tokenizer) -> None:
    """chat_template=False: prompt + response as plain text, loss on the response tokens."""
    model = build_tiny("llama", tokenizer)
    comps = discover_components(model)
    refs = []
    for ex in (A, B):
        ids = torch.tensor(
            tokenizer(ex.prompt + ex.response, add_special_tokens=False)["input_ids"]
        )
        labels = ids.clone()
        labels[: len(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"])] = IGNORE_INDEX
        refs.append(flat_component_grads(model, comps, Tokenized(ex, ids, labels)))
    got = compare_pair(model, tokenizer, A, B, chat_template=False)
    full, per_comp = _cosines(*refs)
    assert got.cosine == pytest.approx(full, abs=1e-6)
    np.testing.assert_allclose(got.component_cosine, per_comp, atol=1e-5)
    # " pizza" vs " pizza." : one loss token against two, no template, no end token
    assert [d.tokens for d in got.tokens] == [(" pizza",), (" pizza", ".")]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_t5_cosines_match_the_models_own_loss(reduction) -> None:
    tok = word_tokenizer()
    model = tiny_t5(len(tok), gated=True)
    got = compare_pair(model, tok, T5_A, T5_B, reduction=reduction)
    assert got.encoder_decoder
    full, per_comp = _cosines(*(_t5_grads(model, tok, ex, reduction) for ex in (T5_A, T5_B)))
    assert got.cosine == pytest.approx(full, abs=1e-6)
    np.testing.assert_allclose(got.component_cosine, per_comp, atol=1e-5)
    assert "enc.L0.rel_bias" in got.names and "dec.L0.xq" in got.names
    a, b = got.tokens
    assert a.tokens == ("<extra_id_0>", "pizza", "</s>")
    assert b.tokens == ("<extra_id_0>", "pizza", ".", "</s>")
    for d in got.tokens:
        assert d.share.sum() == pytest.approx(1.0, abs=1e-5)  # float32 shares over n tokens
        assert d.contribution.sum() == pytest.approx(got.cosine, abs=1e-6)


def _per_token_reference(model, tokenizer, ex: Example, reduction: str) -> list[list[torch.Tensor]]:
    """g_t for every loss token of ``ex`` by plain autograd: the loss with every label but
    one masked, times 1/n for the mean."""
    comps = discover_components(model)
    ids, labels = tokenize_example(tokenizer, ex)
    positions = [t for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX]
    out = []
    for t in positions:
        only = torch.full_like(labels, IGNORE_INDEX)
        only[t] = labels[t]
        g = flat_component_grads(model, comps, Tokenized(ex, ids, only), "sum")
        out.append([x / len(positions) for x in g] if reduction == "mean" else g)
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_token_decomposition_adds_up(reduction, tokenizer) -> None:
    model = build_tiny("llama", tokenizer)
    comps = discover_components(model)
    got = compare_pair(model, tokenizer, A, B, reduction=reduction)
    full = [
        flat_component_grads(
            model, comps, Tokenized(ex, *tokenize_example(tokenizer, ex)), reduction
        )
        for ex in (A, B)
    ]
    flat = [torch.cat(g).double() for g in full]
    for side, ex in enumerate((A, B)):
        dec = got.tokens[side]
        g, other = flat[side], flat[1 - side]
        per_token = [
            torch.cat(gt).double() for gt in _per_token_reference(model, tokenizer, ex, reduction)
        ]
        assert len(per_token) == len(dec.tokens)
        # sum_t g_t = g (the 1/n of the mean inside g_t), checked through the dot products
        total = torch.stack(per_token).sum(0)
        assert float(total @ g) == pytest.approx(float(g @ g), rel=1e-6)
        assert float((total - g).norm()) <= 1e-5 * float(g.norm())
        want_share = np.array([float(gt @ g) for gt in per_token]) / float(g @ g)
        want_cos = np.array(
            [float(gt @ other) / float(gt.norm() * other.norm()) for gt in per_token]
        )
        np.testing.assert_allclose(dec.share, want_share, atol=1e-6)
        np.testing.assert_allclose(dec.cosine_other, want_cos, atol=1e-6)
        np.testing.assert_allclose(dec.sqnorm, [float(gt @ gt) for gt in per_token], rtol=1e-5)
        assert dec.share.sum() == pytest.approx(1.0, abs=1e-5)  # float32 shares over n tokens
        assert dec.contribution.sum() == pytest.approx(got.cosine, abs=1e-6)
        assert dec.gap.sum() == pytest.approx(1.0 - got.cosine, abs=1e-6)
    assert got.tokens[1].tokens == (" pizza", ".", "<|im_end|>")
    frame = got.tokens[1].frame()
    assert list(frame.columns) == [
        "position",
        "token_id",
        "token",
        "share",
        "cosine_other",
        "contribution",
        "gap",
        "grad_norm",
    ]


def test_identical_pair_has_cosine_one(tokenizer) -> None:
    model = build_tiny("gpt2", tokenizer)
    got = compare_pair(model, tokenizer, A, Example("a2", A.prompt, A.response))
    assert got.cosine >= 1 - 1e-6
    assert np.nanmin(got.component_cosine) >= 1 - 1e-6
    a, b = got.tokens
    np.testing.assert_allclose(a.share, b.share, atol=1e-9)
    assert explain(got).startswith("The two gradients point the same way")


def test_requires_grad_is_restored_and_loss_on_all(tokenizer) -> None:
    model = build_tiny("llama", tokenizer)
    model.model.norm.weight.requires_grad_(False)  # a flag of the caller's, kept as it was
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    got = compare_pair(model, tokenizer, A, B, loss_on="all", chat_template=False)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    raw = tokenizer(A.prompt + A.response, add_special_tokens=False)["input_ids"]
    assert len(got.tokens[0].tokens) == len(raw) - 1  # every token but the first
    assert got.tokens[0].share.sum() == pytest.approx(1.0, abs=1e-5)  # float32 shares over n tokens
    ids, _ = tokenize_example(tokenizer, A, loss_on="all")
    enc = encode_example(tokenizer, A, loss_on="all")  # chat template: the whole conversation
    assert list(enc.loss_positions()) == list(range(1, len(ids)))


def test_explain_names_the_dominant_token(tokenizer) -> None:
    model = build_tiny("llama", tokenizer)
    got = compare_pair(model, tokenizer, A, B, chat_template=False)
    top = dominant_token(got)
    gaps = np.concatenate([d.gap for d in got.tokens])
    assert top.gap == pytest.approx(gaps.max())
    text = explain(got)
    assert repr(top.token) in text and f"{top.gap:.3f}" in text
    assert text.startswith(("A's", "B's"))


def _synthetic(a_rows, b_rows) -> PairComparison:
    """A PairComparison with unit-norm gradients (share = own_dot, contribution = other_dot);
    rows: (token, own_dot, other_dot)."""

    def dec(rows):
        own = np.array([r[1] for r in rows])
        other = np.array([r[2] for r in rows])
        return TokenDecomposition(
            np.arange(len(rows)) + 10,
            np.arange(len(rows)),
            tuple(r[0] for r in rows),
            own,
            other,
            np.full(len(rows), 0.25),
            1.0,
            1.0,
        )

    a, b = dec(a_rows), dec(b_rows)
    cosine = float(a.other_dot.sum())
    assert cosine == pytest.approx(b.other_dot.sum())
    one = np.ones(1)
    return PairComparison(
        A,
        B,
        (),
        cosine,
        one,
        one,
        one,
        one,
        (1.0, 1.0),
        (1.0, 1.0),
        (a, b),
        "response",
        "mean",
        True,
        False,
    )


def test_explain_sentences_on_known_numbers() -> None:
    # the chat-template pizza pair's shape: A's end token and B's "." separate the two
    cmp = _synthetic(
        [(" pizza", 0.334, 0.36), ("<|im_end|>", 0.666, 0.315)],
        [(" pizza", 0.388, 0.36), (".", 0.169, -0.032), ("<|im_end|>", 0.443, 0.347)],
    )
    assert cmp.cosine == pytest.approx(0.675)
    top = dominant_token(cmp)
    assert (top.example, top.token, top.position) == (0, "<|im_end|>", 11)
    assert dominant_token(cmp, side=1).token == "."
    assert explain(cmp) == (
        "A's '<|im_end|>' (position 11) dominates the difference: it carries 67 % of A's "
        "gradient and its gradient has cosine 0.63 with B's (its part of 1 − cosine = 0.325 is "
        "0.351). In B, '.' (position 11) separates most: 17 % of B's gradient, cosine -0.06 "
        "with A's, part 0.201."
    )
    # one loss token in A: B's "." alone; A's only token carries all of 1 − cosine (0.27)
    cmp = _synthetic([(" pizza", 1.0, 0.727)], [(" pizza", 0.58, 0.799), (".", 0.42, -0.072)])
    text = explain(cmp)
    assert text.startswith("B's '.' (position 11) dominates the difference: it carries 42 % of")
    assert "cosine -0.14 with A's" in text and "In A, ' pizza' (position 10)" in text


def test_cosine_grid_is_diverging_and_marks_undefined_cells() -> None:
    cos = np.array([0.5, -0.25, np.nan, 0.9])
    comps = pd.DataFrame(
        {
            "component": ["embed", "L0.q", "L0.k", "L1.q"],
            "layer": pd.array([None, 0, 0, 1], dtype="Int64"),
            "kind": ["embed", "q", "k", "q"],
            "n_params": [10, 4, 4, 4],
            "cosine": cos,
        }
    )
    fig = pair_cosine_grid(comps, full=0.46)
    marker = fig.data[0].marker
    assert (marker.cmin, marker.cmax, marker.cmid) == (-1.0, 1.0, 0.0)
    assert marker.colorscale[0][1] != marker.colorscale[-1][1]  # a named diverging scale
    assert COSINE_SCALE == "RdBu"
    assert "full 0.46" in marker.colorbar.ticktext
    assert marker.colorbar.title.text == "cosine"
    assert len(fig.data) == 2 and fig.data[1].marker.color == UNDEFINED_COLOR
    assert list(fig.data[1].customdata) == [2]
    assert "undefined" in fig.data[0].hovertext[2] and "+0.5000" in fig.data[0].hovertext[0]


def test_token_bars_escape_token_text() -> None:
    frame = pd.DataFrame(
        {
            "position": [3, 4],
            "token": ["<b>x</b>", " ."],
            "share": [0.6, 0.4],
            "cosine_other": [0.9, 0.05],
            "contribution": [0.5, 0.02],
            "gap": [0.1, 0.38],
        }
    )
    fig = token_bars(frame, frame.iloc[:1], labels=("A", "B"))
    assert len(fig.data) == 4
    assert list(fig.data[0].x) == ["3·&lt;b&gt;x&lt;/b&gt;", "4·␣."]
    assert [t.name for t in fig.data[:2]] == [
        "share of its example's gradient",
        "cosine with the other example's gradient",
    ]


def test_smollm2_demo_pair_matches_the_stored_cosine() -> None:
    """compare_pair on the shipped demo's shortest (query, original) pair reproduces the full
    cosine the demo run stores (method exact; the compute defaults)."""
    from gradlens.data.examples import load_examples
    from gradlens.models.loading import load_model

    run = DEMO / "runs" / "paraphrased"
    sizes = pd.read_parquet(run / "examples.parquet")
    tokens = sizes.pivot_table(index="example_id", columns="split", values="n_tokens")
    qid = str((tokens["query"] + tokens["train"]).idxmin())
    dots = pd.read_parquet(run / "dots.parquet")
    dots = dots[
        (dots["method"] == "exact") & (dots["query_id"] == qid) & (dots["candidate_id"] == qid)
    ]
    norms = pd.read_parquet(run / "norms.parquet")
    norms = norms[(norms["method"] == "exact") & (norms["example_id"] == qid)]
    qsq = norms.loc[norms["split"] == "query", "sqnorm"].sum()
    csq = norms.loc[norms["split"] == "train", "sqnorm"].sum()
    stored = dots["dot"].sum() / math.sqrt(qsq * csq)

    query = {ex.id: ex for ex in load_examples(DEMO / "paraphrased.jsonl")}[qid]
    original = {ex.id: ex for ex in load_examples(DEMO / "train.jsonl")}[qid]
    model, tok = load_model("smollm2")
    got = compare_pair(model, tok, query, original, per_token=False)
    assert got.cosine == pytest.approx(stored, abs=1e-5)
    by_comp = dots.sort_values("component_idx")["dot"].to_numpy()
    np.testing.assert_allclose(got.dots, by_comp, rtol=1e-3, atol=1e-6 * np.abs(by_comp).max())


def _t5_per_token(model, tokenizer, ex: Example, reduction: str) -> list[torch.Tensor]:
    """g_t of every target token of a T5 example, flat over all components, by autograd: the
    model's own loss with every label but one set to -100 (times 1/n for the mean)."""
    weights, src, tgt = _t5_inputs(model, tokenizer, ex)
    out = []
    for t in range(tgt.shape[1]):
        only = torch.full_like(tgt, IGNORE_INDEX)
        only[0, t] = tgt[0, t]
        # the decoder reads the true targets (shifted) whatever the labels mask
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=tgt)
        with torch.enable_grad():
            loss = model(input_ids=src, decoder_input_ids=decoder_ids, labels=only).loss
            grads = torch.autograd.grad(loss, weights)
        scale = 1.0 / tgt.shape[1] if reduction == "mean" else 1.0
        out.append(torch.cat([g.reshape(-1).double() for g in grads]) * scale)
    return out


def _untied_llama(tokenizer):
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    torch.manual_seed(1)
    cfg = tiny_config("llama", len(tokenizer))
    cfg.update({"tie_word_embeddings": False})
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    return model


@pytest.mark.parametrize("family", ["llama-untied", "gpt2", "t5"])
def test_token_matrix_matches_per_token_autograd(family, tokenizer) -> None:
    """token_cosines / token_dots against every g_t formed by autograd over all 2-D weights:
    an untied Llama (an input/output embedding mix-up would show), GPT-2 (tied, Conv1D,
    learned positions), T5 (shared embedding in both stacks, tied output, relative bias)."""
    if family == "t5":
        tok = word_tokenizer()
        model, a, b = tiny_t5(len(tok), gated=True), T5_A, T5_B
        refs = [_t5_per_token(model, tok, ex, "mean") for ex in (a, b)]
    else:
        tok = tokenizer
        model = _untied_llama(tok) if family == "llama-untied" else build_tiny(family, tok)
        a, b = A, B
        refs = [
            [torch.cat(g).double() for g in _per_token_reference(model, tok, ex, "mean")]
            for ex in (a, b)
        ]
    got = compare_pair(model, tok, a, b)
    ga, gb = (torch.stack(r) for r in refs)
    dots = (ga @ gb.T).numpy()
    cos = dots / np.outer(ga.norm(dim=1).numpy(), gb.norm(dim=1).numpy())
    assert got.token_cosines.shape == (len(refs[0]), len(refs[1]))
    np.testing.assert_allclose(got.token_cosines, cos, atol=2e-6)
    np.testing.assert_allclose(got.token_dots, dots, rtol=1e-5, atol=1e-6 * np.abs(dots).max())
    # the same tokens, in the same order, as the per-token decomposition
    np.testing.assert_allclose(got.tokens[0].sqnorm, (ga * ga).sum(1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.tokens[1].other_dot, dots.sum(0), rtol=1e-5, atol=1e-9)
    # every g_t adds up to the example's gradient: the matrix sums to <g_a, g_b>
    assert got.token_dots.sum() == pytest.approx(got.dots.sum(), rel=1e-5)


def test_token_matrix_is_the_same_under_either_reduction(tokenizer) -> None:
    model = build_tiny("llama", tokenizer)
    mean, total = (compare_pair(model, tokenizer, A, B, reduction=r) for r in REDUCTIONS)
    assert mean.cosine == pytest.approx(total.cosine, abs=1e-6)
    np.testing.assert_allclose(mean.token_cosines, total.token_cosines, atol=1e-6)
    n_a, n_b = (len(d.tokens) for d in mean.tokens)
    np.testing.assert_allclose(total.token_dots, mean.token_dots * n_a * n_b, rtol=1e-5)


def test_t5_forum_question_structure() -> None:
    """The forum question's structure on a tiny T5: the same pair twice → cosine 1 and every
    token identical; one added target token ('.') → cosine below 1, the shared prefix still
    identical token by token, and the reading names '.' among the tokens that differ."""
    tok = word_tokenizer()
    model = tiny_t5(len(tok), gated=True)
    same = compare_pair(model, tok, T5_A, Example("a2", T5_A.prompt, T5_A.response))
    assert same.cosine >= 1 - 1e-6
    assert (np.diag(same.token_cosines) >= IDENTICAL).all()
    assert "every token has its twin" in token_reading(same)
    got = compare_pair(model, tok, T5_A, T5_B)
    assert got.cosine < 0.999
    cos = got.token_cosines
    a_tokens, b_tokens = (d.tokens for d in got.tokens)
    assert a_tokens == ("<extra_id_0>", "pizza", "</s>")
    assert b_tokens == ("<extra_id_0>", "pizza", ".", "</s>")
    # the decoder is causal: the first two targets see the same prefix in both examples
    assert cos[0, 0] >= IDENTICAL and cos[1, 1] >= IDENTICAL
    assert cos[:, 2].max() < IDENTICAL and cos[2, 3] < IDENTICAL  # '.', and '</s>' moved
    reading = token_reading(got)
    assert "A's '<extra_id_0>' = B's '<extra_id_0>', A's 'pizza' = B's 'pizza'" in reading
    assert "'.'" in reading and "'</s>'" in reading
    top = dominant_token(got)
    assert f"{top.token!r} (position {top.position}, part {top.gap:.3f})" in reading


def test_split_refuses_more_than_32_tokens(tokenizer) -> None:
    model = build_tiny("llama", tokenizer)
    long = Example("long", "Count", " " + " ".join(str(i) for i in range(40)))
    with pytest.raises(DataError, match="B has .* loss-bearing tokens.*shorten"):
        compare_pair(model, tokenizer, A, long)
    got = compare_pair(model, tokenizer, A, long, per_token=False)
    assert got.token_cosines is None and got.tokens is None


def test_token_reading_on_known_numbers() -> None:
    cmp = _synthetic(
        [(" pizza", 0.334, 0.36), ("<|im_end|>", 0.666, 0.315)],
        [(" pizza", 0.388, 0.36), (".", 0.169, -0.032), ("<|im_end|>", 0.443, 0.347)],
    )
    cmp = dataclasses.replace(
        cmp, token_dots=0.25 * np.array([[1.0, 0.2, 0.1], [0.3, -0.089, 0.645]])
    )  # sqnorm 0.25 on every token: the cosines are the matrix above
    np.testing.assert_allclose(cmp.token_cosines[1], [0.3, -0.089, 0.645])
    assert token_reading(cmp) == (
        "A's ' pizza' = B's ' pizza': identical gradients (cosine ≥ 0.999); the gap "
        "(1 − cosine = 0.325) is carried most by A's '<|im_end|>' (position 11, part 0.351), "
        "whose gradient has cosine at most +0.645 with B's tokens (B's '<|im_end|>'); no twin "
        "either: B's '.', B's '<|im_end|>'."
    )


def test_token_heatmap_labels_and_scale() -> None:
    frame_a = pd.DataFrame({"position": [3, 4], "token": [" pizza", "<b>"]})
    frame_b = pd.DataFrame({"position": [3, 4, 5], "token": [" pizza", ".", "<b>"]})
    cos = np.array([[1.0, 0.2, 0.1], [0.3, -0.089, 0.645]])
    fig = token_cosine_heatmap(cos, frame_a, frame_b)
    trace = fig.data[0]
    assert (trace.zmin, trace.zmax, trace.zmid) == (-1.0, 1.0, 0.0)
    assert list(trace.y) == ["3·␣pizza", "4·&lt;b&gt;"]
    assert list(trace.x) == ["3·␣pizza", "4·.", "5·&lt;b&gt;"]
    assert trace.text[0][0] == "= +1.000" and trace.text[1][1] == "-0.089"


def test_token_gram_in_chunks_equals_it_whole(tokenizer) -> None:
    """A budget of one byte holds one term at a time (each chunk's Gram with every later term,
    recomputed): the same matrix as all terms held at once."""
    model = build_tiny("gpt2", tokenizer)
    comps = discover_components(model)
    params = dict(model.named_parameters())
    weights = [params[c.params[0]] for c in comps]
    calls, losses = [], []
    with frozen(model, keep=weights, eval_mode=False), torch.enable_grad():
        for ex in (A, B):
            with recording(model, comps) as recorded:
                losses.append(token_losses(model, encode_example(tokenizer, ex)))
            calls.append(recorded)
        whole = token_gram(calls, losses)
        chunked = token_gram(calls, losses, budget=1)
    assert whole.shape == (5, 5)
    # the same float32 products, summed in other groupings
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6 * np.abs(whole).max())
    np.testing.assert_allclose(whole, whole.T, rtol=1e-6)


def test_smollm2_pizza_token_matrix() -> None:
    """The forum pair on SmolLM2 with the chat template: the shared ' pizza' has the same
    per-token gradient in both examples; the end-of-turn tokens (their context changed) and B's
    '.' do not, and the reading says so."""
    from gradlens.models.loading import load_model

    model, tok = load_model("smollm2")
    got = compare_pair(model, tok, A, B)
    cos = got.token_cosines
    assert [d.tokens for d in got.tokens] == [
        (" pizza", "<|im_end|>"),
        (" pizza", ".", "<|im_end|>"),
    ]
    assert cos[0, 0] >= IDENTICAL
    assert cos[1].max() < IDENTICAL and cos[:, 1].max() < IDENTICAL
    reading = token_reading(got)
    assert reading.startswith("A's ' pizza' = B's ' pizza': identical gradients")
    assert "'.'" in reading and "'<|im_end|>'" in reading
