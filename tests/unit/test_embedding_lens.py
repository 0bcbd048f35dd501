"""Input-embedding gradients and their optimisation against plain autograd, on tiny causal LMs
(SmolLM2's tokenizer) and a tiny BERT masked LM with its own small WordPiece tokenizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlens.errors import GradLensError
from gradlens.figures import distance_lines, grad_norm_bars, loss_line, optimization_animation
from gradlens.figures.embedding import (
    displacement_histogram,
    distance_histograms,
    kl_curves,
    move_cosines,
)
from gradlens.lenses.embedding import (
    input_gradients,
    optimize_inputs,
    read_moves,
    typical_distance,
    vocabulary,
)
from gradlens.lenses.embedding_batch import (
    PAIRS,
    optimize_batch,
    random_sentences,
    vocabulary_gaussian,
)
from tests.conftest import build_tiny

TEXT = "The animal that says neigh is a"
TARGET_PROMPT = "The animal that says bark is a"
BERT_TEXT = "The animal that says neigh is a [MASK] ."
BERT_PROMPT = "The animal that says bark is a [MASK] ."
WORDS = (
    "the a an animal that says neigh bark moo meow is horse dog cat cow it was . , and of to in "
    "on farm field barn big small brown white black"
).split()


def tiny_bert_tokenizer():
    """A ~300-word WordPiece tokenizer with [PAD] [UNK] [CLS] [SEP] [MASK], BERT style."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + WORDS + [f"word{i}" for i in range(300 - len(WORDS))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="module")
def bert():
    from tests.unit.test_t5_bert_discovery import tiny_bert

    tok = tiny_bert_tokenizer()
    # at BERT's initializer_range 0.02 every prediction is uniform (the KL is round-off)
    return tiny_bert(len(tok), initializer_range=0.2), tok


@pytest.fixture(scope="module", params=["llama", "gpt2", "bert"])
def lm(request, tokenizer, bert):
    """(model, tokenizer, text, target prompt) of each kind."""
    if request.param == "bert":
        return (*bert, BERT_TEXT, BERT_PROMPT)
    return build_tiny(request.param, tokenizer), tokenizer, TEXT, TARGET_PROMPT


def reference_grad(model, tokenizer, text, target_token=None, target_prompt=None):
    """∂L/∂inputs_embeds [n, d] and the loss, by plain autograd."""
    masked = "MaskedLM" in type(model).__name__

    def position(ids):
        return ids.index(tokenizer.mask_token_id) if masked else len(ids) - 1

    ids = tokenizer(text)["input_ids"]
    embeds = model.get_input_embeddings()(torch.tensor([ids])).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits[0, position(ids)]
    if target_token is not None:
        tid = tokenizer(target_token, add_special_tokens=False)["input_ids"][0]
        loss = F.cross_entropy(logits, torch.tensor(tid))
    else:
        t_ids = tokenizer(target_prompt)["input_ids"]
        with torch.no_grad():
            q = model(input_ids=torch.tensor([t_ids])).logits[0, position(t_ids)].softmax(-1)
        loss = (q * (q.log() - logits.log_softmax(-1))).sum()
    (grad,) = torch.autograd.grad(loss, embeds)
    return grad[0], float(loss.detach()), ids


def decode(tokenizer, ids):
    return tuple(tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids)


@pytest.mark.parametrize("kind", ["token", "prompt"])
def test_input_gradients_match_autograd(lm, kind):
    model, tok, text, target_prompt = lm
    target = {"token": {"target_token": " dog"}, "prompt": {"target_prompt": target_prompt}}[kind]
    k = 3
    got = input_gradients(model, tok, text, top_k=k, **target)
    grad, loss, ids = reference_grad(model, tok, text, **target)
    assert got.tokens == decode(tok, ids)
    assert got.target_kind == kind
    assert got.loss == pytest.approx(loss, rel=1e-5, abs=1e-6)  # KL: float32 round-off
    rtol = 1e-5 if kind == "token" else 1e-4  # KL of two close distributions: float32 round-off
    np.testing.assert_allclose(got.grad_norm, grad.norm(dim=-1).numpy(), rtol=rtol, atol=1e-9)
    # one position written out: cosine of −g with every vocabulary embedding, and with e_v − e_t
    t = 1
    vocab = model.get_input_embeddings().weight.detach()[: len(tok)]
    cos = F.cosine_similarity(vocab, -grad[t][None], dim=-1)
    assert got.nearest[t] == decode(tok, cos.topk(k).indices.tolist())
    diff = vocab - vocab[ids[t]]
    cos_dir = F.cosine_similarity(diff, -grad[t][None], dim=-1)
    cos_dir[ids[t]] = -2.0
    assert got.nearest_direction[t] == decode(tok, cos_dir.topk(k).indices.tolist())
    assert len(got.frame()) == got.n_tokens
    assert len(grad_norm_bars(got).data[0].y) == got.n_tokens


