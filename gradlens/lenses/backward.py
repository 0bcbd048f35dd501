"""Backward lens: a language model's MLP gradients projected into the vocabulary.

After Katz, Belinkov, Geva and Wolf (2024), "Backward Lens: Projecting Language Model Gradients
into the Vocabulary Space". For one prompt and a target, one backward pass gives, per layer ℓ and
prompt position t:

- ``x_t``: the input of the layer's first MLP matrix (``up`` / ``c_fc`` / ``fc_in``), captured by
  a forward hook; its logit lens is the *imprint* of the position on that matrix's gradient;
- ``δ_t = ∂L/∂y_t``: the gradient of the loss w.r.t. the output ``y_t`` of the MLP's last matrix
  (``down`` / ``c_proj`` / ``fc_out``), captured by a tensor hook. Its logit lens, taken on
  ``−δ_t`` (the direction a gradient-descent step moves the output in), names the tokens the
  update promotes and demotes.

By the lemma of the paper the first MLP matrix's gradient is ``Σ_t δ'_t x_tᵀ`` (``δ'_t`` the
gradient at that matrix's output), so its rank is at most the number of positions ``n``;
``ff1_rank`` is its numeric rank (``torch.linalg.matrix_rank`` on the float32 gradient at the
default tolerance; in float64 the round-off would count as rank).

The logit lens here is the model's final norm followed by the unembedding, applied to a vector
first scaled to unit RMS: the lens reads a direction, and a gradient is many orders of magnitude
smaller than a hidden state, so without the scaling the norm's ε (and a LayerNorm's bias) would
swamp it. For an RMSNorm model the ranking is the same with or without the scaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.models.surgery import (
    frozen,
    last_logits_kwargs,
    logit_lens,
    mlp_modules,
    model_device,
)
from gradlens.models.tokens import decode_each


@dataclass(frozen=True)
class BackwardLens:
    """The backward lens of one prompt and target.

    tokens: the n positions the loss reaches, decoded one by one (the prompt's tokens as the
    tokenizer gives them; with ``whole_target`` followed by the target's tokens but its last);
    target_tokens: the target's tokens (the first is the one ranked); loss: its value;
    vjp_norm [layers, n]: ‖δ_t‖ at each layer's MLP output; vjp_top / vjp_bottom [layers][n][k]:
    tokens the logit lens of −δ_t promotes / demotes (empty where δ_t = 0); imprint_top
    [layers][n][k]: logit lens of x_t, the first MLP matrix's input; target_rank [layers, n]:
    rank (1 = top) of the target's first token in the −δ_t projection, 0 where δ_t = 0;
    ff1_rank [layers]: numeric rank of the first MLP matrix's gradient (≤ n).
    """

    prompt: str
    target: str
    whole_target: bool
    tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    loss: float
    vjp_norm: np.ndarray
    vjp_top: tuple[tuple[tuple[str, ...], ...], ...]
    vjp_bottom: tuple[tuple[tuple[str, ...], ...], ...]
    imprint_top: tuple[tuple[tuple[str, ...], ...], ...]
    target_rank: np.ndarray
    ff1_rank: np.ndarray
    ff1_shape: tuple[int, int]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_layers(self) -> int:
        return int(self.vjp_norm.shape[0])

    def frame(self) -> pd.DataFrame:
        """One row per (layer, position): norm, target rank and the top-k token lists."""
        rows = []
        for layer in range(self.n_layers):
            for pos, token in enumerate(self.tokens):
                rows.append(
                    {
                        "layer": layer,
                        "position": pos,
                        "token": token,
                        "vjp_norm": float(self.vjp_norm[layer, pos]),
                        "target_rank": int(self.target_rank[layer, pos]),
                        "promoted": list(self.vjp_top[layer][pos]),
                        "demoted": list(self.vjp_bottom[layer][pos]),
                        "imprint": list(self.imprint_top[layer][pos]),
                    }
                )
        return pd.DataFrame(rows)

    def rank_frame(self) -> pd.DataFrame:
        """ff1_rank per layer beside n."""
        return pd.DataFrame(
            {
                "layer": np.arange(self.n_layers),
                "ff1_rank": self.ff1_rank.astype(int),
                "n_tokens": self.n_tokens,
                "rank_le_n": self.ff1_rank <= self.n_tokens,
            }
        )


def _decode_grid(tokenizer, ids: torch.Tensor, empty: torch.Tensor) -> tuple:
    """ids [L, n, k] -> nested tuples of decoded tokens; cells where ``empty`` [L, n] get ()."""
    flat = decode_each(tokenizer, ids.reshape(-1).tolist())
    L, n, k = ids.shape
    return tuple(
        tuple(
            () if bool(empty[a, b]) else tuple(flat[(a * n + b) * k : (a * n + b + 1) * k])
            for b in range(n)
        )
        for a in range(L)
    )


# -- the lens ------------------------------------------------------------------------------------
def backward_lens(
    model: nn.Module,
    tokenizer,
    prompt: str,
    target: str,
    top_k: int = 5,
    whole_target: bool = False,
) -> BackwardLens:
    """The backward lens of ``prompt`` → ``target`` in one forward and one backward pass.

    Loss: cross-entropy of the target's first token at the prompt's last position; with
    ``whole_target`` the target is teacher-forced after the prompt and the loss is the mean
    cross-entropy over its tokens. The prompt is tokenized as is (no chat template; special
    tokens only where the tokenizer always adds them), the target without special tokens.
    The model is used in eval mode; its ``requires_grad`` flags and training mode are restored.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    prompt_ids, target_ids = _token_ids(tokenizer, prompt, target)
    ids = prompt_ids + (target_ids if whole_target else [])
    # Positions that the loss reaches: the prompt (plus the target but its last token).
    n = len(prompt_ids) + (len(target_ids) - 1 if whole_target else 0)

    def loss_of(input_ids: torch.Tensor) -> torch.Tensor:
        return _loss(model, input_ids, len(prompt_ids), target_ids, whole_target)

    x, delta, loss, grads = _mlp_gradients(model, ids, n, loss_of)
    vjp_norm = delta.norm(dim=-1)  # [L, n]
    empty = vjp_norm == 0
    top, bottom, rank, imprint = _read_lenses(model, len(tokenizer), x, delta, target_ids[0], top_k)
    rank = torch.where(empty, torch.zeros_like(rank), rank)
    ff1_rank = [int(torch.linalg.matrix_rank(_tall(g.detach().float()))) for g in grads]
    return BackwardLens(
        prompt=prompt,
        target=target,
        whole_target=whole_target,
        tokens=tuple(decode_each(tokenizer, ids[:n])),
        target_tokens=tuple(decode_each(tokenizer, target_ids)),
        loss=float(loss.detach()),
        vjp_norm=vjp_norm.cpu().numpy().astype(np.float64),
        vjp_top=_decode_grid(tokenizer, top.cpu(), empty.cpu()),
        vjp_bottom=_decode_grid(tokenizer, bottom.cpu(), empty.cpu()),
        imprint_top=_decode_grid(tokenizer, imprint.cpu(), torch.zeros_like(empty).cpu()),
        target_rank=rank.cpu().numpy().astype(np.int64),
        ff1_rank=np.array(ff1_rank, dtype=np.int64),
        ff1_shape=tuple(grads[0].shape),
    )


def _token_ids(tokenizer, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """The prompt's ids (as the tokenizer gives them) and the target's (no special tokens);
    GradLensError where either is empty."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if not prompt_ids:
        raise GradLensError("the prompt is empty (no tokens)")
    if not target_ids:
        raise GradLensError("the target is empty (no tokens)")
    return prompt_ids, target_ids


def _loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    n_prompt: int,
    target_ids: list[int],
    whole_target: bool,
) -> torch.Tensor:
    """Cross-entropy of the target's first token after the prompt, or with ``whole_target`` the
    mean over the target's tokens (teacher-forced: ``input_ids`` holds prompt and target)."""
    device = input_ids.device
    if whole_target:
        logits = model(input_ids=input_ids, use_cache=False).logits[0].float()
        return F.cross_entropy(
            logits[n_prompt - 1 : n_prompt - 1 + len(target_ids)],
            torch.tensor(target_ids, device=device),
        )
    out = model(input_ids=input_ids, use_cache=False, **last_logits_kwargs(model))
    return F.cross_entropy(out.logits[0, -1:].float(), torch.tensor(target_ids[:1], device=device))


def _mlp_gradients(
    model: nn.Module, ids: list[int], n: int, loss_of
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """One forward and one backward pass of ``loss_of(input_ids)`` with every weight frozen but
    the first MLP matrices. Returns x [L, n, d] (each first MLP matrix's input), δ [L, n, d]
    (the gradient at each last MLP matrix's output; zero where the loss does not reach it), the
    loss and the first MLP matrices' gradients (all hooks removed, the model's flags restored).
    """
    firsts, lasts = mlp_modules(model)
    xs: list[torch.Tensor | None] = [None] * len(firsts)
    deltas: list[torch.Tensor | None] = [None] * len(firsts)

    def first_hook(i):
        def hook(module, args, output):
            xs[i] = args[0].detach()[0, :n]

        return hook

    def last_hook(i):
        def hook(module, args, output):
            if not output.requires_grad:
                return

            def save(grad):
                deltas[i] = grad.detach()[0, :n]

            output.register_hook(save)

        return hook

    device = model_device(model)
    weights = [m.weight for m in firsts]
    handles = []
    try:
        with frozen(model, keep=weights):
            for i, (f, last) in enumerate(zip(firsts, lasts)):
                handles.append(f.register_forward_hook(first_hook(i)))
                handles.append(last.register_forward_hook(last_hook(i)))
            with torch.enable_grad():
                loss = loss_of(torch.tensor([ids], device=device))
                grads = torch.autograd.grad(loss, weights)
    finally:
        for h in handles:
            h.remove()
    zero = torch.zeros(n, xs[0].shape[-1], device=device)
    delta = torch.stack([d if d is not None else zero for d in deltas]).float()
    return torch.stack(xs).float(), delta, loss, grads


def _read_lenses(
    model: nn.Module, n_vocab: int, x: torch.Tensor, delta: torch.Tensor, target: int, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logit lens of −δ and of x (both [L, n, d]) over the tokenizer's ``n_vocab`` tokens:
    ids [L, n, k] of the tokens −δ promotes and demotes most, the rank [L, n] (1 = top) of
    ``target`` in −δ's projection, and ids [L, n, k] of x's top tokens (the imprint)."""
    n_layers, n, hidden = delta.shape
    lens_vjp = logit_lens(model, -delta.reshape(-1, hidden)).reshape(n_layers, n, -1)
    vocab = min(lens_vjp.shape[-1], n_vocab)
    lens_vjp = lens_vjp[..., :vocab]
    k = min(top_k, vocab)
    top = lens_vjp.topk(k, dim=-1).indices
    bottom = (-lens_vjp).topk(k, dim=-1).indices
    target_logit = lens_vjp[..., target].unsqueeze(-1)
    rank = (lens_vjp > target_logit).sum(-1) + 1
    del lens_vjp
    lens_x = logit_lens(model, x.reshape(-1, hidden)).reshape(n_layers, n, -1)[..., :vocab]
    return top, bottom, rank, lens_x.topk(k, dim=-1).indices


def _tall(g: torch.Tensor) -> torch.Tensor:
    """The matrix with at least as many rows as columns (same rank; LAPACK's SVD of a wide
    contiguous matrix is much slower)."""
    return g if g.shape[0] >= g.shape[1] else g.T.contiguous()
