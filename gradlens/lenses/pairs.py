"""Pair inspector: how two examples' loss gradients compare, component by component and token
by token.

The question behind it: why do "I like to eat <extra_id_0>" with targets "pizza" and "pizza."
have gradient cosine 0.46 in T5? For examples a and b with gradients g_a, g_b (the loss of
``gradlens.data.examples``: mean or sum over the loss-bearing tokens) ``compare_pair`` gives

- the full cosine ``<g_a, g_b> / (|g_a||g_b| + eps)`` and one cosine per component (2-D weight,
  ``gradlens.models.loading.discover_components``), with the per-component dots and squared norms;
- per loss-bearing token t of each example: its gradient g_t (the gradient of its term of the
  loss, the 1/n factor of the mean included, so ``sum_t g_t = g`` exactly), its *share*
  ``<g_t, g>/|g|^2`` of its example's gradient (shares sum to 1), the cosine of g_t with the
  *other* example's gradient, and its *contribution* ``<g_t, g_other>/(|g||g_other|)`` to the
  full cosine (contributions sum to the cosine). ``gap = share - contribution`` splits
  ``1 - cosine`` exactly over the tokens of either example: the token with the largest gap is
  the one that most makes the two gradients differ;
- the token matrix ``token_cosines`` [n_a × n_b]: the cosine between g_t of a and g_u of b for
  every pair of loss-bearing tokens (a token whose prefix is shared has the same g_t in both
  examples: cosine 1).

The mean and sum reductions give the same cosines (the 1/n factor scales a whole gradient, or
every g_t of an example alike). Per-token gradients take one backward pass per loss token (on
one retained forward graph) and are never formed: their dot products come from the factors of
each layer's gradient (``gradlens.lenses.token_gram``), so this suits up to ``MAX_SPLIT_TOKENS``
loss-bearing tokens per example; every dot product is accumulated in float64.

Tokenisation: decoder LMs as a run does it (``data.tokenize_example``: chat template, labels
-100 on the prompt) or, with ``chat_template=False``, the raw text prompt + response (no
template, no end token); encoder-decoder models (T5) read the prompt as the encoder input and
predict the response (labels; the tokenizer's end token appended), raw text. See
docs/design.md, "Per-example loss".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradlens.data.examples import IGNORE_INDEX, Example, tokenize_example
from gradlens.errors import DataError
from gradlens.lenses.backward import with_eos
from gradlens.lenses.token_gram import recording, token_gram
from gradlens.models.loading import Component, discover_components
from gradlens.models.surgery import frozen
from gradlens.models.tokens import decode_each
from gradlens.options import LOSS_ON, REDUCTIONS

#: Added to every cosine's denominator (as for the stored runs, docs/design.md).
EPS = 1e-12
#: Scalars per float32 block of a dot product (``_dot64``).
_BLOCK = 1 << 16
#: Loss-bearing tokens per example the per-token split takes (one backward pass each).
MAX_SPLIT_TOKENS = 32
#: A token pair whose gradients have at least this cosine reads as "identical".
IDENTICAL = 0.999


@dataclass(frozen=True)
class EncodedExample:
    """An example as the model reads it.

    input_ids[n]: the sequence of a decoder LM, or the encoder input of an encoder-decoder
    model; labels: HF-style targets (-100 = no loss), aligned with ``input_ids`` (shifted inside
    the loss) for decoder LMs, the decoder's targets for encoder-decoder models."""

    example: Example
    input_ids: torch.Tensor
    labels: torch.Tensor
    encoder_decoder: bool

    def loss_positions(self) -> np.ndarray:
        """Indices into ``labels`` of the loss-bearing tokens (a decoder LM's label 0 is never
        predicted)."""
        labels = self.labels.cpu().numpy()
        start = 0 if self.encoder_decoder else 1
        return start + np.flatnonzero(labels[start:] != IGNORE_INDEX)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def encode_example(
    tokenizer,
    example: Example,
    loss_on: str = "response",
    chat_template: bool = True,
    encoder_decoder: bool = False,
) -> EncodedExample:
    """Tokenise ``example`` for ``compare_pair`` (module docstring). For encoder-decoder models
    the decoder predicts the response only, so ``loss_on`` and ``chat_template`` do not apply.
    Raises DataError when no token bears the loss."""
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    if encoder_decoder:
        source = with_eos(tokenizer, _ids(tokenizer, example.prompt, True))
        target = with_eos(tokenizer, _ids(tokenizer, example.response, True))
        ids, labels = torch.tensor(source), torch.tensor(target)
    elif chat_template:
        ids, labels = tokenize_example(tokenizer, example, loss_on=loss_on)
    else:
        prompt = _ids(tokenizer, example.prompt, False)
        response = _ids(tokenizer, example.response, False)
        ids = torch.tensor(prompt + response, dtype=torch.long)
        labels = ids.clone()
        if loss_on == "response":
            labels[: len(prompt)] = IGNORE_INDEX
    enc = EncodedExample(example, ids.long(), labels.long(), encoder_decoder)
    if len(enc.loss_positions()) == 0:
        raise DataError(f"example '{example.id}': no token bears the loss")
    return enc