def test_kl_to_itself_has_zero_gradient(lm):
    model, tok, text, _ = lm
    got = input_gradients(model, tok, text, target_prompt=text)
    assert got.loss == pytest.approx(0.0, abs=1e-6)
    assert got.grad_norm.max() < 1e-6


def test_exactly_one_target(lm):
    model, tok, text, target_prompt = lm
    with pytest.raises(ValueError, match="exactly one"):
        input_gradients(model, tok, text)
    with pytest.raises(ValueError, match="exactly one"):
        input_gradients(model, tok, text, target_token=" dog", target_prompt=target_prompt)


def test_masked_lm_needs_a_mask(bert):
    model, tok = bert
    with pytest.raises(GradLensError, match="MASK"):
        input_gradients(model, tok, "the dog is big", target_token="horse")


@pytest.mark.parametrize("kind", ["token", "prompt"])
def test_optimize_lowers_the_loss_and_freezes_special_tokens(lm, kind):
    model, tok, text, target_prompt = lm
    if "MaskedLM" not in type(model).__name__:
        text = "<|im_start|>" + text  # a special token in a causal LM's text
    target = " dog" if kind == "token" else target_prompt
    training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    # lr 0.01: the tiny models' embeddings have entries ~0.02-0.2; 0.05 overshoots a small KL
    opt = optimize_inputs(model, tok, text, target, steps=12, lr=0.01, target_kind=kind)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training == training
    assert (
        opt.steps == 12 and opt.loss.shape == (13,) and opt.distance.shape == (13, len(opt.tokens))
    )
    assert opt.loss[-1] < opt.loss[0]
    ids = tok(text)["input_ids"]
    special = np.array([i in tok.all_special_ids for i in ids])
    assert special.any() and (opt.frozen == special).all()
    assert (opt.distance[:, special] == 0).all()
    assert (opt.distance[1:, ~special] > 0).all()
    assert (opt.distance[0] == 0).all()
    # at step 0 every token is nearest to itself, unless another row points the same way
    assert opt.nearest[0] == decode(tok, ids) or len(set(ids)) < len(ids)
    assert opt.typical_distance > 0
    assert len(opt.frame()) == 13 * len(ids)
    anim = optimization_animation(opt)
    assert len(anim.frames) == 13
    assert len(distance_lines(opt).data) == len(ids) + 1
    assert len(loss_line(opt).data[0].y) == 13


def test_typical_distance_is_seeded(bert):
    model, tok = bert
    a = typical_distance(model, tok, seed=3)
    assert a == typical_distance(model, tok, seed=3)
    vocab = model.get_input_embeddings().weight.detach()
    all_pairs = torch.cdist(vocab, vocab)
    off = all_pairs[~torch.eye(len(vocab), dtype=torch.bool)]
    assert abs(a - float(off.median())) < 0.1 * float(off.median())


def test_bad_arguments(bert):
    model, tok = bert
    with pytest.raises(ValueError, match="target kind"):
        optimize_inputs(model, tok, BERT_TEXT, "dog", target_kind="word")
    with pytest.raises(ValueError):
        input_gradients(model, tok, BERT_TEXT, target_token="dog", top_k=0)


# -- what the optimisation moves, and the batch of random sentences ------------------------------
def _read_logits(model, tokenizer, embeds: torch.Tensor) -> torch.Tensor:
    """One sentence alone (no padding): the next-token logits at its end; a masked LM reads
    at its mask token appended."""
    if "MaskedLM" in type(model).__name__:
        mask = model.get_input_embeddings()(torch.tensor([tokenizer.mask_token_id]))
        embeds = torch.cat([embeds, mask])
    return model(inputs_embeds=embeds[None]).logits[0, -1]


