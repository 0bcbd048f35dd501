"""The backward lens against independent autograd computations on tiny Llama / GPT-2 / NeoX
models, and the rank of the first MLP matrix's gradient on the bundled SmolLM2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.figures import backward_lens_heatmap, ff1_rank_figure, rank_check, token_label
from gradlens.lenses.backward import backward_lens
from gradlens.models.surgery import final_norm, logit_lens
from tests.conftest import build_tiny

PROMPT = "The quick brown fox jumps over the"
TARGET = " lazy dog"
FAMILIES = ("llama", "gpt2", "neox")


def mlp_pair(model, family: str, layer: int) -> tuple[nn.Module, nn.Module]:
    """(first, last) MLP matrix of a block, found by attribute path (not by the lens's code)."""
    if family == "llama":
        mlp = model.model.layers[layer].mlp
        return mlp.up_proj, mlp.down_proj
    if family == "gpt2":
        mlp = model.transformer.h[layer].mlp
        return mlp.c_fc, mlp.c_proj
    mlp = model.gpt_neox.layers[layer].mlp
    return mlp.dense_h_to_4h, mlp.dense_4h_to_h


def reference(model, tokenizer, family: str, prompt: str, target: str, whole: bool):
    """Loss, the MLP outputs' gradients [L, n, d], the first-MLP inputs [L, n, d] and the
    first-MLP weight gradients, all by plain autograd."""
    p_ids = tokenizer(prompt)["input_ids"]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    ids = p_ids + (t_ids if whole else [])
    n = len(p_ids) + (len(t_ids) - 1 if whole else 0)
    n_layers = model.config.num_hidden_layers
    outs, xs, handles = [], [], []
    pairs = [mlp_pair(model, family, i) for i in range(n_layers)]
    for first, last in pairs:
        handles.append(first.register_forward_hook(lambda m, a, o: xs.append(a[0].detach())))
        handles.append(last.register_forward_hook(lambda m, a, o: outs.append(o)))
    weights = [first.weight for first, _ in pairs]
    for w in weights:
        w.requires_grad_(True)
    try:
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        p = len(p_ids)
        if whole:
            loss = F.cross_entropy(logits[p - 1 : p - 1 + len(t_ids)], torch.tensor(t_ids))
        else:
            loss = F.cross_entropy(logits[p - 1], torch.tensor(t_ids[0]))
        grads = torch.autograd.grad(loss, outs + weights)
    finally:
        for h in handles:
            h.remove()
    deltas = torch.stack([g[0, :n] for g in grads[:n_layers]])
    x = torch.stack([x[0, :n] for x in xs])
    return float(loss.detach()), deltas, x, list(grads[n_layers:]), t_ids


def explicit_lens(model, v: torch.Tensor) -> torch.Tensor:
    """Final norm + unembedding of v scaled to unit RMS, written out."""
    with torch.no_grad():
        v = v / v.pow(2).mean().sqrt()
        return model.get_output_embeddings()(final_norm(model)(v))


def decode(tokenizer, ids) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tokenizer):
    return request.param, build_tiny(request.param, tokenizer)


@pytest.mark.parametrize("whole", [False, True])
def test_matches_autograd(tiny, tokenizer, whole):
    family, model = tiny
    k = 4
    lens = backward_lens(model, tokenizer, PROMPT, TARGET, top_k=k, whole_target=whole)
    loss, deltas, x, w_grads, t_ids = reference(model, tokenizer, family, PROMPT, TARGET, whole)
    n = lens.n_tokens
    n_layers = model.config.num_hidden_layers
    p_ids = tokenizer(PROMPT)["input_ids"]
    assert n == len(p_ids) + (len(t_ids) - 1 if whole else 0)
    assert lens.tokens[: len(p_ids)] == decode(tokenizer, p_ids)
    assert lens.loss == pytest.approx(loss, rel=1e-6)
    # ‖δ_t‖ = ‖∂L/∂y_t‖ at every MLP output
    assert lens.vjp_norm.shape == (n_layers, n)
    np.testing.assert_allclose(lens.vjp_norm, deltas.norm(dim=-1).numpy(), rtol=1e-5, atol=1e-9)
    # numeric rank of the first MLP matrix's gradient, <= n
    want = [int(torch.linalg.matrix_rank(g)) for g in w_grads]
    assert lens.ff1_rank.tolist() == want
    assert all(r <= n for r in want)
    if not whole:  # only the last position carries loss: the last MLP output matters there only
        assert want[-1] == 1
        assert (lens.vjp_norm[-1, :-1] == 0).all() and lens.vjp_norm[-1, -1] > 0
        assert lens.vjp_top[-1][0] == () and lens.target_rank[-1, 0] == 0
    # one cell of each lens, written out
    layer, t = 0, n - 1
    logits = explicit_lens(model, -deltas[layer, t])
    vocab = len(tokenizer)
    assert lens.vjp_top[layer][t] == decode(tokenizer, logits.topk(k).indices.tolist())
    assert lens.vjp_bottom[layer][t] == decode(tokenizer, (-logits).topk(k).indices.tolist())
    rank = int((logits[:vocab] > logits[t_ids[0]]).sum()) + 1
    assert lens.target_rank[layer, t] == rank
    imprint = explicit_lens(model, x[layer, 1])
    assert lens.imprint_top[layer][1] == decode(tokenizer, imprint.topk(k).indices.tolist())


