"""The lenses on a tiny T5 (encoder-decoder; relu and gated MLPs) against independent autograd:
the backward lens (loss, ‖δ‖, ``target_cosine`` and its rank, the logit lens, FF1 ranks), the
logit lens against the model's own head (with and without T5's d_model**-0.5 output scaling),
the Fig. 4 ranks over many prompts, the one-step edit (the stepped weight is W − lr·∇W, the model
restored bit for bit) and the input-embedding optimisation's first step (Adam moves every free
token by lr·√d, SGD by lr·‖g‖). The references build the model's inputs by hand (the prompt and
its end token in the encoder, the decoder's start token from the config), take the MLP matrices
by attribute path and the loss from the model itself (``labels=``). ``token_cosines`` on T5 is
tested in tests/unit/test_pairs.py (``test_token_matrix_matches_per_token_autograd``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlens.errors import GradLensError
from gradlens.lenses.backward import backward_lens, lens_logits
from gradlens.lenses.edit import MATRICES, one_step_edit
from gradlens.lenses.embedding import input_gradients, optimize_inputs
from gradlens.lenses.ranks import COLUMNS, LensPrompt, fig4_statistic, lens_ranks
from tests.unit.test_lens import assert_edit_matches, bits, cosine_rank, decode
from tests.unit.test_t5_bert_discovery import tiny_t5, word_tokenizer

PROMPT = "the cat likes to eat <extra_id_0>"
TARGET = "fish and rice"
ITEMS = [
    LensPrompt("a", "the cat likes to eat", "fish"),
    LensPrompt("b", "we drink tea in the morning and", "coffee"),
    LensPrompt("c", "one two three", "four"),
]
TEXT = "the dog likes to eat <extra_id_0>"


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module", params=["relu", "gated"])
def t5(request, tok):
    return tiny_t5(len(tok), gated=request.param == "gated", seed=3)


def mlp_pair(model, layer: int):
    """(FF1, FF2) of a decoder block by attribute path: ``wi`` (gated: ``wi_1``) and ``wo``."""
    mlp = model.decoder.block[layer].layer[-1].DenseReluDense
    return getattr(mlp, "wi_1", getattr(mlp, "wi", None)), mlp.wo


def encoder_input(tok, prompt: str) -> torch.Tensor:
    return torch.tensor([tok(prompt)["input_ids"] + [tok.eos_token_id]])


def reference(model, tok, prompt: str, target: str, whole: bool):
    """The model's own loss (``labels=``: the target's first token, or all of it), the gradients
    at every decoder MLP output [L, m, d], FF1's inputs [L, m, d], FF1's weight gradients, the
    target's ids and the decoder's input ids (start token, then the target but its last)."""
    t_ids = tok(target, add_special_tokens=False)["input_ids"]
    scored = t_ids if whole else t_ids[:1]
    n_layers = len(model.decoder.block)
    pairs = [mlp_pair(model, i) for i in range(n_layers)]
    outs, xs, handles = [], [], []
    for first, last in pairs:
        handles.append(first.register_forward_hook(lambda m, a, o: xs.append(a[0].detach())))
        handles.append(last.register_forward_hook(lambda m, a, o: outs.append(o)))
    weights = [first.weight for first, _ in pairs]
    try:
        with torch.enable_grad():
            loss = model(input_ids=encoder_input(tok, prompt), labels=torch.tensor([scored])).loss
            grads = torch.autograd.grad(loss, outs + weights)
    finally:
        for h in handles:
            h.remove()
    deltas = torch.stack([g[0] for g in grads[:n_layers]])
    x = torch.stack([v[0] for v in xs])
    decoder_ids = [model.config.decoder_start_token_id] + scored[:-1]
    return float(loss.detach()), deltas, x, list(grads[n_layers:]), t_ids, decoder_ids


def t5_lens(model, v: torch.Tensor) -> torch.Tensor:
    """T5's logit lens written out: v at unit RMS, the decoder's final norm, the output scaling
    (d_model**-0.5 where the model applies it), the output projection."""
    with torch.no_grad():
        v = v / v.pow(2).mean().sqrt()
        scale = model.config.d_model**-0.5 if model.config.scale_decoder_outputs else 1.0
        return model.lm_head(model.decoder.final_layer_norm(v) * scale)


def ranks_of(values: torch.Tensor, target: int) -> int:
    return int((values > values[target]).sum()) + 1


# -- the backward lens ---------------------------------------------------------------------------
@pytest.mark.parametrize("whole", [False, True])
def test_backward_lens_matches_autograd(t5, tok, whole):
    k = 4
    lens = backward_lens(t5, tok, PROMPT, TARGET, top_k=k, whole_target=whole)
    loss, deltas, x, w_grads, t_ids, decoder_ids = reference(t5, tok, PROMPT, TARGET, whole)
    n = len(decoder_ids)
    assert n == (len(t_ids) if whole else 1) and lens.n_tokens == n
    assert lens.tokens == decode(tok, decoder_ids)
    assert lens.target_tokens == decode(tok, t_ids)
    assert lens.answer_position == 0  # the decoder's start token predicts the first target
    assert lens.loss == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(lens.vjp_norm, deltas.norm(dim=-1).numpy(), rtol=1e-5, atol=1e-9)
    # Fig. 4's rank: torch.linalg.matrix_rank of autograd's FF1 gradient, at most n
    want = [int(torch.linalg.matrix_rank(g)) for g in w_grads]
    assert lens.ff1_rank.tolist() == want and max(want) <= n
    assert lens.ff1_shape == tuple(mlp_pair(t5, 0)[0].weight.shape)
    # the shift: cosine of the raw −δ with the target's row of the output embedding
    out = t5.lm_head.weight.detach()[: len(tok)]
    reached = deltas.norm(dim=-1) > 0
    cos = F.cosine_similarity(-deltas, out[t_ids[0]].expand_as(deltas), dim=-1)
    want_cos = torch.where(reached, cos, torch.zeros_like(cos)).numpy()
    np.testing.assert_allclose(lens.target_cosine, want_cos, atol=1e-5)
    for layer in range(lens.n_layers):
        cos_all = F.cosine_similarity(-deltas[layer, 0][None], out, dim=-1)
        rank, ties = cosine_rank(cos_all, t_ids[0])
        assert abs(int(lens.target_cosine_rank[layer, 0]) - rank) <= ties
    assert lens.shift_frame()["target_cosine"].tolist() == lens.target_cosine[:, 0].tolist()
    # the logit lens of −δ, δ and x, one cell each, written out
    layer, t = 0, n - 1
    logits = t5_lens(t5, -deltas[layer, t])[: len(tok)]
    assert lens.vjp_top[layer][t] == decode(tok, logits.topk(k).indices.tolist())
    assert lens.vjp_bottom[layer][t] == decode(tok, (-logits).topk(k).indices.tolist())
    assert lens.target_rank[layer, t] == ranks_of(logits, t_ids[0])
    of_delta = t5_lens(t5, deltas[1, 0])[: len(tok)]
    assert lens.delta_bottom[1][0] == decode(tok, of_delta.topk(k, largest=False).indices.tolist())
    assert not lens.bottom_differs.any()  # T5's norm has no bias: the lens is odd
    imprint = t5_lens(t5, x[1, 0])[: len(tok)]
    assert lens.imprint_top[1][0] == decode(tok, imprint.topk(k).indices.tolist())


@pytest.mark.parametrize("scaled", [True, False])
def test_logit_lens_is_the_models_head(tok, scaled):
    """At the decoder's last hidden state the lens gives the model's own logits (T5's norm is
    invariant to the unit-RMS scaling but for its ε), with the d_model**-0.5 scaling of the
    decoder's output where the config asks for it (T5 v1.1 checkpoints do not)."""
    model = tiny_t5(len(tok), seed=5)
    model.config.scale_decoder_outputs = scaled
    seen = []
    norm = model.decoder.final_layer_norm
    handle = norm.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        decoder_ids = torch.tensor([[model.config.decoder_start_token_id] + [20, 30, 40]])
        with torch.no_grad():
            out = model(input_ids=encoder_input(tok, PROMPT), decoder_input_ids=decoder_ids)
    finally:
        handle.remove()
    got = lens_logits(model, seen[0][0])
    want = out.logits[0]
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5 * want.abs().max())