def _target_log_q(model, tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer(prompt)["input_ids"]
    masked = "MaskedLM" in type(model).__name__
    pos = ids.index(tokenizer.mask_token_id) if masked else len(ids) - 1
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, pos].log_softmax(-1)


def _first_step(optimizer: str, lr: float, g: torch.Tensor) -> torch.Tensor:
    """Each row's first-step distance: Adam lr·‖g/(|g| + ε)‖ (ε = 1e-8; ≈ lr·√d), SGD lr·‖g‖."""
    if optimizer == "adam":
        return lr * (g / (g.abs() + 1e-8)).norm(dim=-1)
    return lr * g.norm(dim=-1)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batch_first_step_and_kl_against_each_sentence_alone(lm, optimizer):
    """Every sentence's KL at the start, and every token's first step, from plain autograd on
    the sentence alone: Adam moves every token by lr·√d (up to ε), SGD by lr·‖g‖."""
    model, tok, _, target_prompt = lm
    check_against_each_sentence_alone(model, tok, target_prompt, optimizer)


def test_smollm2_batch_reads_each_sentence_alone():
    """The packed batch on the bundled model (its own attention implementation)."""
    from gradlens.models.loading import load_model

    model, tok = load_model("smollm2")
    check_against_each_sentence_alone(model, tok, TARGET_PROMPT, "sgd")


def check_against_each_sentence_alone(model, tok, target_prompt: str, optimizer: str) -> None:
    lr = 0.01
    got = optimize_batch(model, tok, target_prompt, batch=3, steps=1, lr=lr, optimizer=optimizer)
    start, lengths = random_sentences(vocabulary(model, tok), 3, seed=0)
    log_q = _target_log_q(model, tok, target_prompt)
    want_first, want_kl = [], []
    for b, n in enumerate(lengths.tolist()):
        e = start[b, :n].clone().requires_grad_(True)
        log_p = _read_logits(model, tok, e).log_softmax(-1)
        kl = (log_q.exp() * (log_q - log_p)).sum()
        (g,) = torch.autograd.grad(kl, e)
        want_first.append(_first_step(optimizer, lr, g))
        want_kl.append(float(kl.detach()))
    np.testing.assert_allclose(got.kl[0], want_kl, rtol=1e-4, atol=1e-7)
    first = torch.cat(want_first).numpy()
    np.testing.assert_allclose(
        got.moves.first_step, first, rtol=2e-4 if optimizer == "sgd" else 1e-5
    )
    if optimizer == "adam":
        d = start.shape[-1]
        np.testing.assert_allclose(got.moves.first_step, lr * math.sqrt(d), rtol=1e-2)
        assert got.first_step_expected == pytest.approx(lr * math.sqrt(d))
    assert (got.lengths == lengths.numpy()).all() and got.moves.distance.shape == (lengths.sum(),)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_single_text_first_step(optimizer, tokenizer):
    """optimize_inputs' first step against autograd's gradient of the loss at the start."""
    model = build_tiny("llama", tokenizer)
    lr = 0.02
    opt = optimize_inputs(
        model,
        tokenizer,
        TEXT,
        TARGET_PROMPT,
        steps=1,
        lr=lr,
        target_kind="prompt",
        optimizer=optimizer,
    )
    grad, _, _ = reference_grad(model, tokenizer, TEXT, target_prompt=TARGET_PROMPT)
    want = _first_step(optimizer, lr, grad).numpy()
    np.testing.assert_allclose(opt.distance[1], want, rtol=1e-4)
    np.testing.assert_allclose(opt.moves.first_step, want, rtol=1e-4)
    assert opt.optimizer == optimizer
    with pytest.raises(ValueError, match="optimizer"):
        optimize_inputs(model, tokenizer, TEXT, " dog", steps=1, optimizer="lbfgs")


