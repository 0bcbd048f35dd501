"""Input-embedding gradients: which direction in the embedding space lowers the loss, read as
vocabulary tokens, and what happens when the input embeddings are optimised toward a target.

The loss is computed from ``inputs_embeds`` (the embedding lookup is done here, so ``e_t`` is a
token's input embedding before any position embedding is added). Two kinds of target:

- a token (``target_token``): cross-entropy of its first token at the last position (for a
  masked LM: at the first ``[MASK]`` position);
- a prompt (``target_prompt``): KL(q ‖ p), q the model's next-token distribution after the target
  prompt (at its mask for a masked LM), p the one after the text. "The animal that says neigh is
  a" with target prompt "The animal that says bark is a": the gradient says how the text's
  embeddings should move for the model to answer as it does for the target prompt.

Causal LMs (``…ForCausalLM``) and masked LMs (``…ForMaskedLM``, BERT style) are supported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.models.surgery import frozen, last_logits_kwargs, model_device
from gradlens.models.tokens import decode_each

TARGET_KINDS = ("token", "prompt")


@dataclass(frozen=True)
class InputGradients:
    """Gradients of the loss w.r.t. each token's input embedding.

    tokens: the text's tokens (special tokens included where the tokenizer adds them); target:
    the target token or prompt; target_kind: ``token`` or ``prompt``; position: where the
    prediction is read; loss: its value; grad_norm [n]: ‖∂L/∂e_t‖; nearest [n][k]: vocabulary
    tokens whose embedding has the highest cosine with −∂L/∂e_t; nearest_direction [n][k]:
    highest cosine between −∂L/∂e_t and e_v − e_t (the token itself excluded).
    """

    tokens: tuple[str, ...]
    target: str
    target_kind: str
    position: int
    loss: float
    grad_norm: np.ndarray
    nearest: tuple[tuple[str, ...], ...]
    nearest_direction: tuple[tuple[str, ...], ...]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "position": np.arange(self.n_tokens),
                "token": list(self.tokens),
                "grad_norm": self.grad_norm,
                "nearest": [list(t) for t in self.nearest],
                "nearest_direction": [list(t) for t in self.nearest_direction],
            }
        )


@dataclass(frozen=True)
class Optimization:
    """Adam on the input embeddings toward a target, state after each step s = 0..steps.

    loss [steps+1]: the loss at step s (s = 0: the original text); distance [steps+1, n]: each
    token's L2 distance from its starting embedding; nearest [steps+1][n]: the vocabulary token
    whose embedding has the highest cosine with the current one; frozen [n]: special tokens,
    never moved; typical_distance: median L2 distance between random pairs of vocabulary
    embeddings (the scale to read ``distance`` against).
    """

    tokens: tuple[str, ...]
    target: str
    target_kind: str
    lr: float
    loss: np.ndarray
    distance: np.ndarray
    nearest: tuple[tuple[str, ...], ...]
    frozen: np.ndarray
    typical_distance: float

    @property
    def steps(self) -> int:
        return len(self.loss) - 1

    def frame(self) -> pd.DataFrame:
        """One row per (step, position)."""
        rows = []
        for s in range(self.steps + 1):
            for t, token in enumerate(self.tokens):
                rows.append(
                    {
                        "step": s,
                        "position": t,
                        "token": token,
                        "loss": float(self.loss[s]),
                        "distance": float(self.distance[s, t]),
                        "nearest": self.nearest[s][t],
                        "frozen": bool(self.frozen[t]),
                    }
                )
        return pd.DataFrame(rows)


# -- helpers -------------------------------------------------------------------------------------
def is_masked_lm(model: nn.Module) -> bool:
    return "ForMaskedLM" in type(model).__name__


def _ids(tokenizer, text: str) -> list[int]:
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise GradLensError("the text is empty (no tokens)")
    return ids


def _position(model, tokenizer, ids: list[int], what: str) -> int:
    """Where the prediction is read: the last position, or the first mask of a masked LM."""
    if not is_masked_lm(model):
        return len(ids) - 1
    mask = getattr(tokenizer, "mask_token_id", None)
    if mask is None or mask not in ids:
        token = getattr(tokenizer, "mask_token", None) or "[MASK]"
        raise GradLensError(f"a masked LM needs a {token} token in the {what}")
    return ids.index(mask)


def _vocab(model, tokenizer) -> torch.Tensor:
    """The input embedding matrix, cut to the tokenizer's vocabulary (padding rows dropped)."""
    weight = model.get_input_embeddings().weight.detach()
    return weight[: min(weight.shape[0], len(tokenizer))].float()


