"""Per-example component gradients in compact exact form, and their dot products.

A linear layer ``y_t = W x_t`` over ``n`` tokens has ``dL/dW = sum_t d_t x_t^T = D^T X``
(rank <= n, the Backward Lens lemma). So a component's gradient is kept as whichever is
smaller: the dense matrix (P_c floats) or the factors ``X[m, d_in]``, ``D[m, d_out]``
(m * (d_in + d_out) floats). Embedding lookups give sparse rows ``(ids[m], E[m, d])``.
Every dot product between two such forms is computed without materialising the dense
gradient, e.g. ``<Da^T Xa, Db^T Xb> = sum((Xa Xb^T) * (Da Db^T))``.
Matmuls run in float32 (the gradients' precision); the final reductions in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


class _Stored:
    """A gradient held as the tensors of its dataclass fields."""

    @property
    def numel(self) -> int:
        """Scalars held by all of the term's tensors."""
        return sum(t.numel() for t in vars(self).values())


@dataclass(frozen=True)
class Dense(_Stored):
    """A dense gradient matrix g[rows, cols]."""

    g: torch.Tensor


@dataclass(frozen=True)
class Factored(_Stored):
    """g = d^T x with x[m, d_in], d[m, d_out] (one row per token that carries gradient)."""

    x: torch.Tensor
    d: torch.Tensor


@dataclass(frozen=True)
class Sparse(_Stored):
    """Embedding-lookup gradient: row ``ids[t]`` of g[V, d] receives ``e[t]``; ids[m], e[m, d]."""

    ids: torch.Tensor
    e: torch.Tensor


Term = Dense | Factored | Sparse


def _sum64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64).sum()


def term_dot(a: Term, b: Term, grams: dict | None = None) -> torch.Tensor:
    """<a, b> (Frobenius) as a float64 scalar tensor; a and b belong to the same component.

    ``grams`` memoises ``x_a x_b^T`` by tensor identity, for components that share inputs.
    """
    if isinstance(a, Dense) and isinstance(b, Dense):
        return torch.dot(a.g.reshape(-1).double(), b.g.reshape(-1).double())
    if isinstance(a, Factored) and isinstance(b, Factored):
        if grams is None:
            gram = (a.x @ b.x.T).double()
        else:
            key = (id(a.x), id(b.x))
            if key not in grams:
                grams[key] = (a.x @ b.x.T).double()
            gram = grams[key]
        return _sum64(gram * (a.d @ b.d.T).double())
    if isinstance(a, Sparse) and isinstance(b, Sparse):
        same_row = a.ids[:, None] == b.ids[None, :]
        return _sum64((a.e @ b.e.T).double() * same_row)
    if isinstance(b, Dense):
        a, b = b, a
    if isinstance(a, Dense):
        if isinstance(b, Factored):
            # sum_s d_s^T G x_s
            return _sum64((b.d @ a.g).double() * b.x.double())
        return _sum64(a.g[b.ids].double() * b.e.double())
    if isinstance(a, Factored):
        a, b = b, a
    # a Sparse (rows ids of V), b Factored with d[m, V], x[m, d]:
    # sum_t e_t . (sum_s d[s, ids_t] x_s)
    return _sum64((a.e @ b.x.T).double() * b.d[:, a.ids].T.double())


def densify(
    terms: tuple[Term, ...], shape: tuple[int, int], out: torch.Tensor | None = None
) -> torch.Tensor:
    """The dense gradient g[shape] (float32) that ``terms`` add up to.

    Dense and factored terms are oriented [out, in] (GPT-2's Conv1D stores its weight
    transposed; only the element order differs, which no dot product sees). ``out`` (float32,
    ``shape``, overwritten) is a scratch buffer to build into: a fresh ~100 MB tensor per call
    costs page faults that can double the matmul's time. The terms are never modified; with a
    single dense term its own tensor is returned (read-only use).
    """
    terms = tuple(sorted(terms, key=lambda t: isinstance(t, Sparse)))
    if not terms:
        raise ValueError("densify needs at least one term")
    first = terms[0]
    if isinstance(first, Dense) and len(terms) == 1:
        return first.g.reshape(shape)
    ref = (
        first.g if isinstance(first, Dense) else first.x if isinstance(first, Factored) else first.e
    )
    g = (out if out is not None else torch.empty(shape, dtype=ref.dtype, device=ref.device)).view(
        shape
    )
    if isinstance(first, Dense):
        g.copy_(first.g.reshape(shape))
    elif isinstance(first, Factored):  # the matmul writes straight into g
        torch.mm(first.d.T, first.x, out=g.view(first.d.shape[1], first.x.shape[1]))
    else:
        g.zero_()
    for i, t in enumerate(terms):
        if i == 0 and not isinstance(t, Sparse):
            continue
        if isinstance(t, Dense):
            g.add_(t.g.reshape(shape))
        elif isinstance(t, Factored):
            g.view(t.d.shape[1], t.x.shape[1]).addmm_(t.d.T, t.x)
        else:
            g.index_add_(0, t.ids, t.e)
    return g