def test_llama_lens_ignores_the_rms_scaling(tokenizer):
    """For an RMSNorm model the unit-RMS scaling does not change the ranking."""
    model = build_tiny("llama", tokenizer)
    lens = backward_lens(model, tokenizer, PROMPT, TARGET, top_k=3)
    _, deltas, *_ = reference(model, tokenizer, "llama", PROMPT, TARGET, False)
    v = -deltas[1, -1]
    with torch.no_grad():
        plain = model.lm_head(model.model.norm(v))
    assert lens.vjp_top[1][-1] == decode(tokenizer, plain.topk(3).indices.tolist())


def test_restores_model_state(tokenizer):
    model = build_tiny("gpt2", tokenizer).train()
    model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    backward_lens(model, tokenizer, PROMPT, TARGET)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(dataclasses.FrozenInstanceError):
        backward_lens(model, tokenizer, "a b", " c").loss = 0.0


def test_errors(tokenizer):
    model = build_tiny("llama", tokenizer)
    with pytest.raises(GradLensError, match="final norm"):
        final_norm(nn.Linear(2, 2))
    with pytest.raises(GradLensError, match="target is empty"):
        backward_lens(model, tokenizer, PROMPT, "")
    with pytest.raises(ValueError):
        backward_lens(model, tokenizer, PROMPT, TARGET, top_k=0)
    zero = logit_lens(model, torch.zeros(2, 32))
    assert torch.isfinite(zero).all()


def test_figures(tokenizer):
    model = build_tiny("neox", tokenizer)
    lens = backward_lens(model, tokenizer, "<b>bold</b> is", " it")
    heat = backward_lens_heatmap(lens)
    ticks = heat.layout.xaxis.ticktext
    assert len(ticks) == lens.n_tokens and not any("<" in t for t in ticks)
    assert all("<" not in c for row in heat.data[0].text for c in row)
    rank_fig = ff1_rank_figure(lens)
    assert "✓" in rank_fig.layout.title.text
    assert rank_check([7, 7, 1], 7) == "every layer ≤ n = 7 ✓"
    assert rank_check([7, 8, 1], 7) == "layer 1 exceeds n = 7 ✗"
    assert rank_check([8, 8, 1], 7) == "layers 0, 1 exceed n = 7 ✗"
    assert token_label(" a\n") == "␣a⏎"
    assert token_label("<script>") == "&lt;script&gt;"
    assert lens.frame().shape[0] == lens.n_layers * lens.n_tokens
    assert lens.rank_frame()["rank_le_n"].all()


def test_smollm2_ff1_rank():
    """The lemma on the real model: rank n before the last layer, 1 in the last (measured)."""
    from gradlens.models.loading import load_model

    model, tok = load_model("smollm2")
    lens = backward_lens(model, tok, "Lionel Messi plays for", " Paris")
    n = lens.n_tokens
    assert n == 7
    assert lens.ff1_shape == (1536, 576)
    assert (lens.ff1_rank <= n).all()
    assert lens.ff1_rank[:-1].tolist() == [n] * (lens.n_layers - 1)
    assert lens.ff1_rank[-1] == 1