def token_losses(model: nn.Module, enc: EncodedExample, reduction: str = "mean") -> torch.Tensor:
    """The loss's terms [n_loss], one per loss-bearing token in ``loss_positions`` order: the
    token's cross-entropy, divided by n_loss for the mean reduction (so they sum to the loss of
    ``data.example_losses``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    device = next(model.parameters()).device
    ids = enc.input_ids[None].to(device)
    labels = enc.labels[None].to(device)
    pos = torch.as_tensor(enc.loss_positions(), device=device)
    if enc.encoder_decoder:
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            decoder_input_ids=decoder_ids,
            use_cache=False,
        ).logits[0]
        predicting = logits[pos]
    else:
        logits = model(input_ids=ids, use_cache=False).logits[0]
        predicting = logits[pos - 1]  # position t - 1 predicts label t
    losses = torch.nn.functional.cross_entropy(predicting.float(), labels[0, pos], reduction="none")
    return losses / len(pos) if reduction == "mean" else losses


@dataclass(frozen=True)
class TokenDecomposition:
    """The per-token split of one example's gradient g, against the other example's g_other.

    Arrays over the loss-bearing tokens: positions (index into the labels), token_ids, tokens
    (decoded text); own_dot ``<g_t, g>``, other_dot ``<g_t, g_other>``, sqnorm ``|g_t|^2``
    (float64). norm / other_norm: |g|, |g_other|."""

    positions: np.ndarray
    token_ids: np.ndarray
    tokens: tuple[str, ...]
    own_dot: np.ndarray
    other_dot: np.ndarray
    sqnorm: np.ndarray
    norm: float
    other_norm: float

    @property
    def share(self) -> np.ndarray:
        """<g_t, g>/|g|^2: the token's share of its example's gradient (sums to 1)."""
        return self.own_dot / (self.norm**2 + EPS)

    @property
    def cosine_other(self) -> np.ndarray:
        """cos(g_t, g_other)."""
        return self.other_dot / (np.sqrt(self.sqnorm) * self.other_norm + EPS)

    @property
    def contribution(self) -> np.ndarray:
        """<g_t, g_other>/(|g||g_other|): the token's part of the full cosine (sums to it)."""
        return self.other_dot / (self.norm * self.other_norm + EPS)

    @property
    def gap(self) -> np.ndarray:
        """share - contribution: the token's part of 1 - cosine (sums to it)."""
        return self.share - self.contribution

    def frame(self) -> pd.DataFrame:
        """One row per loss-bearing token: position, token_id, token, share, cosine_other,
        contribution, gap, grad_norm."""
        return pd.DataFrame(
            {
                "position": self.positions.astype(np.int64),
                "token_id": self.token_ids.astype(np.int64),
                "token": list(self.tokens),
                "share": self.share,
                "cosine_other": self.cosine_other,
                "contribution": self.contribution,
                "gap": self.gap,
                "grad_norm": np.sqrt(self.sqnorm),
            }
        )