def test_random_sentences_fit_the_vocabulary(bert):
    """Mean and full covariance of many draws against the vocabulary's; seeded; lengths 6–12
    and zeros after each sentence's end."""
    model, tok = bert
    vocab = vocabulary(model, tok)
    mean, factor = vocabulary_gaussian(vocab)
    cov = torch.cov(vocab.T.double())
    torch.testing.assert_close((factor @ factor.T).double(), cov, rtol=1e-4, atol=1e-6)
    embeds, lengths = random_sentences(vocab, 3000, seed=5)
    again, same = random_sentences(vocab, 3000, seed=5)
    assert torch.equal(embeds, again) and torch.equal(lengths, same)
    assert not torch.equal(embeds, random_sentences(vocab, 3000, seed=6)[0])
    assert lengths.min() == 6 and lengths.max() == 12
    free = torch.arange(embeds.shape[1])[None, :] < lengths[:, None]
    assert (embeds[~free] == 0).all()
    x = embeds[free].double()  # ~27 000 draws
    sd = cov.diagonal().sqrt()
    assert ((x.mean(0) - mean.double()).abs() <= 5 * sd / math.sqrt(len(x))).all()
    err = (torch.cov(x.T) - cov).norm() / cov.norm()
    assert err < 0.05, err


def test_moves_against_plain_loops():
    """Nearest tokens by cosine and by L2, the heading and its cosine, cos(g, e) — each by a
    loop over the vocabulary."""
    gen = torch.Generator().manual_seed(0)
    vocab = torch.randn(50, 8, generator=gen)
    start = torch.cat([vocab[[3, 7]], torch.randn(3, 8, generator=gen)])
    end = start + 0.5 * torch.randn(5, 8, generator=gen)
    end[4] = start[4]  # a token that did not move
    grad = torch.randn(5, 8, generator=gen)
    own = torch.tensor([3, 7, 49, 49, 49])  # the tokens left out of the heading

    class Names:  # decodes id i as "t{i}"
        def decode(self, ids, **_):
            return "".join(f"t{i}" for i in ids)

    got = read_moves(Names(), vocab, start, end, start + 1, grad, own=own)
    for i in range(5):
        cos = F.cosine_similarity(vocab, end[i][None], dim=-1)
        assert got.end_cosine[i] == f"t{int(cos.argmax())}"
        dist = (vocab - end[i]).norm(dim=-1)
        assert got.end_euclid[i] == f"t{int(dist.argmin())}"
        assert got.grad_cosine[i] == pytest.approx(
            float(F.cosine_similarity(grad[i], start[i], dim=0)), abs=1e-6
        )
        if i == 4:
            assert got.heading[i] == "" and np.isnan(got.heading_cosine[i])
            continue
        heading = F.cosine_similarity(vocab - start[i], (end[i] - start[i])[None], dim=-1)
        heading[(vocab - start[i]).norm(dim=-1) == 0] = -2
        heading[own[i]] = -2
        assert got.heading[i] == f"t{int(heading.argmax())}"
        assert got.heading_cosine[i] == pytest.approx(float(heading.max()), abs=1e-5)
    assert got.start_cosine[:2] == ("t3", "t7") and got.start_euclid[:2] == ("t3", "t7")
    np.testing.assert_allclose(got.first_step, math.sqrt(8), rtol=1e-6)


def test_batch_lowers_the_kl_and_its_figures(lm):
    model, tok, _, target_prompt = lm
    training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    got = optimize_batch(model, tok, target_prompt, batch=4, steps=10, lr=0.01)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training == training
    assert got.kl.shape == (11, 4) and got.mean_kl[-1] < got.mean_kl[0]
    n = int(got.lengths.sum())
    frame = got.frame()
    assert len(frame) == n and list(frame["sentence"]) == list(got.sentence)
    assert got.displacement.shape == (n, got.dim)
    np.testing.assert_allclose(
        np.linalg.norm(got.displacement, axis=1), got.moves.distance, rtol=1e-5
    )
    assert got.pair_distance.shape == (PAIRS,) and got.typical_distance > 0
    assert len(kl_curves(got).data) == 5
    hist = distance_histograms(got)
    assert [len(t.x) for t in hist.data] == [PAIRS, n]
    assert len(displacement_histogram(got).data[0].x) == n * got.dim
    assert len(move_cosines(got.moves).data) == 2
