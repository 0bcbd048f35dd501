"""Gradient engine: one forward+backward per example, per-component gradients captured by hooks.

With every weight frozen, the backward pass computes only activation gradients; forward hooks
record each linear layer's inputs ``X`` and a tensor hook its output gradients ``D``, so the
weight gradient ``D^T X`` is known exactly without being formed (see ``gradlens.engine.terms``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from gradlens.data.examples import IGNORE_INDEX, Tokenized, example_losses
from gradlens.engine.terms import Dense, ExampleGrads, Factored, Sparse, Term, densify, term_dot
from gradlens.models.loading import Component
from gradlens.models.surgery import frozen
from gradlens.options import REDUCTIONS

ProjectorFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ProjectionSet:
    """One projection method: ``project[c](g_c.flatten()) -> p_c[d_c]`` for each component,
    on the dense gradient. Methods that can work on the compact forms (``kron``) also give
    ``factored[c]``, with ``project_factored(d, x)``, ``project_rows(ids, e)`` and
    ``project(flat)`` for g oriented [out, in]; the engine then never forms g."""

    method: str
    project: Sequence[ProjectorFn]
    factored: Sequence | None = None


class GradientEngine:
    """Computes :class:`ExampleGrads` for batches of tokenized examples.

    model: a HF causal LM (eval mode); components: from ``discover_components``.
    reduction: ``mean`` (default, mean token loss) or ``sum``. ``projections``: the methods
    whose dots the job stores; ``index_projections``: further ones only an index keeps (their
    vectors land in ``ExampleGrads.proj`` too). ``warm_up``: see ``compute``. Hooks stay
    registered until :meth:`close` (or the ``with`` block ends), which also restores
    ``requires_grad``.
    """

    def __init__(
        self,
        model: nn.Module,
        components: Sequence[Component],
        reduction: str = "mean",
        projections: Sequence[ProjectionSet] = (),
        index_projections: Sequence[ProjectionSet] = (),
        warm_up: bool = True,
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.model = model
        self.components = list(components)
        self.reduction = reduction
        self.projections = list(projections)
        self.index_projections = list(index_projections)
        self.device = next(model.parameters()).device
        self.passes = 0
        self._warm = not warm_up
        self.projection_seconds: dict[str, float] = {
            p.method: 0.0 for p in self.projections + self.index_projections
        }
        self._scratch: dict[tuple[int, ...], torch.Tensor] = {}
        modules = dict(model.named_modules())
        input_emb = model.get_input_embeddings()
        output_emb = model.get_output_embeddings()
        # nn.Linear and nn.Embedding store their weight [out, in], as the terms are oriented
        self._transposed = [
            not isinstance(modules[c.module], (nn.Linear, nn.Embedding)) for c in self.components
        ]
        self._idx_of_module: dict[str, int] = {}
        for idx, comp in enumerate(self.components):
            self._idx_of_module[comp.module] = idx
        embed_idx = next((i for i, c in enumerate(self.components) if c.kind == "embed"), None)
        # A tied output projection shares the embedding's weight: its gradient joins `embed`.
        if output_emb is not None and embed_idx is not None:
            if output_emb.weight is input_emb.weight:
                for name, mod in modules.items():
                    if mod is output_emb:
                        self._idx_of_module[name] = embed_idx
        self._captured: dict[int, list] = {}
        self._handles = []
        self._frozen = ExitStack()  # every weight frozen until close()
        self._frozen.enter_context(frozen(model, eval_mode=False))
        for name, idx in self._idx_of_module.items():
            mod = modules[name]
            if isinstance(mod, nn.Embedding):
                self._handles.append(mod.register_forward_hook(self._embedding_hook(idx)))
            else:
                self._handles.append(mod.register_forward_hook(self._linear_hook(idx)))
        if not any(modules[name] is input_emb for name in self._idx_of_module):
            # No component reads the token ids (a LoRA adapter's matrices only): with every
            # weight frozen, nothing above the embedding would need a gradient without this.
            self._handles.append(input_emb.register_forward_hook(_needs_grad))

    # -- hooks -------------------------------------------------------------------------------
    def _linear_hook(self, idx: int):
        def hook(module, args, output):
            if not output.requires_grad:  # e.g. under torch.no_grad(): nothing to capture
                return
            x = args[0].detach()
            entry = {"type": "linear", "x": x, "d": None}
            self._captured.setdefault(idx, []).append(entry)

            def save_grad(grad):
                entry["d"] = grad.detach()

            output.register_hook(save_grad)

        return hook

    def _embedding_hook(self, idx: int):
        def hook(module, args, output):
            if not torch.is_grad_enabled():
                return
            out = output.detach().requires_grad_(True)
            # nn.Embedding leaves the row of padding_idx without gradient (as autograd does).
            entry = {
                "type": "embedding",
                "ids": args[0].detach(),
                "d": None,
                "padding_idx": module.padding_idx,
            }
            self._captured.setdefault(idx, []).append(entry)

            def save_grad(grad):
                entry["d"] = grad.detach()

            out.register_hook(save_grad)
            return out

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._frozen.close()

    def __enter__(self) -> GradientEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- compute -----------------------------------------------------------------------------
    def compute(self, batch: Sequence[Tokenized]) -> list[ExampleGrads]:
        """One forward+backward over ``batch`` (right-padded); per-example exact gradients.

        The first call of an engine (``warm_up``) first computes its first example once and
        discards it (not counted in ``passes``): measured on CPU, an example computed first in
        a process can differ in the last bit from the same example computed after any other,
        so without it a resumed job (which computes other examples first than the run it
        resumes) would not store bit for bit what an uninterrupted one does."""
        if not self._warm:
            self._warm = True
            # the whole computation, projections included: their buffers are part of the state
            self._run(batch[:1], project=True)
        self.passes += len(batch)
        return self._run(batch, project=True)

    def _run(self, batch: Sequence[Tokenized], project: bool) -> list[ExampleGrads]:
        n_max = max(t.n_tokens for t in batch)
        bsz = len(batch)
        ids = torch.zeros(bsz, n_max, dtype=torch.long)
        labels = torch.full((bsz, n_max), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros(bsz, n_max, dtype=torch.long)
        for i, t in enumerate(batch):
            ids[i, : t.n_tokens] = t.input_ids
            labels[i, : t.n_tokens] = t.labels
            mask[i, : t.n_tokens] = 1
        ids, labels, mask = ids.to(self.device), labels.to(self.device), mask.to(self.device)
        positions = torch.arange(n_max, device=self.device).expand(bsz, n_max)
        self._captured = {}
        try:
            with torch.enable_grad():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False
                ).logits
                example_losses(logits, labels, self.reduction).sum().backward()
            rows = [self._rows_with_gradient(t) for t in batch]
            return [self._collect(i, batch[i], rows[i], project) for i in range(bsz)]
        finally:
            self._captured = {}

    @staticmethod
    def _rows_with_gradient(tok: Tokenized) -> int:
        """Positions [0, m) can carry gradient: in a causal LM, position t only influences
        outputs at positions >= t, so every position after the last one whose logits enter the
        loss (label at t + 1) gets exactly zero gradient in every layer and is dropped."""
        has_loss = (tok.labels[1:] != IGNORE_INDEX).nonzero()
        return int(has_loss[-1]) + 1 if len(has_loss) else 0

    def _collect(self, i: int, tok: Tokenized, m: int, project: bool = True) -> ExampleGrads:
        comps: list[tuple[Term, ...]] = []
        # q/k/v (and gate/up) read the same input: share one X tensor so that dot products
        # compute its Gram matrix once (see grads.component_dots).
        shared_x: dict[tuple, torch.Tensor] = {}
        for idx, comp in enumerate(self.components):
            terms = []
            for entry in self._captured.get(idx, []):
                d = entry["d"]
                if d is None or m == 0:  # this module's output did not reach the loss
                    continue
                d = d[i, :m].float()
                if entry["type"] == "linear":
                    xt = entry["x"]  # the same live tensor (not just the same address)
                    key = (xt.data_ptr(), tuple(xt.shape), xt.stride())
                    if key not in shared_x:
                        shared_x[key] = xt[i, :m].float().contiguous()
                    x = shared_x[key]
                    if m * (x.shape[1] + d.shape[1]) < comp.n_params:
                        terms.append(Factored(x, d.contiguous()))
                    else:
                        terms.append(Dense(d.T @ x))
                else:
                    ids = entry["ids"][i, :m]
                    if entry["padding_idx"] is not None:
                        keep = ids != entry["padding_idx"]
                        ids, d = ids[keep], d[keep]
                    terms.append(Sparse(ids.contiguous(), d.contiguous()))
            comps.append(self._compact(terms, comp))
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        grams: dict = {}
        sqnorms = torch.stack(
            [sum((term_dot(a, b, grams) for a in t for b in t), zero) for t in comps]
        )
        del grams
        grads = ExampleGrads(tok.example.id, tok.n_tokens, comps, sqnorms.cpu().numpy())
        for ps in self.projections + self.index_projections if project else ():
            t0 = time.perf_counter()
            if ps.factored is not None:
                parts = [_sketch_terms(ps.factored[c], terms) for c, terms in enumerate(comps)]
            else:
                parts = [
                    ps.project[c](self._dense(terms, comp).reshape(-1))
                    for c, (terms, comp) in enumerate(zip(comps, self.components))
                ]
            grads.set_projection(ps.method, parts)
            self.projection_seconds[ps.method] += time.perf_counter() - t0
        return grads

    def dense_gradient(self, grads: ExampleGrads, c: int) -> torch.Tensor:
        """Component c's gradient of ``grads`` in its parameter's own layout (float32, a new
        tensor; GPT-2's Conv1D weights are [in, out] where the terms are [out, in])."""
        comp = self.components[c]
        shape = tuple(reversed(comp.shape)) if self._transposed[c] else tuple(comp.shape)
        terms = grads.comps[c]
        g = densify(terms, shape).clone() if terms else torch.zeros(shape, device=self.device)
        return g.T.contiguous() if self._transposed[c] else g

    def _dense(self, terms: tuple[Term, ...], comp: Component) -> torch.Tensor:
        """comp's dense gradient for projecting, built in a scratch buffer reused per shape:
        valid until the next call for the same shape."""
        if not terms:
            return torch.zeros(comp.shape, device=self.device)
        scratch = self._scratch.get(comp.shape)
        if scratch is None:
            scratch = self._scratch[comp.shape] = torch.empty(comp.shape, device=self.device)
        return densify(terms, comp.shape, out=scratch)

    def _compact(self, terms: list[Term], comp: Component) -> tuple[Term, ...]:
        """Merge to one dense matrix when the terms together are larger than it."""
        if len(terms) > 1 and sum(t.numel for t in terms) >= comp.n_params:
            return (Dense(densify(tuple(terms), comp.shape)),)
        return tuple(terms)


def _needs_grad(module, args, output):
    """Forward hook: the embedding's output as a tensor that requires grad (under grad mode)."""
    if torch.is_grad_enabled():
        return output.detach().requires_grad_(True)
    return None


def _sketch_terms(sketch, terms: tuple[Term, ...]) -> torch.Tensor:
    """A factored-aware sketch of the sum of ``terms`` (oriented [out, in]), term by term."""
    out = None
    for t in terms:
        if isinstance(t, Factored):
            p = sketch.project_factored(t.d, t.x)
        elif isinstance(t, Sparse):
            p = sketch.project_rows(t.ids, t.e)
        else:
            p = sketch.project(t.g.reshape(-1))
        out = p if out is None else out + p
    return out if out is not None else torch.zeros(sketch.n_out, device=sketch.device)
