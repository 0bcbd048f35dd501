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

Causal LMs (``…ForCausalLM``), masked LMs (``…ForMaskedLM``, BERT style) and T5-style
encoder-decoder models are supported. T5 reads the text in its encoder (its end token appended,
frozen as a special token) and predicts at the decoder's first position (after its start token):
the embeddings are the encoder's input.

Optimising the embeddings (``optimize_inputs``; the batch of random sentences in
``gradlens.lenses.embedding_batch``) runs Adam or plain SGD. What sets the distance travelled
differs: Adam's first step is ``lr · m̂/(√v̂ + ε) = lr · g/(|g| + ε)`` per coordinate, so it
moves every free token by lr·√d whatever its gradient (and each later step by at most about lr
per coordinate): distance is set by lr × steps. SGD moves a token by lr·‖g‖: distance follows
the gradient. ``Moves`` reads where each token went: its nearest vocabulary tokens by cosine
and by Euclidean distance before and after, the *heading* ``argmax_v cos(e_end − e_start,
e_v − e_start)`` (the token it moved towards) with that cosine, and ``cos(g, e_start)`` of the
first gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradlens.errors import GradLensError
from gradlens.lenses.backward import decoder_inputs, is_encoder_decoder, t5_decoder, with_eos
from gradlens.models.surgery import frozen, last_logits_kwargs, model_device
from gradlens.models.tokens import decode_each

TARGET_KINDS = ("token", "prompt")
OPTIMIZERS = ("adam", "sgd")


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
class Moves:
    """Where N optimised embeddings went, read in the vocabulary (float arrays [N]; token
    tuples of N decoded tokens).

    distance: ‖e_end − e_start‖; first_step: ‖e_1 − e_start‖ after the first step;
    start_cosine / end_cosine: the vocabulary token nearest by cosine to e_start / e_end;
    start_euclid / end_euclid: the nearest by L2 distance; heading: argmax_v cos(e_end −
    e_start, e_v − e_start) (the token the displacement points at; the start's own token
    excluded), heading_cosine: that cosine (NaN, heading "", for a token that did not move);
    grad_cosine: cos(g, e_start) of the first gradient g (NaN where g = 0)."""

    distance: np.ndarray
    first_step: np.ndarray
    start_cosine: tuple[str, ...]
    end_cosine: tuple[str, ...]
    start_euclid: tuple[str, ...]
    end_euclid: tuple[str, ...]
    heading: tuple[str, ...]
    heading_cosine: np.ndarray
    grad_cosine: np.ndarray

    def frame(self) -> pd.DataFrame:
        """One row per embedding, the fields as columns."""
        return pd.DataFrame({name: list(getattr(self, name)) for name in MOVE_COLUMNS})


MOVE_COLUMNS = (
    "distance",
    "first_step",
    "start_cosine",
    "end_cosine",
    "start_euclid",
    "end_euclid",
    "heading",
    "heading_cosine",
    "grad_cosine",
)


@dataclass(frozen=True)
class Optimization:
    """Adam or SGD on the input embeddings toward a target, state after each step s = 0..steps.

    loss [steps+1]: the loss at step s (s = 0: the original text); distance [steps+1, n]: each
    token's L2 distance from its starting embedding; nearest [steps+1][n]: the vocabulary token
    whose embedding has the highest cosine with the current one; frozen [n]: special tokens,
    never moved; typical_distance: median L2 distance between random pairs of vocabulary
    embeddings (the scale to read ``distance`` against); optimizer: ``adam`` or ``sgd``;
    moves: where each token went (``Moves``, n rows); dim: the embedding size d.
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
    optimizer: str = "adam"
    moves: Moves | None = None
    dim: int = 0

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


def _ids(model, tokenizer, text: str) -> list[int]:
    """The text's ids (an encoder-decoder model's encoder input ends with the end token)."""
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise GradLensError("the text is empty (no tokens)")
    return with_eos(tokenizer, ids) if is_encoder_decoder(model) else ids


def _position(model, tokenizer, ids: list[int], what: str) -> int:
    """Where the prediction is read: the last position, the first mask of a masked LM, the
    decoder's first position of an encoder-decoder model."""
    if is_encoder_decoder(model):
        t5_decoder(model)  # other encoder-decoder families are refused
        return 0
    if not is_masked_lm(model):
        return len(ids) - 1
    mask = getattr(tokenizer, "mask_token_id", None)
    if mask is None or mask not in ids:
        token = getattr(tokenizer, "mask_token", None) or "[MASK]"
        raise GradLensError(f"a masked LM needs a {token} token in the {what}")
    return ids.index(mask)