# -- Fig. 4 over many prompts --------------------------------------------------------------------
def test_fig4_ranks_match_autograd(t5, tok):
    frame = lens_ranks(t5, tok, ITEMS)
    n_layers = len(t5.decoder.block)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(ITEMS) * n_layers
    out = t5.lm_head.weight.detach()[: len(tok)]
    for item in ITEMS:
        rows = frame[frame["id"] == item.id]
        _, deltas, _, w_grads, t_ids, decoder_ids = reference(
            t5, tok, item.prompt, item.target, False
        )
        assert rows["n_tokens"].tolist() == [len(decoder_ids)] * n_layers  # the decoder's one
        assert rows["ff1_rank"].tolist() == [int(torch.linalg.matrix_rank(g)) for g in w_grads]
        minus = -deltas[:, 0]
        cos = F.cosine_similarity(minus, out[t_ids[0]].expand_as(minus), dim=-1)
        np.testing.assert_allclose(rows["target_cosine"], cos.numpy(), atol=1e-5)
        for layer in range(n_layers):
            rank, ties = cosine_rank(F.cosine_similarity(minus[layer][None], out, dim=-1), t_ids[0])
            assert abs(int(rows["cosine_rank"].iloc[layer]) - rank) <= ties
            logits = t5_lens(t5, minus[layer])[: len(tok)]
            assert int(rows["lens_rank"].iloc[layer]) == ranks_of(logits, t_ids[0])
    stat = fig4_statistic(frame)
    for layer in range(n_layers):
        rows = frame[frame["layer"] == layer]
        want = float((rows["ff1_rank"] == rows["n_tokens"]).mean())
        assert stat["share_rank_n"].iloc[layer] == pytest.approx(want)
        assert stat["layer_index"].iloc[layer] == pytest.approx(layer / (n_layers - 1))
        assert stat["prompts"].iloc[layer] == len(ITEMS)