@dataclass(frozen=True)
class PairComparison:
    """What ``compare_pair`` found for examples a and b.

    cosine: full-gradient cosine; component_cosine float64[K] (NaN where either gradient is
    zero), in ``components`` order; dots, sq_a, sq_b float64[K]: <g_a,c, g_b,c>, |g_a,c|^2,
    |g_b,c|^2; norms (|g_a|, |g_b|); losses (L_a, L_b); tokens: the decompositions of a and b
    (None when ``per_token=False``); the settings used; token_dots float64[n_a, n_b]:
    <g_t(a), g_u(b)> for every pair of loss-bearing tokens (None without the split)."""

    a: Example
    b: Example
    components: tuple[Component, ...]
    cosine: float
    component_cosine: np.ndarray
    dots: np.ndarray
    sq_a: np.ndarray
    sq_b: np.ndarray
    norms: tuple[float, float]
    losses: tuple[float, float]
    tokens: tuple[TokenDecomposition, TokenDecomposition] | None
    loss_on: str
    reduction: str
    chat_template: bool
    encoder_decoder: bool
    token_dots: np.ndarray | None = None

    @property
    def token_cosines(self) -> np.ndarray | None:
        """cos(g_t(a), g_u(b)) float64[n_a, n_b] over the loss-bearing tokens (rows: a's, in
        ``tokens[0]`` order; columns: b's), or None without the per-token split."""
        if self.tokens is None or self.token_dots is None:
            return None
        norm_a, norm_b = (np.sqrt(d.sqnorm) for d in self.tokens)
        return self.token_dots / (norm_a[:, None] * norm_b[None, :] + EPS)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def layers(self) -> list[int | None]:
        return [c.layer for c in self.components]

    @property
    def kinds(self) -> list[str]:
        return [c.kind for c in self.components]

    @property
    def n_params(self) -> np.ndarray:
        return np.array([c.n_params for c in self.components], dtype=np.int64)

    def component_cosines(self) -> pd.DataFrame:
        """The two gradients compared component by component, one row each: component, layer,
        kind, n_params, cosine, dot, sq_a, sq_b."""
        return pd.DataFrame(
            {
                "component": self.names,
                "layer": pd.array(self.layers, dtype="Int64"),
                "kind": self.kinds,
                "n_params": self.n_params,
                "cosine": self.component_cosine,
                "dot": self.dots,
                "sq_a": self.sq_a,
                "sq_b": self.sq_b,
            }
        )


def _dot64(x: torch.Tensor, y: torch.Tensor) -> float:
    """<x, y> of two flat float32 vectors as the engine takes them (docs/design.md): float32
    dot products over blocks of ``_BLOCK`` scalars, the blocks summed in float64 (on a 28M
    vector 10x faster than converting to float64, and within ~1e-10 of it relative to
    |x||y|)."""
    if x.numel() <= _BLOCK:
        return float(torch.dot(x.double(), y.double()))
    blocks = [torch.dot(u, v) for u, v in zip(x.split(_BLOCK), y.split(_BLOCK))]
    return float(torch.stack(blocks).double().sum())


def _flat_grads(loss: torch.Tensor, weights: Sequence[torch.Tensor], retain: bool) -> list:
    grads = torch.autograd.grad(loss, weights, retain_graph=retain, allow_unused=True)
    return [
        (g if g is not None else torch.zeros_like(w)).reshape(-1).float()
        for g, w in zip(grads, weights)
    ]


def _decompose(
    enc: EncodedExample,
    own: np.ndarray,
    other: np.ndarray,
    norms: tuple[float, float],
    tokenizer,
) -> TokenDecomposition:
    """One example's split from the token Gram matrices: ``own`` [n, n] <g_t, g_u> within the
    example, ``other`` [n, n_other] against the other example's tokens."""
    positions = enc.loss_positions()
    token_ids = enc.labels.cpu().numpy()[positions]
    tokens = tuple(decode_each(tokenizer, token_ids))
    return TokenDecomposition(
        positions,
        token_ids,
        tokens,
        own.sum(1),
        other.sum(1),
        np.diag(own).copy(),
        norms[0],
        norms[1],
    )


@contextmanager
def _no_recording(model: nn.Module, components: Sequence[Component]) -> Iterator[list]:
    """``recording``'s stand-in without the per-token split (no module output kept)."""
    yield []


def _check_split(enc: EncodedExample, label: str) -> None:
    n = len(enc.loss_positions())
    if n > MAX_SPLIT_TOKENS:
        raise DataError(
            f"example {label} has {n} loss-bearing tokens; the per-token split takes up to "
            f"{MAX_SPLIT_TOKENS}: shorten its response (or turn the split off)"
        )