def vocabulary(model, tokenizer) -> torch.Tensor:
    """The input embedding matrix, cut to the tokenizer's vocabulary (padding rows dropped)."""
    weight = model.get_input_embeddings().weight.detach()
    return weight[: min(weight.shape[0], len(tokenizer))].float()


def _logits_at(model, embeds: torch.Tensor, position: int) -> torch.Tensor:
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    if is_encoder_decoder(model):  # one label: the decoder reads its start token only
        start = decoder_inputs(model, [0])
        out = model(
            inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=start, use_cache=False
        )
        return out.logits[0, position].float()
    if position == embeds.shape[1] - 1 and not is_masked_lm(model):
        kwargs = {"use_cache": False, **last_logits_kwargs(model)}
        out = model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        return out.logits[0, -1].float()
    out = model(inputs_embeds=embeds, attention_mask=mask)
    return out.logits[0, position].float()


class Target:
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
            ids = _ids(model, tokenizer, target)
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


def _nearest_euclid(vectors: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """Indices [n] of the vocabulary rows nearest to each vector in L2 distance."""
    sq = (vocab * vocab).sum(-1)
    return (sq[None, :] - 2 * vectors @ vocab.T).argmin(-1)  # ‖v‖² − 2 v·x (+ ‖x‖², constant)


def towards(
    vocab: torch.Tensor,
    starts: torch.Tensor,
    directions: torch.Tensor,
    k: int = 1,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vocabulary tokens v whose displacement e_v − s_i points most like ``directions[i]``:
    (indices [n, k], cosines [n, k]) of the k largest cos(d_i, e_v − s_i). Tokens at the start
    itself (e_v = s_i) and ``exclude[i]`` (a token id per row, e.g. the start's own token) are
    left out; a zero direction has cosine NaN. Vectorised as (E·d − s·d) / (‖E − s‖ ‖d‖) with
    ‖E − s‖² = ‖E‖² − 2 E·s + ‖s‖²."""
    sq = (vocab * vocab).sum(-1)
    start_sq = (starts * starts).sum(-1, keepdim=True)
    dist_sq = (sq[None, :] - 2 * starts @ vocab.T + start_sq).clamp_min(0)
    along = directions @ vocab.T - (starts * directions).sum(-1, keepdim=True)
    cos = along / (dist_sq.sqrt() * directions.norm(dim=-1, keepdim=True))
    cos = torch.where(dist_sq > 1e-10 * (sq[None, :] + start_sq), cos, -torch.inf)
    if exclude is not None:
        cos[torch.arange(len(cos)), exclude] = -torch.inf
    top = cos.nan_to_num(nan=-torch.inf).topk(k, dim=-1)
    zero = directions.norm(dim=-1, keepdim=True) == 0
    return top.indices, torch.where(zero, torch.nan, top.values)


def read_moves(
    tokenizer,
    vocab: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    first: torch.Tensor,
    grad: torch.Tensor,
    own: torch.Tensor | None = None,
) -> Moves:
    """``Moves`` of n embeddings (float32 [n, d] each: ``start``, ``end``, ``first`` after one
    step, ``grad`` the first gradient); ``own`` [n]: the start's own token ids, if any (left
    out of the heading)."""
    move = end - start
    heading, heading_cos = towards(vocab, start, move, 1, own)
    moved = move.norm(dim=-1) > 0
    unit = F.normalize(vocab, dim=-1)
    grad_cos = (grad * start).sum(-1) / (grad.norm(dim=-1) * start.norm(dim=-1))

    def names(ids: torch.Tensor) -> tuple[str, ...]:
        return tuple(decode_each(tokenizer, ids.tolist()))

    def arr(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().double().numpy()

    return Moves(
        distance=arr(move.norm(dim=-1)),
        first_step=arr((first - start).norm(dim=-1)),
        start_cosine=names(_topk_cosine(start, unit, 1)[:, 0]),
        end_cosine=names(_topk_cosine(end, unit, 1)[:, 0]),
        start_euclid=names(_nearest_euclid(start, vocab)),
        end_euclid=names(_nearest_euclid(end, vocab)),
        heading=tuple(h if m else "" for h, m in zip(names(heading[:, 0]), moved.tolist())),
        heading_cosine=np.where(moved.cpu().numpy(), arr(heading_cos[:, 0]), np.nan),
        grad_cosine=arr(grad_cos),
    )


def make_optimizer(name: str, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam (torch's defaults but ``lr``) or plain SGD (no momentum)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


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
    ids = _ids(model, tokenizer, text)
    position = _position(model, tokenizer, ids, "text")
    device = model_device(model)
    with frozen(model):
        goal = Target(model, tokenizer, kind, target)
        emb = model.get_input_embeddings()
        with torch.no_grad():
            start = emb(torch.tensor([ids], device=device))
        e = start.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = goal(_logits_at(model, e, position))
            (grad,) = torch.autograd.grad(loss, e)
    g = grad[0].float()  # [n, d]
    vocab = vocabulary(model, tokenizer)
    vocab_unit = F.normalize(vocab, dim=-1)
    k = min(top_k, vocab.shape[0] - 1)
    nearest = _topk_cosine(-g, vocab_unit, k)
    own = torch.tensor(ids, device=vocab.device)
    dirs, _ = towards(vocab, start[0].float(), -g, k, exclude=own)
    return InputGradients(
        tokens=tuple(decode_each(tokenizer, ids)),
        target=target,
        target_kind=kind,
        position=position,
        loss=float(loss.detach()),
        grad_norm=g.norm(dim=-1).cpu().numpy().astype(np.float64),
        nearest=tuple(tuple(decode_each(tokenizer, row)) for row in nearest.tolist()),
        nearest_direction=tuple(tuple(decode_each(tokenizer, row)) for row in dirs.tolist()),
    )


def typical_distance(model: nn.Module, tokenizer, pairs: int = 4096, seed: int = 0) -> float:
    """Median L2 distance between ``pairs`` random pairs of distinct vocabulary embeddings."""
    vocab = vocabulary(model, tokenizer)
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
    optimizer: str = "adam",
) -> Optimization:
    """``optimizer`` (``adam`` or ``sgd``, learning rate ``lr``) on the input embeddings of
    ``text`` for ``steps`` steps, toward ``target``: a token when ``target_kind="token"``
    (cross-entropy), a prompt when ``target_kind="prompt"`` (KL to its next-token
    distribution). Special tokens are frozen. ``seed`` seeds torch and the sample of
    ``typical_distance``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    torch.manual_seed(seed)
    ids = _ids(model, tokenizer, text)
    position = _position(model, tokenizer, ids, "text")
    device = model_device(model)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    is_special = torch.tensor([i in special for i in ids], device=device)
    vocab = vocabulary(model, tokenizer)
    vocab_unit = F.normalize(vocab, dim=-1)
    losses: list[float] = []
    states: list[torch.Tensor] = []
    with frozen(model):
        goal = Target(model, tokenizer, target_kind, target)
        with torch.no_grad():
            start = model.get_input_embeddings()(torch.tensor([ids], device=device))
        e = start.clone().requires_grad_(True)
        opt = make_optimizer(optimizer, [e], lr)
        keep = is_special[None, :, None]
        grad0 = torch.zeros_like(e)
        for step in range(steps + 1):
            states.append(e.detach()[0].float().clone())
            with torch.enable_grad():
                loss = goal(_logits_at(model, e, position))
                losses.append(float(loss.detach()))
                if step == steps:
                    break
                opt.zero_grad(set_to_none=False)
                loss.backward()
            e.grad.masked_fill_(keep, 0.0)
            if step == 0:
                grad0 = e.grad.detach().clone()
            opt.step()
            with torch.no_grad():  # exactly: a zero gradient's update is zero anyway
                e.copy_(torch.where(keep, start, e))
    path = torch.stack(states)  # [steps+1, n, d]
    first = path[min(1, steps)]
    return Optimization(
        tokens=tuple(decode_each(tokenizer, ids)),
        target=target,
        target_kind=target_kind,
        lr=lr,
        loss=np.array(losses, dtype=np.float64),
        distance=(path - path[0]).norm(dim=-1).cpu().numpy().astype(np.float64),
        nearest=tuple(
            tuple(decode_each(tokenizer, _topk_cosine(x, vocab_unit, 1)[:, 0].tolist()))
            for x in path
        ),
        frozen=is_special.cpu().numpy(),
        typical_distance=typical_distance(model, tokenizer, seed=seed),
        optimizer=optimizer,
        dim=int(vocab.shape[1]),
        moves=read_moves(
            tokenizer,
            vocab,
            path[0],
            path[-1],
            first,
            grad0[0].float(),
            own=torch.tensor(ids, device=vocab.device),
        ),
    )
