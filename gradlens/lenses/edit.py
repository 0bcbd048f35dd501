"""One gradient step on one MLP matrix: the editing setting of the Backward Lens paper.

For a prompt and a target, the loss is the cross-entropy of the target's first token at the
prompt's last position (as in ``gradlens.lenses.backward``). One layer's FF1 (``up`` / ``c_fc`` /
``fc_in``) or FF2 (``down`` / ``c_proj`` / ``fc_out``) gets one plain gradient-descent step,
``W ← W − lr · ∇W``; the next-token distribution is read before and after, and the weight is put
back (a copy of its bytes), with every ``requires_grad`` flag and the training mode, whatever
happens in between. An encoder-decoder model (T5) reads the prompt in its encoder and scores the
target's first token at the decoder's first position; its layers are the decoder's blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from gradlens.errors import GradLensError
from gradlens.lenses.backward import is_encoder_decoder, lens_mlps, target_logits, token_ids
from gradlens.models.surgery import frozen, model_device
from gradlens.models.tokens import decode_each

#: The MLP matrices an edit can step: the first (FF1) and the last (FF2).
MATRICES = ("FF1", "FF2")


@dataclass(frozen=True)
class Prediction:
    """The next-token distribution at the prompt's last position: the target's probability and
    rank (1 = top), the loss (−log p of the target), the top tokens and their probabilities."""

    target_prob: float
    target_rank: int
    loss: float
    top_tokens: tuple[str, ...]
    top_probs: tuple[float, ...]


@dataclass(frozen=True)
class OneStepEdit:
    """One gradient step on ``matrix`` (FF1 or FF2) of ``layer`` with learning rate ``lr``.

    target_token: the target's first token (the one scored); weight_shape: the stepped weight's
    shape; grad_norm: ‖∇W‖ (Frobenius); weight_norm: ‖W‖; before / after: the next-token
    distribution with the original and with the stepped weight."""

    prompt: str
    target: str
    target_token: str
    layer: int
    matrix: str
    lr: float
    weight_shape: tuple[int, ...]
    grad_norm: float
    weight_norm: float
    before: Prediction
    after: Prediction

    @property
    def step_norm(self) -> float:
        """‖lr · ∇W‖, the size of the change."""
        return self.lr * self.grad_norm

    def frame(self) -> pd.DataFrame:
        """The top predictions before and after, side by side (one row per rank)."""
        k = min(len(self.before.top_tokens), len(self.after.top_tokens))
        return pd.DataFrame(
            {
                "rank": range(1, k + 1),
                "before": self.before.top_tokens[:k],
                "p_before": self.before.top_probs[:k],
                "after": self.after.top_tokens[:k],
                "p_after": self.after.top_probs[:k],
            }
        )


def edit_weight(model: nn.Module, layer: int, matrix: str) -> nn.Parameter:
    """The weight of ``matrix`` (FF1 or FF2) in ``layer``; GradLensError for one out of range."""
    if matrix not in MATRICES:
        raise GradLensError(f"matrix: expected one of {', '.join(MATRICES)}, got {matrix!r}")
    firsts, lasts = lens_mlps(model)
    if not 0 <= layer < len(firsts):
        stack = "decoder " if is_encoder_decoder(model) else ""
        raise GradLensError(
            f"layer {layer} is out of range (the model has {len(firsts)} {stack}layers)"
        )
    return (firsts if matrix == "FF1" else lasts)[layer].weight


@contextmanager
def stepped(weight: torch.Tensor, grad: torch.Tensor, lr: float) -> Iterator[None]:
    """``weight`` holds ``W − lr · grad`` for the block; on exit (also on an exception) it holds
    its original bytes again."""
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.copy_(saved - lr * grad)
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def one_step_edit(
    model: nn.Module,
    tokenizer,
    prompt: str,
    target: str,
    layer: int,
    matrix: str = "FF2",
    lr: float = 0.1,
    top_k: int = 10,
) -> OneStepEdit:
    """One step of gradient descent on one MLP matrix towards ``target`` after ``prompt`` (the
    prompt as is, no chat template), and the next-token distribution before and after. The model
    comes back as it was: weights bit for bit, ``requires_grad`` flags, training mode."""
    if not (math.isfinite(lr) and lr > 0):
        raise GradLensError(f"the learning rate must be a positive number, got {lr}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    prompt_ids, target_ids = token_ids(tokenizer, prompt, target, is_encoder_decoder(model))
    weight = edit_weight(model, layer, matrix)
    ids = torch.tensor([prompt_ids], device=model_device(model))
    target_id = target_ids[0]

    def next_logits() -> torch.Tensor:
        return target_logits(model, ids, len(prompt_ids), target_ids)[0]

    with frozen(model, keep=[weight]):
        with torch.enable_grad():
            logits = next_logits()
            loss = -torch.log_softmax(logits, -1)[target_id]
            (grad,) = torch.autograd.grad(loss, [weight])
        before = _prediction(tokenizer, logits.detach(), target_id, top_k)
        with stepped(weight, grad, lr), torch.no_grad():
            after = _prediction(tokenizer, next_logits(), target_id, top_k)
    return OneStepEdit(
        prompt=prompt,
        target=target,
        target_token=decode_each(tokenizer, [target_id])[0],
        layer=layer,
        matrix=matrix,
        lr=float(lr),
        weight_shape=tuple(weight.shape),
        grad_norm=float(grad.float().norm()),
        weight_norm=float(weight.detach().float().norm()),
        before=before,
        after=after,
    )


def _prediction(tokenizer, logits: torch.Tensor, target: int, top_k: int) -> Prediction:
    """The distribution of ``logits`` [V] over the tokenizer's tokens, read for ``target``."""
    logp = torch.log_softmax(logits.float(), -1)[: len(tokenizer)]
    top = logp.topk(min(top_k, logp.shape[0]))
    return Prediction(
        target_prob=float(logp[target].exp()),
        target_rank=int((logp > logp[target]).sum()) + 1,
        loss=float(-logp[target]),
        top_tokens=tuple(decode_each(tokenizer, top.indices.tolist())),
        top_probs=tuple(float(p) for p in top.values.exp()),
    )
