"""The backward lens against independent autograd computations on tiny Llama (tied and untied
embeddings, so that an input / output embedding mix-up shows), GPT-2 and NeoX models: the lens
readings, the shift (target_cosine and its rank), the least probable tokens of δ, the Fig. 4
ranks over many prompts, the one-step edit; and the rank of the first MLP matrix's gradient on
the bundled SmolLM2."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.figures import (
    backward_lens_heatmap,
    ff1_rank_figure,
    fig4_figure,
    rank_check,
    shift_figure,
    shift_share_figure,
    target_cosine_heatmap,
    token_label,
)
from gradlens.lenses.backward import backward_lens, factored_rank, lens_logits
from gradlens.lenses.edit import MATRICES, one_step_edit, stepped
from gradlens.lenses.embedding_batch import optimize_batch
from gradlens.lenses.ranks import COLUMNS, LensPrompt, fig4_statistic, lens_ranks
from gradlens.models.surgery import final_norm
from tests.conftest import build_tiny, tiny_config

PROMPT = "The quick brown fox jumps over the"
TARGET = " lazy dog"
FAMILIES = ("llama", "llama-untied", "gpt2", "neox")


def build(family: str, tokenizer, seed: int = 0) -> nn.Module:
    """A tiny model of ``family``; ``llama-untied`` has its own output embedding."""
    if family != "llama-untied":
        return build_tiny(family, tokenizer, seed)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config("llama", len(tokenizer))
    cfg.update({"tie_word_embeddings": False})
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    return model


def mlp_pair(model, family: str, layer: int) -> tuple[nn.Module, nn.Module]:
    """(first, last) MLP matrix of a block, found by attribute path (not by the lens's code)."""
    if family.startswith("llama"):
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
    return request.param, build(request.param, tokenizer)


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
    zero = lens_logits(model, torch.zeros(2, 32))
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
    assert lens.rank_frame()["rank_equals_n"].tolist() == (lens.ff1_rank == lens.n_tokens).tolist()


def test_smollm2_ff1_rank():
    """The lemma on the real model: rank n before the last layer, 1 in the last (measured); the
    shift of the worked example."""
    from gradlens.models.loading import load_model

    model, tok = load_model("smollm2")
    lens = backward_lens(model, tok, "Lionel Messi plays for", " Paris")
    n = lens.n_tokens
    assert n == 7
    assert lens.ff1_shape == (1536, 576)
    assert (lens.ff1_rank <= n).all()
    assert lens.ff1_rank[:-1].tolist() == [n] * (lens.n_layers - 1)
    assert lens.ff1_rank[-1] == 1
    # the shift (measured): the step writes " Paris"'s output embedding into the last layers,
    # most strongly in the last one, where the logit lens does not rank it first
    shift = lens.shift_frame().set_index("layer")
    cos = shift["target_cosine"]
    assert cos[29] > cos[25] > cos[20] > 0
    assert shift.loc[29, "cosine_rank"] == 1 and shift.loc[29, "logit_lens_rank"] > 1
    assert not lens.bottom_differs.any()  # RMSNorm: δ's least probable tokens = −δ's top


# -- the shift: cosine of −δ with the target's output embedding ----------------------------------
def cosine_rank(values: torch.Tensor, target: int, tol: float = 1e-6) -> tuple[int, int]:
    """The target's rank by ``values`` [V] (1 = top) and how many other rows lie within ``tol``
    of its value (float round-off can order those either way)."""
    c = values[target]
    ties = int(((values - c).abs() <= tol).sum()) - 1
    return int((values > c).sum()) + 1, ties


@pytest.mark.parametrize("whole", [False, True])
def test_target_cosine_matches_autograd(tiny, tokenizer, whole):
    family, model = tiny
    lens = backward_lens(model, tokenizer, PROMPT, TARGET, top_k=2, whole_target=whole)
    _, deltas, _, _, t_ids = reference(model, tokenizer, family, PROMPT, TARGET, whole)
    out = model.get_output_embeddings().weight.detach()[: len(tokenizer)]
    reached = deltas.norm(dim=-1) > 0
    cos = F.cosine_similarity(-deltas, out[t_ids[0]].expand_as(deltas), dim=-1)
    want = torch.where(reached, cos, torch.zeros_like(cos))
    np.testing.assert_allclose(lens.target_cosine, want.numpy(), atol=1e-5)
    assert ((lens.target_cosine_rank == 0) == ~reached.numpy()).all()
    for layer, t in [(0, 0), (0, lens.n_tokens - 1), (1, lens.n_tokens - 1)]:
        cos_all = F.cosine_similarity(-deltas[layer, t][None], out, dim=-1)
        rank, ties = cosine_rank(cos_all, t_ids[0])
        assert abs(int(lens.target_cosine_rank[layer, t]) - rank) <= ties
    if family == "llama-untied":  # the input embedding's row gives another answer
        inp = model.get_input_embeddings().weight.detach()[t_ids[0]]
        wrong = F.cosine_similarity(-deltas, inp.expand_as(deltas), dim=-1)
        assert not np.allclose(lens.target_cosine[reached], wrong[reached].numpy(), atol=1e-3)
    shift = lens.shift_frame()
    pos = lens.answer_position
    assert pos == len(tokenizer(PROMPT)["input_ids"]) - 1
    assert shift["target_cosine"].tolist() == lens.target_cosine[:, pos].tolist()
    assert shift["logit_lens_rank"].tolist() == lens.target_rank[:, pos].tolist()


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox"])
def test_least_probable_tokens_of_delta(tokenizer, family):
    """The paper's reading (bottom of the logit lens of δ) written out; it equals the top of −δ
    for an RMSNorm model and differs once a LayerNorm has a bias."""
    model = build(family, tokenizer)
    if family != "llama":
        torch.manual_seed(1)
        with torch.no_grad():
            final_norm(model).bias.normal_()
    lens = backward_lens(model, tokenizer, PROMPT, TARGET, top_k=3)
    _, deltas, *_ = reference(model, tokenizer, family, PROMPT, TARGET, False)
    vocab = len(tokenizer)
    for layer, t in [(0, 2), (1, lens.n_tokens - 1)]:
        lens_delta = explicit_lens(model, deltas[layer, t])[:vocab]
        want = decode(tokenizer, lens_delta.topk(3, largest=False).indices.tolist())
        assert lens.delta_bottom[layer][t] == want
    differs = lens.bottom_differs
    assert differs.shape == lens.vjp_norm.shape
    assert not differs[lens.vjp_norm == 0].any()  # empty cells are equal (both empty)
    if family == "llama":
        assert not differs.any()
        assert (lens.frame()["least_probable"].map(len) == 0).all()
    else:
        assert differs[lens.vjp_norm > 0].any()
        shown = lens.frame()["least_probable"].map(len) > 0
        assert shown.tolist() == differs.reshape(-1).tolist()


def test_factored_rank_is_matrix_rank():
    """The rank from the two factors equals torch.linalg.matrix_rank of the float32 product,
    for full rank, duplicated and zero rows, a wide and a tall product and S ≥ min(f, d)."""
    torch.manual_seed(0)
    cases = []
    for S, f, d in [(5, 40, 24), (5, 24, 40), (30, 40, 24)]:
        d1, x = torch.randn(S, f), torch.randn(S, d)
        cases.append((d1, x))
        cases.append((torch.cat([d1[:3], d1[:2]]), x[:5]))  # d1 of rank 3
        cases.append((d1[:5], torch.cat([x[:4], torch.zeros(1, d)])))  # x of rank 4
        cases.append((d1[:5] * torch.tensor([1, 1, 1, 1, 1e-9])[:, None], x[:5]))
    for d1, x in cases:
        assert factored_rank(d1, x) == int(torch.linalg.matrix_rank(d1.T @ x)), d1.shape


# -- the paper's Fig. 4 over many prompts -----------------------------------------------------
ITEMS = [
    LensPrompt("a", "The quick brown fox jumps over the", " lazy"),
    LensPrompt("b", "Lionel Messi plays for", " Paris"),
    LensPrompt("c", "One, two, three,", " four"),
]


def test_fig4_ranks_match_autograd(tiny, tokenizer):
    family, model = tiny
    frame = lens_ranks(model, tokenizer, ITEMS)
    n_layers = model.config.num_hidden_layers
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == len(ITEMS) * n_layers
    out = model.get_output_embeddings().weight.detach()[: len(tokenizer)]
    for item in ITEMS:
        rows = frame[frame["id"] == item.id]
        _, deltas, _, w_grads, t_ids = reference(
            model, tokenizer, family, item.prompt, item.target, False
        )
        n = len(tokenizer(item.prompt)["input_ids"])
        assert rows["n_tokens"].tolist() == [n] * n_layers
        assert rows["ff1_rank"].tolist() == [int(torch.linalg.matrix_rank(g)) for g in w_grads]
        minus = -deltas[:, -1]
        cos = F.cosine_similarity(minus, out[t_ids[0]].expand_as(minus), dim=-1)
        np.testing.assert_allclose(rows["target_cosine"], cos.numpy(), atol=1e-5)
        for layer in range(n_layers):
            cos_all = F.cosine_similarity(minus[layer][None], out, dim=-1)
            rank, ties = cosine_rank(cos_all, t_ids[0])
            assert abs(int(rows["cosine_rank"].iloc[layer]) - rank) <= ties
            logits = explicit_lens(model, minus[layer])[: len(tokenizer)]
            lens_rank = int((logits > logits[t_ids[0]]).sum()) + 1
            assert int(rows["lens_rank"].iloc[layer]) == lens_rank
    stat = fig4_statistic(frame)
    for layer in range(n_layers):
        rows = [r for r in frame.itertuples() if r.layer == layer]
        want = sum(r.ff1_rank == r.n_tokens for r in rows) / len(rows)
        assert stat["share_rank_n"].iloc[layer] == pytest.approx(want)
        assert stat["layer_index"].iloc[layer] == pytest.approx(layer / (n_layers - 1))
        assert stat["prompts"].iloc[layer] == len(ITEMS)
        top = sum(r.cosine_rank == 1 for r in rows) / len(rows)
        assert stat["share_cosine_top"].iloc[layer] == pytest.approx(top)
    # only the last position carries loss: the last layer's FF1 gradient has rank 1
    assert stat["share_rank_n"].iloc[-1] == 0.0


# -- the one-step edit --------------------------------------------------------------------
def bits(model) -> dict[str, torch.Tensor]:
    """Every parameter and buffer as raw bytes (so that -0.0 and 0.0, or two NaNs, differ)."""
    return {
        name: t.detach().reshape(-1).clone().view(torch.uint8)
        for name, t in list(model.named_parameters()) + list(model.named_buffers())
    }


def reference_edit(model, tokenizer, family, prompt, target, layer, matrix, lr):
    """The edit by hand on a deep copy: autograd's ∇W, W − lr·∇W assigned, the new softmax."""
    import copy

    twin = copy.deepcopy(model)
    first, last = mlp_pair(twin, family, layer)
    w = (first if matrix == "FF1" else last).weight
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    t = tokenizer(target, add_special_tokens=False)["input_ids"][0]
    logits = twin(input_ids=ids).logits[0, -1]
    (g,) = torch.autograd.grad(F.cross_entropy(logits[None], torch.tensor([t])), [w])
    with torch.no_grad():
        w.copy_(w - lr * g)
        after = torch.softmax(twin(input_ids=ids).logits[0, -1], -1)
    return torch.softmax(logits.detach(), -1), after, g, t


@pytest.mark.parametrize("matrix", MATRICES)
def test_edit_matches_autograd(tiny, tokenizer, matrix):
    family, model = tiny
    layer, lr = 0, 0.5
    edit = one_step_edit(model, tokenizer, PROMPT, TARGET, layer, matrix, lr, top_k=4)
    before, after, g, t = reference_edit(
        model, tokenizer, family, PROMPT, TARGET, layer, matrix, lr
    )
    assert_edit_matches(edit, tokenizer, before, after, g, t)
    assert edit.frame()["before"].tolist() == list(edit.before.top_tokens)


def test_edit_restores_the_model_bit_for_bit(tokenizer):
    model = build_tiny("gpt2", tokenizer).train()
    model.transformer.h[1].mlp.c_proj.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    saved = bits(model)
    for layer, matrix in [(1, "FF2"), (0, "FF1")]:
        one_step_edit(model, tokenizer, PROMPT, TARGET, layer, matrix, lr=3.0)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    now = bits(model)
    assert all(torch.equal(saved[k], now[k]) for k in saved)


def test_stepped_holds_w_minus_lr_grad_and_puts_it_back(tokenizer):
    model = build("llama-untied", tokenizer)
    w = model.model.layers[1].mlp.down_proj.weight
    _, _, g, _ = reference_edit(model, tokenizer, "llama", PROMPT, TARGET, 1, "FF2", 0.25)
    w0 = w.detach().clone()
    with stepped(w, g, 0.25):
        assert torch.equal(w.detach(), w0 - 0.25 * g)
    assert torch.equal(w.detach().view(torch.uint8), w0.view(torch.uint8))
    with pytest.raises(RuntimeError, match="boom"), stepped(w, g, 0.25):
        raise RuntimeError("boom")
    assert torch.equal(w.detach().view(torch.uint8), w0.view(torch.uint8))


def assert_edit_matches(edit, tokenizer, before, after, g, t: int) -> None:
    """``edit`` (top 4) against the reference: the gradient's norm, the target's probability
    before and after, its rank after (up to ties), the top tokens after, a lower loss."""
    assert edit.grad_norm == pytest.approx(float(g.norm()), rel=1e-4)
    assert edit.before.target_prob == pytest.approx(float(before[t]), rel=1e-5)
    assert edit.after.target_prob == pytest.approx(float(after[t]), rel=1e-4)
    rank, ties = cosine_rank(after, t, tol=1e-4 * float(after[t]))
    assert abs(edit.after.target_rank - rank) <= ties
    top = after[: len(tokenizer)].topk(4)
    assert edit.after.top_tokens == decode(tokenizer, top.indices.tolist())
    np.testing.assert_allclose(edit.after.top_probs, top.values.numpy(), rtol=1e-4)
    assert edit.after.loss < edit.before.loss  # a small step of gradient descent lowers it


def test_edit_and_lens_refuse_what_they_cannot_do(tokenizer):
    from tests.unit.test_t5_bert_discovery import tiny_t5

    model = build_tiny("llama", tokenizer)
    for lr in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(GradLensError, match="learning rate"):
            one_step_edit(model, tokenizer, PROMPT, TARGET, 0, "FF2", lr)
    with pytest.raises(GradLensError, match="layer 2 is out of range"):
        one_step_edit(model, tokenizer, PROMPT, TARGET, 2, "FF2", 0.1)
    with pytest.raises(GradLensError, match="matrix"):
        one_step_edit(model, tokenizer, PROMPT, TARGET, 0, "FF3", 0.1)
    t5 = tiny_t5(len(tokenizer))  # the other lenses read T5 (tests/unit/test_lenses_t5.py)
    with pytest.raises(GradLensError, match="not encoder-decoder"):
        optimize_batch(t5, tokenizer, PROMPT, batch=2, steps=1)


def test_shift_and_fig4_figures(tokenizer):
    model = build_tiny("gpt2", tokenizer)
    lens = backward_lens(model, tokenizer, "<b>bold</b> is", " <i>")
    heat = target_cosine_heatmap(lens)
    z = np.array(heat.data[0].z, dtype=float)
    reached = lens.vjp_norm > 0
    assert np.isnan(z[~reached]).all()
    np.testing.assert_allclose(z[reached], lens.target_cosine[reached])
    texts = [c for row in heat.data[0].text for c in row]
    assert all("<" not in c for c in texts) and "<" not in heat.layout.title.text
    rank = int(lens.target_cosine_rank[-1, -1])
    assert heat.data[0].text[-1][-1] == (f"#{rank}" if rank < 1000 else f"#{rank // 1000}k")
    shift = shift_figure(lens)
    assert list(shift.data[0].y) == lens.target_cosine[:, lens.answer_position].tolist()
    assert list(shift.data[2].y) == lens.target_rank[:, lens.answer_position].tolist()
    assert "<" not in shift.layout.title.text
    assert (
        "of ' <':" in lens.shift_summary() and f"{lens.vocab_size:,} tokens" in lens.shift_summary()
    )
    frame = lens_ranks(model, tokenizer, ITEMS)
    stats = {"<script>": fig4_statistic(frame), "b": fig4_statistic(frame.assign(ff1_rank=0))}
    fig4 = fig4_figure(stats)
    assert [t.name for t in fig4.data] == ["&lt;script&gt;", "b"]
    assert list(fig4.data[0].y) == stats["<script>"]["share_rank_n"].tolist()
    assert list(fig4.data[1].y) == [0.0, 0.0]
    shares = shift_share_figure(stats)
    assert len(shares.data) == 4
    assert list(shares.data[3].y) == stats["b"]["share_lens_top"].tolist()
