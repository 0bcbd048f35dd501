"""Reference implementations: the slow, obvious computations that the engine and benchmarks
compare against (plain ``torch.autograd.grad`` over each weight, the paper's per-query loop).
Not used by the compute job itself."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gradlens.data.examples import Tokenized, example_losses
from gradlens.models.loading import Component
from gradlens.models.surgery import frozen


def flat_component_grads(
    model: nn.Module,
    components: Sequence[Component],
    tok: Tokenized,
    reduction: str = "mean",
) -> list[torch.Tensor]:
    """Reference: each component's gradient flattened, by plain ``torch.autograd.grad``.

    The slow, obvious computation the engine is tested against. Returns float32 [P_c] tensors.
    """
    params = dict(model.named_parameters())
    weights = [params[c.params[0]] for c in components]
    device = weights[0].device
    ids = tok.input_ids[None].to(device)
    labels = tok.labels[None].to(device)
    with frozen(model, keep=weights, eval_mode=False), torch.enable_grad():
        logits = model(input_ids=ids, use_cache=False).logits
        loss = example_losses(logits, labels, reduction).sum()
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [
        (g if g is not None else torch.zeros_like(w)).reshape(-1).float()
        for g, w in zip(grads, weights)
    ]


def naive_pair_dots(
    model: nn.Module,
    components: Sequence[Component],
    query: Tokenized,
    candidates: Sequence[Tokenized],
    reduction: str = "mean",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's ``get_grads`` loop: 1 + b backward passes for one query, dense gradients.

    Returns dots[b, K], query_sq[K], cand_sq[b, K] (float64).
    """
    q = flat_component_grads(model, components, query, reduction)
    q_sq = np.array([torch.dot(g.double(), g.double()).item() for g in q])
    dots = np.zeros((len(candidates), len(components)))
    c_sq = np.zeros((len(candidates), len(components)))
    for j, cand in enumerate(candidates):
        c = flat_component_grads(model, components, cand, reduction)
        for k, (gq, gc) in enumerate(zip(q, c)):
            dots[j, k] = torch.dot(gq.double(), gc.double()).item()
            c_sq[j, k] = torch.dot(gc.double(), gc.double()).item()
    return dots, q_sq, c_sq
