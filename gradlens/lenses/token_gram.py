"""Dot products between per-token loss gradients, without forming any of them.

An example's loss is a sum of terms L_t, one per loss-bearing token (``pairs.token_losses``).
The gradient of L_t w.r.t. a linear layer's weight is ``g_t = Σ_s δ_{t,s} x_sᵀ`` over the
positions s, with x_s the layer's input (the same for every term) and ``δ_{t,s} = ∂L_t/∂y_s`` from
the backward pass of L_t alone; an embedding table's row ``ids_s`` receives δ_{t,s}. So for the
terms t and u of two examples (primes: the second one)

    <g_t, g'_u> = Σ_{s,r} (x_s·x'_r) (δ_{t,s}·δ'_{u,r})                 linear layer
    <g_t, g'_u> = Σ_{s,r} [ids_s = ids'_r] (δ_{t,s}·δ'_{u,r})          embedding
    <g_t, g'_u> = Σ_{s,r} δ_{t,s}[ids'_r] (x_s·δ'_{u,r})              tied output projection
                                                                     against the input lookup

summed over the components' module calls (T5's shared embedding is called by both stacks; a tied
output projection is the embedding's component). One backward pass per term gives every
δ_{t,s}; the rows where δ_{t,s} = 0 (positions after the token in a causal LM, the logits of every
other position) are dropped. Products are float32, the sums over positions and terms float64.
The terms' δ are kept up to a memory budget; past it the terms are taken in chunks (a chunk's
Gram with every later term, those recomputed one at a time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gradlens.models.loading import Component

#: Bytes of per-token δ rows held at once (``token_gram``'s chunks): SmolLM2's 2 × 32 tokens
#: after a 35-token prompt hold ~2.6 GB.
BUDGET_BYTES = 2 << 30


@dataclass(frozen=True)
class Call:
    """One call of a component's module in a forward pass.

    comp: the component's index; linear: False for an embedding lookup; inp: x[m, d_in]
    (float32, leading dimensions flattened) or ids[m]; out: the call's output (in the graph);
    padding: an embedding's ``padding_idx`` (its row gets no gradient, as in autograd)."""

    comp: int
    linear: bool
    inp: torch.Tensor
    out: torch.Tensor
    padding: int | None = None


#: One term's gradient: per call, (rows[k], δ[k, d_out]) of its non-zero rows, or None.
TermRows = list[tuple[torch.Tensor, torch.Tensor] | None]


def _module_components(model: nn.Module, components: Sequence[Component]) -> dict[str, int]:
    """Module name -> component index, for every module whose weight is a component's (a tied
    output projection, T5's stacks' ``embed_tokens`` sharing ``shared``)."""
    params = dict(model.named_parameters())
    comp_of = {id(params[c.params[0]]): i for i, c in enumerate(components)}
    index = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and id(weight) in comp_of:
            index[name] = comp_of[id(weight)]
    return index


@contextmanager
def recording(model: nn.Module, components: Sequence[Component]) -> Iterator[list[Call]]:
    """Record every call of the components' modules (with a gradient) into the yielded list."""
    calls: list[Call] = []
    modules = dict(model.named_modules())

    def hook_for(comp: int, linear: bool):
        def hook(module, args, output):
            if not output.requires_grad:
                return
            inp = args[0].detach()
            if linear:
                calls.append(Call(comp, True, inp.reshape(-1, inp.shape[-1]).float(), output))
            else:
                calls.append(Call(comp, False, inp.reshape(-1), output, module.padding_idx))

        return hook

    handles = [
        modules[name].register_forward_hook(
            hook_for(comp, not isinstance(modules[name], nn.Embedding))
        )
        for name, comp in _module_components(model, components).items()
    ]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def term_rows(loss: torch.Tensor, calls: Sequence[Call]) -> TermRows:
    """δ of one loss term at every call's output, non-zero rows only (one backward pass; the
    graph is kept)."""
    grads = torch.autograd.grad(loss, [c.out for c in calls], retain_graph=True, allow_unused=True)
    out: TermRows = []
    for call, g in zip(calls, grads):
        if g is None:
            out.append(None)
            continue
        g = g.detach().reshape(-1, g.shape[-1]).float()
        keep = g.abs().amax(-1) > 0
        if call.padding is not None:
            keep &= call.inp != call.padding
        rows = keep.nonzero().squeeze(1)
        out.append((rows, g[rows]) if len(rows) else None)
    return out


def _nbytes(term: TermRows) -> int:
    return sum(4 * p[1].numel() for p in term if p is not None)


def _values(c1: Call, rows1, d1, c2: Call, rows_u, d_u, gram) -> torch.Tensor:
    """<δ-row s of side 1, term u of side 2> summed over u's rows, for each row s: float[R1].
    ``gram()``: the Gram matrix of the two linear inputs, on the unique rows (lazy)."""
    if c1.linear and c2.linear:
        g, inv1, col = gram()
        y = g[:, col[rows_u]] @ d_u  # [U1, d_out]
        return (d1 * y[inv1]).sum(-1)
    if not c1.linear and not c2.linear:
        same = c1.inp[rows1][:, None] == c2.inp[rows_u][None, :]
        return ((d1 @ d_u.T) * same).sum(-1)
    if c1.linear:  # tied output projection (1) against the input lookup (2)
        xe = c1.inp[rows1] @ d_u.T
        return (d1[:, c2.inp[rows_u]] * xe).sum(-1)
    xe = d1 @ c2.inp[rows_u].T  # input lookup (1) against the tied output projection (2)
    return (xe * d_u[:, c1.inp[rows1]].T).sum(-1)