def _logits_at(model, embeds: torch.Tensor, position: int) -> torch.Tensor:
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    if position == embeds.shape[1] - 1 and not is_masked_lm(model):
        kwargs = {"use_cache": False, **last_logits_kwargs(model)}
        out = model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        return out.logits[0, -1].float()
    out = model(inputs_embeds=embeds, attention_mask=mask)
    return out.logits[0, position].float()


class _Target:
    """The loss of a token or a target prompt, as a function of the next-token logits."""

    def __init__(self, model, tokenizer, kind: str, target: str) -> None:
        if kind not in TARGET_KINDS:
            raise ValueError(f"target kind must be one of {TARGET_KINDS}, got {kind!r}")
        self.kind = kind
        device = model_device(model)
        if kind == "token":
            tid = list(tokenizer(target, add_special_tokens=False)["input_ids"])
            if not tid:
                raise GradLensError("the target token is empty (no tokens)")
            self.token_id = torch.tensor([tid[0]], device=device)
        else:
            ids = _ids(tokenizer, target)
            pos = _position(model, tokenizer, ids, "target prompt")
            emb = model.get_input_embeddings()
            with torch.no_grad():
                e = emb(torch.tensor([ids], device=device))
                self.log_q = F.log_softmax(_logits_at(model, e, pos), -1)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "token":
            return F.cross_entropy(logits[None], self.token_id)
        log_p = F.log_softmax(logits, -1)
        return F.kl_div(log_p, self.log_q, log_target=True, reduction="sum")


def _one_target(target_token: str | None, target_prompt: str | None) -> tuple[str, str]:
    if (target_token is None) == (target_prompt is None):
        raise ValueError("give exactly one of target_token and target_prompt")
    return ("token", target_token) if target_token is not None else ("prompt", target_prompt)