def compare_pair(
    model: nn.Module,
    tokenizer,
    a: Example,
    b: Example,
    loss_on: str = "response",
    reduction: str = "mean",
    chat_template: bool = True,
    per_token: bool = True,
) -> PairComparison:
    """Compare the loss gradients of examples ``a`` and ``b`` (module docstring).

    model: a HF causal LM or encoder-decoder model (eval mode; its ``requires_grad`` flags are
    restored); loss_on: ``response`` or ``all``; reduction: ``mean`` or ``sum``; chat_template:
    False for raw text; per_token: also decompose each gradient by target token and fill the
    token matrix (one backward pass per loss-bearing token). Raises DataError for an example
    with no loss-bearing token, or, with ``per_token``, more than ``MAX_SPLIT_TOKENS``.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    components = tuple(discover_components(model))
    params = dict(model.named_parameters())
    weights = [params[c.params[0]] for c in components]
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    ea, eb = (
        encode_example(tokenizer, ex, loss_on, chat_template, encoder_decoder) for ex in (a, b)
    )
    if per_token:
        _check_split(ea, "A")
        _check_split(eb, "B")
    record = recording if per_token else _no_recording
    with frozen(model, keep=weights, eval_mode=False), torch.enable_grad():
        with record(model, components) as calls_a:
            la = token_losses(model, ea, reduction)
        with record(model, components) as calls_b:
            lb = token_losses(model, eb, reduction)
        ga = _flat_grads(la.sum(), weights, retain=per_token)
        gb = _flat_grads(lb.sum(), weights, retain=per_token)
        losses = (float(la.detach().sum()), float(lb.detach().sum()))
        dots = np.array([_dot64(x, y) for x, y in zip(ga, gb)])
        sq_a = np.array([_dot64(x, x) for x in ga])
        sq_b = np.array([_dot64(y, y) for y in gb])
        del ga, gb
        na, nb = math.sqrt(sq_a.sum()), math.sqrt(sq_b.sum())
        tokens = token_dots = None
        if per_token:
            gram = token_gram([calls_a, calls_b], [la, lb])
            n = len(la)
            token_dots = gram[:n, n:]
            tok_a = _decompose(ea, gram[:n, :n], token_dots, (na, nb), tokenizer)
            tok_b = _decompose(eb, gram[n:, n:], token_dots.T, (nb, na), tokenizer)
            tokens = (tok_a, tok_b)
        del calls_a, calls_b
    with np.errstate(divide="ignore", invalid="ignore"):
        comp_cos = np.where((sq_a > 0) & (sq_b > 0), dots / (np.sqrt(sq_a * sq_b) + EPS), np.nan)
    return PairComparison(
        a=a,
        b=b,
        components=components,
        cosine=float(dots.sum() / (na * nb + EPS)),
        component_cosine=comp_cos,
        dots=dots,
        sq_a=sq_a,
        sq_b=sq_b,
        norms=(na, nb),
        losses=losses,
        tokens=tokens,
        loss_on=loss_on,
        reduction=reduction,
        chat_template=chat_template,
        encoder_decoder=encoder_decoder,
        token_dots=token_dots,
    )


@dataclass(frozen=True)
class DominantToken:
    """The loss-bearing token whose gradient most separates the pair: the largest part ``gap``
    of 1 - cosine over the tokens of both examples. example: 0 (a) or 1 (b); row: its index in
    that example's TokenDecomposition."""

    example: int
    row: int
    position: int
    token: str
    share: float
    cosine_other: float
    gap: float


def dominant_token(cmp: PairComparison, side: int | None = None) -> DominantToken | None:
    """The token with the largest ``gap`` over both examples (``side`` 0 or 1: over that
    example's tokens only; ties: a first, then the earlier token), or None without a per-token
    decomposition."""
    if cmp.tokens is None:
        return None
    best: DominantToken | None = None
    for example, tok in enumerate(cmp.tokens):
        if side is not None and example != side:
            continue
        for row, gap in enumerate(tok.gap):
            if best is None or gap > best.gap:
                best = DominantToken(
                    example,
                    row,
                    int(tok.positions[row]),
                    tok.tokens[row],
                    float(tok.share[row]),
                    float(tok.cosine_other[row]),
                    float(gap),
                )
    return best