# -- the one-step edit ---------------------------------------------------------------------------
def reference_edit(model, tok, prompt: str, target: str, layer: int, matrix: str, lr: float):
    """The edit by hand on a deep copy: the model's own loss, autograd's ∇W, W − lr·∇W assigned,
    the next-token distribution at the decoder's first position before and after."""
    twin = copy.deepcopy(model)
    first, last = mlp_pair(twin, layer)
    w = (first if matrix == "FF1" else last).weight
    src = encoder_input(tok, prompt)
    t = tok(target, add_special_tokens=False)["input_ids"][0]
    with torch.enable_grad():
        out = twin(input_ids=src, labels=torch.tensor([[t]]))
        (g,) = torch.autograd.grad(out.loss, [w])
    start = torch.tensor([[twin.config.decoder_start_token_id]])
    with torch.no_grad():
        w.copy_(w - lr * g)
        after = torch.softmax(twin(input_ids=src, decoder_input_ids=start).logits[0, 0], -1)
    return torch.softmax(out.logits[0, 0].detach(), -1), after, g, t


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("layer", [0, 1])
def test_edit_matches_autograd(t5, tok, matrix, layer):
    lr = 0.5
    module = mlp_pair(t5, layer)[0 if matrix == "FF1" else 1]
    w0 = module.weight.detach().clone()
    used: list[torch.Tensor] = []  # the weight each forward of the edit reads
    handle = module.register_forward_pre_hook(lambda m, a: used.append(m.weight.detach().clone()))
    try:
        edit = one_step_edit(t5, tok, PROMPT, TARGET, layer, matrix, lr, top_k=4)
    finally:
        handle.remove()
    before, after, g, t = reference_edit(t5, tok, PROMPT, TARGET, layer, matrix, lr)
    assert len(used) == 2 and torch.equal(used[0], w0)
    step = (lr * g).abs().max()
    np.testing.assert_allclose(used[1].numpy(), (w0 - lr * g).numpy(), rtol=0, atol=1e-4 * step)
    assert edit.weight_shape == tuple(w0.shape)
    assert edit.weight_norm == pytest.approx(float(w0.norm()), rel=1e-6)
    assert_edit_matches(edit, tok, before, after, g, t)
    assert torch.equal(module.weight.detach().view(torch.uint8), w0.view(torch.uint8))