@dataclass
class ExampleGrads:
    """Everything needed to take dot products with one example's gradient.

    comps[c]: the terms of component c (their sum is the gradient); sqnorms: float64[K];
    proj[method][c]: projected gradient p_c[d_c] (float32) for each projection method.
    """

    example_id: str
    n_tokens: int
    comps: list[tuple[Term, ...]]
    sqnorms: np.ndarray
    proj: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _flat: dict[str, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def set_projection(self, method: str, parts: Sequence[torch.Tensor]) -> None:
        """Store p_c for every component as views of one flat float32 vector (for
        ``projected_dots``: one vectorised product per pair instead of K small dots)."""
        sizes = [p.numel() for p in parts]
        flat = torch.cat([p.reshape(-1).float() for p in parts])
        self.proj[method] = list(flat.split(sizes))
        self._flat.pop(method, None)
        if flat.device.type == "cpu":  # shares memory with proj[method]
            self._flat[method] = (flat.numpy(), _starts(sizes))

    def drop_projection(self, method: str) -> None:
        """Forget ``method``'s projected gradient (one only an index keeps, once written)."""
        self.proj.pop(method, None)
        self._flat.pop(method, None)

    def proj_flat(self, method: str) -> tuple[np.ndarray, np.ndarray]:
        """(p float32 [sum d_c] on the CPU, start offsets int64 [K]) of ``proj[method]``."""
        if method not in self._flat:
            parts = self.proj[method]
            flat = torch.cat([p.reshape(-1) for p in parts]).float().cpu().numpy()
            self._flat[method] = (flat, _starts([p.numel() for p in parts]))
        return self._flat[method]

    @property
    def device(self) -> torch.device:
        """The device the gradient tensors live on."""
        for terms in self.comps:
            for t in terms:
                return next(iter(vars(t).values())).device
        return torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """Bytes held (tensors shared between components counted once)."""
        seen: set[int] = set()
        n = 0
        for terms in self.comps:
            for t in terms:
                for tensor in vars(t).values():
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        n += tensor.numel()
        n += sum(p.numel() for ps in self.proj.values() for p in ps)
        return 4 * n


def _starts(sizes: Sequence[int]) -> np.ndarray:
    """Start offsets int64[K] of K consecutive segments of the given sizes."""
    return np.cumsum([0, *sizes[:-1]], dtype=np.int64)


def component_dots(a: ExampleGrads, b: ExampleGrads) -> np.ndarray:
    """dot[c] = <g_c(a), g_c(b)> for every component; float64[K]."""
    grams: dict = {}
    out = torch.stack(
        [sum(term_dot(ta, tb, grams) for ta in ca for tb in cb) for ca, cb in zip(a.comps, b.comps)]
    )
    return out.cpu().numpy()


def projected_dots(a: ExampleGrads, b: ExampleGrads, method: str) -> np.ndarray:
    """dot[c] = <p_c(a), p_c(b)> of projected gradients, accumulated in float64; float64[K]."""
    pa, starts = a.proj_flat(method)
    pb, _ = b.proj_flat(method)
    return np.add.reduceat(np.multiply(pa, pb, dtype=np.float64), starts)


def projected_sqnorms(a: ExampleGrads, method: str) -> np.ndarray:
    """|p_c(a)|^2 for every component, accumulated in float64; float64[K]."""
    return projected_dots(a, a, method)


def query_dots(q: ExampleGrads, cands: list[ExampleGrads]) -> np.ndarray:
    """dot[j, c] = <g_c(q), g_c(cands[j])> for all candidates at once; float64[b, K].

    Where the query and every candidate hold component c as one factored term, the Gram
    matrices against all candidates come from one matmul each (``x_q [x_1; ...; x_b]^T``),
    which runs far closer to peak than b small ones; other forms fall back to ``term_dot``.
    Equal to ``component_dots(q, cands[j])`` up to float32 round-off in the matmuls.
    """
    b, k = len(cands), len(q.comps)
    out = torch.zeros((b, k), dtype=torch.float64, device=q.device)
    x_grams: dict = {}
    pair_grams: list[dict] = [{} for _ in cands]
    for c in range(k):
        qc = q.comps[c]
        cc = [cand.comps[c] for cand in cands]
        batched = (
            len(qc) == 1
            and isinstance(qc[0], Factored)
            and all(len(t) == 1 and isinstance(t[0], Factored) for t in cc)
        )
        if not batched:
            for j, terms in enumerate(cc):
                for ta in qc:
                    for tb in terms:
                        out[j, c] += term_dot(ta, tb, pair_grams[j])
            continue
        fq = qc[0]
        fc = [t[0] for t in cc]
        sizes = [f.x.shape[0] for f in fc]
        key = (id(fq.x),) + tuple(id(f.x) for f in fc)
        if key not in x_grams:
            x_grams[key] = (fq.x @ torch.cat([f.x for f in fc]).T).double()
        gram_d = (fq.d @ torch.cat([f.d for f in fc]).T).double()
        per_col = (x_grams[key] * gram_d).sum(0)  # [sum of candidate rows]
        out[:, c] = torch.stack([s.sum() for s in torch.split(per_col, sizes)])
    return out.cpu().numpy()