def explain(cmp: PairComparison, labels: tuple[str, str] = ("A", "B")) -> str:
    """Plain text naming the token that dominates the difference, e.g. "B's '.' (position 5)
    dominates the difference: it carries 42 % of B's gradient and its gradient has cosine
    -0.10 with A's (its part of 1 − cosine = 0.273 is 0.491)." and, when the other example's
    own largest gap is a sizeable part of 1 − cosine (a fifth or more), a second sentence
    naming that token too. Token text is quoted with ``repr`` (whitespace visible); the caller
    escapes it for its medium."""
    gap = 1.0 - cmp.cosine
    if gap <= 1e-9:
        return f"The two gradients point the same way (cosine {cmp.cosine:.6f})."
    top = dominant_token(cmp)
    if top is None:
        return f"Cosine {cmp.cosine:.4f}; no per-token decomposition was computed."
    own, other = labels[top.example], labels[1 - top.example]
    text = (
        f"{own}'s {top.token!r} (position {top.position}) dominates the difference: it carries "
        f"{100 * top.share:.0f} % of {own}'s gradient and its gradient has cosine "
        f"{top.cosine_other:.2f} with {other}'s (its part of 1 − cosine = {gap:.3f} is "
        f"{top.gap:.3f})."
    )
    second = dominant_token(cmp, side=1 - top.example)
    if second is not None and second.gap >= 0.2 * gap:
        text += (
            f" In {other}, {second.token!r} (position {second.position}) separates most: "
            f"{100 * second.share:.0f} % of {other}'s gradient, cosine "
            f"{second.cosine_other:.2f} with {own}'s, part {second.gap:.3f}."
        )
    return text


def _quoted(tokens: Sequence[str], idx: Sequence[int], label: str) -> str:
    return ", ".join(f"{label}'s {tokens[i]!r}" for i in idx)


def token_reading(cmp: PairComparison, labels: tuple[str, str] = ("A", "B")) -> str:
    """One sentence read off the token matrix: which tokens of a and b have identical gradients
    (cosine ≥ ``IDENTICAL``, e.g. a shared prefix), which token carries the gap (the largest part
    of 1 − cosine, ``dominant_token``) and its best match in the other example, and which other
    tokens match nothing. Token text is quoted with ``repr``; the caller escapes it."""
    cos = cmp.token_cosines
    if cos is None:
        return "The per-token split was not computed, so there is no token matrix."
    la, lb = labels
    tok_a, tok_b = (d.tokens for d in cmp.tokens)
    rows, cols = np.nonzero(cos >= IDENTICAL)
    if len(rows):
        pairs = [f"{la}'s {tok_a[t]!r} = {lb}'s {tok_b[u]!r}" for t, u in zip(rows, cols)]
        shown = ", ".join(pairs[:4]) + (f" and {len(pairs) - 4} more" if len(pairs) > 4 else "")
        text = f"{shown}: identical gradients (cosine ≥ {IDENTICAL})"
    else:
        text = f"No token of {la} has the gradient of a token of {lb} (every cosine < {IDENTICAL})"
    alone_a = [t for t in range(len(tok_a)) if cos[t].max() < IDENTICAL]
    alone_b = [u for u in range(len(tok_b)) if cos[:, u].max() < IDENTICAL]
    if not alone_a and not alone_b:
        agree = f"the whole gradients agree (cosine {cmp.cosine:.4f})"
        return f"{text}; every token has its twin, and {agree}."
    top = dominant_token(cmp)
    own, other = (la, lb) if top.example == 0 else (lb, la)
    line = cos[top.row] if top.example == 0 else cos[:, top.row]
    best = int(np.argmax(line))
    best_tok = (tok_b if top.example == 0 else tok_a)[best]
    text += (
        f"; the gap (1 − cosine = {1 - cmp.cosine:.3f}) is carried most by {own}'s {top.token!r} "
        f"(position {top.position}, part {top.gap:.3f}), whose gradient has cosine at most "
        f"{line[best]:+.3f} with {other}'s tokens ({other}'s {best_tok!r})"
    )
    rest_a = [t for t in alone_a if not (top.example == 0 and t == top.row)]
    rest_b = [u for u in alone_b if not (top.example == 1 and u == top.row)]
    if rest_a or rest_b:
        rest = ", ".join(
            part for part in (_quoted(tok_a, rest_a, la), _quoted(tok_b, rest_b, lb)) if part
        )
        text += f"; no twin either: {rest}"
    return text + "."