def test_lenses_leave_t5_as_it_was(tok):
    """Weights and buffers bit for bit, requires_grad flags, training mode, no .grad."""
    model = tiny_t5(len(tok), gated=True).train()
    model.decoder.block[1].layer[-1].DenseReluDense.wo.weight.requires_grad_(False)
    model.shared.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    saved = bits(model)
    backward_lens(model, tok, PROMPT, TARGET, whole_target=True)
    lens_ranks(model, tok, ITEMS[:1])
    for layer, matrix in [(1, "FF2"), (0, "FF1")]:
        one_step_edit(model, tok, PROMPT, TARGET, layer, matrix, lr=3.0)
    optimize_inputs(model, tok, TEXT, "fish", steps=2, lr=0.1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    now = bits(model)
    assert all(torch.equal(saved[k], now[k]) for k in saved)


# -- input embeddings ----------------------------------------------------------------------------
def embedding_reference(model, tok, text: str, target: str, kind: str):
    """The text's encoder input embeddings e [n, d], which of them are special tokens, the loss
    (cross-entropy of the target token, or KL(q ‖ p) to the target prompt's distribution, at
    the decoder's first position) and its gradient ∂L/∂e [n, d], by autograd."""
    src = encoder_input(tok, text)
    start = torch.tensor([[model.config.decoder_start_token_id]])
    special = torch.tensor([i in tok.all_special_ids for i in src[0].tolist()])
    e = model.shared.weight.detach()[src[0]].clone().requires_grad_(True)
    with torch.enable_grad():
        if kind == "token":
            t = tok(target, add_special_tokens=False)["input_ids"][0]
            loss = model(inputs_embeds=e[None], labels=torch.tensor([[t]])).loss
        else:
            with torch.no_grad():
                q_logits = model(input_ids=encoder_input(tok, target), decoder_input_ids=start)
            log_q = q_logits.logits[0, 0].log_softmax(-1)
            log_p = model(inputs_embeds=e[None], decoder_input_ids=start).logits[0, 0]
            loss = (log_q.exp() * (log_q - log_p.log_softmax(-1))).sum()
        (g,) = torch.autograd.grad(loss, e)
    return e.detach(), special, float(loss.detach()), g


@pytest.mark.parametrize(
    ("optimizer", "kind", "target"),
    [("adam", "token", "fish"), ("sgd", "token", "fish"), ("sgd", "prompt", "i like to drink")],
)
def test_first_optimisation_step_matches_autograd(t5, tok, optimizer, kind, target):
    lr = 0.05
    run = optimize_inputs(
        t5, tok, TEXT, target, steps=1, lr=lr, target_kind=kind, optimizer=optimizer
    )
    e, special, loss, g = embedding_reference(t5, tok, TEXT, target, kind)
    free = ~special
    assert run.tokens == decode(tok, tok(TEXT)["input_ids"] + [tok.eos_token_id])
    assert run.frozen.tolist() == special.tolist() and special[-1] and free.sum() >= 4
    assert run.loss[0] == pytest.approx(loss, rel=1e-5)
    d = e.shape[1]
    assert run.dim == d
    step = run.moves.first_step
    np.testing.assert_array_equal(step[special.numpy()], 0.0)
    if optimizer == "adam":  # lr·g/(|g| + ε) per coordinate: lr·√d per free token
        np.testing.assert_allclose(step[free.numpy()], lr * d**0.5, rtol=1e-4)
    else:  # lr·g: lr·‖g‖
        want = lr * g[free].norm(dim=-1).numpy()
        np.testing.assert_allclose(step[free.numpy()], want, rtol=1e-4)
    np.testing.assert_allclose(run.distance[1], step, rtol=1e-6)
    cos_g = F.cosine_similarity(g[free], e[free], dim=-1).numpy()
    np.testing.assert_allclose(run.moves.grad_cosine[free.numpy()], cos_g, atol=1e-5)


def test_input_gradients_match_autograd(t5, tok):
    got = input_gradients(t5, tok, TEXT, target_token="fish")
    _, _, loss, g = embedding_reference(t5, tok, TEXT, "fish", "token")
    assert got.position == 0  # the decoder's first position
    assert got.loss == pytest.approx(loss, rel=1e-6)
    np.testing.assert_allclose(got.grad_norm, g.norm(dim=-1).numpy(), rtol=1e-5)


# -- what is refused -----------------------------------------------------------------------------
def test_other_encoder_decoders_are_refused_in_one_line(tok):
    """An encoder-decoder model that is not T5-style (BART) gets one clear line, no number; a T5
    layer out of range names the decoder's layers."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    cfg = BartConfig(
        vocab_size=len(tok),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        decoder_start_token_id=1,
    )
    bart = BartForConditionalGeneration(cfg).eval()
    for call in (
        lambda: backward_lens(bart, tok, PROMPT, TARGET),
        lambda: one_step_edit(bart, tok, PROMPT, TARGET, 0, "FF2", 0.1),
        lambda: lens_ranks(bart, tok, ITEMS[:1]),
        lambda: optimize_inputs(bart, tok, TEXT, "fish", steps=1),
    ):
        with pytest.raises(GradLensError, match="T5-style encoder-decoder") as err:
            call()
        assert "\n" not in str(err.value) and "BartForConditionalGeneration" in str(err.value)
    t5 = tiny_t5(len(tok))
    with pytest.raises(GradLensError, match=r"layer 2 is out of range \(.* 2 decoder layers\)"):
        one_step_edit(t5, tok, PROMPT, TARGET, 2, "FF1", 0.1)


def test_logit_lens_refuses_a_t5_family_without_the_scaling_flag(tok):
    """mT5's config has no scale_decoder_outputs (transformers decides in the family's code):
    the logit lens refuses it in one line rather than guess the output scaling."""
    from transformers import MT5Config, MT5ForConditionalGeneration

    config = tiny_t5(len(tok)).config.to_dict()
    config.pop("scale_decoder_outputs")
    mt5 = MT5ForConditionalGeneration(MT5Config(**config)).eval()
    for call in (
        lambda: backward_lens(mt5, tok, PROMPT, TARGET),
        lambda: lens_ranks(mt5, tok, ITEMS[:1]),
    ):
        with pytest.raises(GradLensError, match="cannot tell whether MT5ForConditionalGeneration"):
            call()