def _topk_cosine(vectors: torch.Tensor, vocab_unit: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [n, k] of the vocabulary rows with the highest cosine to each vector."""
    unit = F.normalize(vectors, dim=-1)
    return (unit @ vocab_unit.T).topk(k, dim=-1).indices


# -- input gradients -----------------------------------------------------------------------------
def input_gradients(
    model: nn.Module,
    tokenizer,
    text: str,
    target_token: str | None = None,
    target_prompt: str | None = None,
    top_k: int = 5,
) -> InputGradients:
    """∂L/∂e_t for each token of ``text`` and what −∂L/∂e_t points at in the vocabulary.

    Exactly one of ``target_token`` (cross-entropy of its first token) and ``target_prompt``
    (KL of the target prompt's next-token distribution to the text's) must be given, else
    ValueError.
    """
    kind, target = _one_target(target_token, target_prompt)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    ids = _ids(tokenizer, text)
    position = _position(model, tokenizer, ids, "text")
    device = model_device(model)
    with frozen(model):
        goal = _Target(model, tokenizer, kind, target)
        emb = model.get_input_embeddings()
        with torch.no_grad():
            start = emb(torch.tensor([ids], device=device))
        e = start.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = goal(_logits_at(model, e, position))
            (grad,) = torch.autograd.grad(loss, e)
    g = grad[0].float()  # [n, d]
    vocab = _vocab(model, tokenizer)
    vocab_unit = F.normalize(vocab, dim=-1)
    k = min(top_k, vocab.shape[0] - 1)
    nearest = _topk_cosine(-g, vocab_unit, k)
    # cos(−g_t, e_v − e_t) for every v; the token itself (e_v − e_t = 0) excluded.
    e_t = start[0].float()
    dirs = []
    for t in range(len(ids)):
        diff = vocab - e_t[t]
        cos = F.cosine_similarity(diff, -g[t][None], dim=-1)
        cos = torch.where(diff.norm(dim=-1) > 0, cos, torch.full_like(cos, -torch.inf))
        dirs.append(cos.topk(k).indices)
    return InputGradients(
        tokens=tuple(decode_each(tokenizer, ids)),
        target=target,
        target_kind=kind,
        position=position,
        loss=float(loss.detach()),
        grad_norm=g.norm(dim=-1).cpu().numpy().astype(np.float64),
        nearest=tuple(tuple(decode_each(tokenizer, row)) for row in nearest.tolist()),
        nearest_direction=tuple(
            tuple(decode_each(tokenizer, row)) for row in torch.stack(dirs).tolist()
        ),
    )


def typical_distance(model: nn.Module, tokenizer, pairs: int = 4096, seed: int = 0) -> float:
    """Median L2 distance between ``pairs`` random pairs of distinct vocabulary embeddings."""
    vocab = _vocab(model, tokenizer)
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, vocab.shape[0], (pairs,), generator=gen)
    b = torch.randint(0, vocab.shape[0] - 1, (pairs,), generator=gen)
    b = b + (b >= a).long()  # distinct from a
    a, b = a.to(vocab.device), b.to(vocab.device)
    return float((vocab[a] - vocab[b]).norm(dim=-1).median())


def optimize_inputs(
    model: nn.Module,
    tokenizer,
    text: str,
    target: str,
    steps: int = 20,
    lr: float = 0.05,
    seed: int = 0,
    target_kind: str = "token",
) -> Optimization:
    """Adam (learning rate ``lr``) on the input embeddings of ``text`` for ``steps`` steps,
    toward ``target``: a token when ``target_kind="token"`` (cross-entropy), a prompt when
    ``target_kind="prompt"`` (KL to its next-token distribution). Special tokens are frozen.
    ``seed`` seeds torch and the sample of ``typical_distance``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    torch.manual_seed(seed)
    ids = _ids(tokenizer, text)
    position = _position(model, tokenizer, ids, "text")
    device = model_device(model)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    is_special = torch.tensor([i in special for i in ids], device=device)
    vocab = _vocab(model, tokenizer)
    vocab_unit = F.normalize(vocab, dim=-1)
    losses: list[float] = []
    distances: list[torch.Tensor] = []
    nearest_ids: list[list[int]] = []
    with frozen(model):
        goal = _Target(model, tokenizer, target_kind, target)
        with torch.no_grad():
            start = model.get_input_embeddings()(torch.tensor([ids], device=device))
        e = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([e], lr=lr)
        keep = is_special[None, :, None]
        for step in range(steps + 1):
            with torch.no_grad():
                cur = e[0].float()
                distances.append((cur - start[0].float()).norm(dim=-1))
                nearest_ids.append(_topk_cosine(cur, vocab_unit, 1)[:, 0].tolist())
            with torch.enable_grad():
                loss = goal(_logits_at(model, e, position))
                losses.append(float(loss.detach()))
                if step == steps:
                    break
                opt.zero_grad(set_to_none=False)
                loss.backward()
            e.grad.masked_fill_(keep, 0.0)
            opt.step()
            with torch.no_grad():  # exactly: Adam's update of a zero gradient is zero anyway
                e.copy_(torch.where(keep, start, e))
    return Optimization(
        tokens=tuple(decode_each(tokenizer, ids)),
        target=target,
        target_kind=target_kind,
        lr=lr,
        loss=np.array(losses, dtype=np.float64),
        distance=torch.stack(distances).cpu().numpy().astype(np.float64),
        nearest=tuple(tuple(decode_each(tokenizer, row)) for row in nearest_ids),
        frozen=is_special.cpu().numpy(),
        typical_distance=typical_distance(model, tokenizer, seed=seed),
    )