def _stacked(parts: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows [U], δ [T, U, d_out]) of the terms' δ rows on the union of their rows, zeros where
    a term has none; None when a term-by-row layout would hold more than 4× the rows kept (the
    logits' single row per term)."""
    kept = [p for p in parts if p is not None]
    rows, inverse = torch.unique(torch.cat([p[0] for p in kept]), return_inverse=True)
    if len(parts) * len(rows) > 4 * len(inverse):
        return None
    term = torch.cat([torch.full_like(p[0], t) for t, p in enumerate(parts) if p is not None])
    dense = kept[0][1].new_zeros(len(parts) * len(rows), kept[0][1].shape[1])
    dense[term * len(rows) + inverse] = torch.cat([p[1] for p in kept])
    return rows, dense.view(len(parts), len(rows), -1)


def _linear_gram(c1: Call, parts1: list, c2: Call, parts2: list) -> torch.Tensor | None:
    """Two linear calls whose terms share most rows: M[t, u] = Σ_s δ_{t,s}·(G δ'_u)_s with
    G = X₁X₂ᵀ, as two matmuls over the term-by-row layouts (None: ``_stacked`` declined)."""
    one, two = _stacked(parts1), _stacked(parts2)
    if one is None or two is None:
        return None
    (rows1, d1), (rows2, d2) = one, two
    y = (c1.inp[rows1] @ c2.inp[rows2].T) @ d2  # [T2, U1, d_out]
    return (d1.reshape(len(parts1), -1) @ y.reshape(len(parts2), -1).T).double()


def _call_gram(c1: Call, parts1: list, c2: Call, parts2: list) -> torch.Tensor:
    """<g_t, g'_u> restricted to one call on each side: float64 [len(parts1), len(parts2)]."""
    out = torch.zeros(len(parts1), len(parts2), dtype=torch.float64, device=c1.out.device)
    kept = [(t, p) for t, p in enumerate(parts1) if p is not None]
    if not kept or all(p is None for p in parts2):
        return out
    if c1.linear and c2.linear:
        block = _linear_gram(c1, parts1, c2, parts2)
        if block is not None:
            return block
    rows1 = torch.cat([p[0] for _, p in kept])
    d1 = torch.cat([p[1] for _, p in kept])
    term1 = torch.cat([torch.full_like(p[0], t) for t, p in kept])
    cache: list = []

    def gram():
        if not cache:
            u1, inv1 = torch.unique(rows1, return_inverse=True)
            rows2 = torch.unique(torch.cat([p[0] for p in parts2 if p is not None]))
            col = torch.zeros(c2.inp.shape[0], dtype=torch.long, device=rows2.device)
            col[rows2] = torch.arange(len(rows2), device=rows2.device)
            cache.append((c1.inp[u1] @ c2.inp[rows2].T, inv1, col))
        return cache[0]

    for u, part in enumerate(parts2):
        if part is not None:
            z = _values(c1, rows1, d1, c2, *part, gram).double()
            out[:, u].index_add_(0, term1, z)
    return out


def gram_block(
    calls1: Sequence[Call], terms1: Sequence[TermRows], calls2: Sequence[Call], terms2
) -> torch.Tensor:
    """<g_t, g'_u> over every component for the terms of one example (calls1, terms1) and of
    another or the same one (calls2, terms2): float64 [len(terms1), len(terms2)]."""
    out = torch.zeros(len(terms1), len(terms2), dtype=torch.float64)
    for i, c1 in enumerate(calls1):
        for j, c2 in enumerate(calls2):
            if c1.comp == c2.comp:
                block = _call_gram(c1, [t[i] for t in terms1], c2, [t[j] for t in terms2])
                out += block.cpu()
    return out


def token_gram(
    calls: Sequence[Sequence[Call]],
    losses: Sequence[torch.Tensor],
    budget: int = BUDGET_BYTES,
) -> np.ndarray:
    """The Gram matrix of the per-token gradients of several examples: float64 [T, T] over their
    terms in order (example 0's terms, then example 1's, ...). ``calls[i]``: example i's
    recorded calls (``recording``); ``losses[i]``: its loss terms, graph kept. Each term costs one
    backward pass, more when the terms' δ rows exceed ``budget`` bytes (module docstring)."""
    where = [(i, t) for i, terms in enumerate(losses) for t in range(len(terms))]
    total = len(where)
    gram = np.zeros((total, total))

    def rows_of(k: int) -> TermRows:
        i, t = where[k]
        return term_rows(losses[i][t], calls[i])

    def block(first: Sequence[int], held: list[TermRows], other: Sequence[int], rows) -> None:
        """gram[first, other] (and its transpose) from the held rows of ``first``."""
        for i in sorted({where[k][0] for k in first}):
            a = [n for n, k in enumerate(first) if where[k][0] == i]
            for j in sorted({where[k][0] for k in other}):
                if first is other and j < i:  # the transpose of a block already written
                    continue
                b = [n for n, k in enumerate(other) if where[k][0] == j]
                g = gram_block(calls[i], [held[n] for n in a], calls[j], [rows[n] for n in b])
                ia, ib = [first[n] for n in a], [other[n] for n in b]
                gram[np.ix_(ia, ib)] = g.numpy()
                gram[np.ix_(ib, ia)] = g.numpy().T

    start = 0
    while start < total:
        held, size, end = [], 0, start
        while end < total and (not held or size < budget):
            held.append(rows_of(end))
            size += _nbytes(held[-1])
            end += 1
        chunk = list(range(start, end))
        block(chunk, held, chunk, held)
        for k in range(end, total):
            block(chunk, held, [k], [rows_of(k)])
        start = end
    return gram
