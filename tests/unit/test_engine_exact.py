"""The engine's factored dot products equal brute-force autograd gradients (cosine scale 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradlens.data.examples import Example, tokenize_all
from gradlens.engine.capture import GradientEngine
from gradlens.engine.reference import flat_component_grads
from gradlens.engine.terms import (
    Dense,
    ExampleGrads,
    Factored,
    Sparse,
    component_dots,
    densify,
    projected_dots,
    projected_sqnorms,
    query_dots,
    term_dot,
)
from gradlens.models.loading import discover_components
from tests.conftest import build_tiny
from tests.helpers import dot64

EXAMPLES = [
    Example("a", "What is the boiling point of water?", "Water boils at 100 °C at sea level."),
    Example("b", "Explain photosynthesis briefly.", "Plants turn light and CO2 into sugar."),
    Example("c", "hi", "hello there, friend! How can I help you today?"),
]


def _check_pairs(grads, ref, tol=1e-5):
    worst = 0.0
    for a in range(len(grads)):
        for b in range(len(grads)):
            got = component_dots(grads[a], grads[b])
            want = np.array([dot64(x, y) for x, y in zip(ref[a], ref[b])])
            scale = np.sqrt(
                np.array([dot64(x, x) for x in ref[a]]) * np.array([dot64(y, y) for y in ref[b]])
            )
            worst = max(worst, float(np.max(np.abs(got - want) / (scale + 1e-30))))
    assert worst <= tol, f"worst relative error {worst:.2e}"
    for g, r in zip(grads, ref):
        want = np.array([dot64(x, x) for x in r])
        np.testing.assert_allclose(g.sqnorms, want, rtol=tol)


@pytest.mark.parametrize("family", ["llama", "gpt2", "neox"])
def test_engine_matches_autograd(family, tokenizer):
    model = build_tiny(family, tokenizer)
    components = discover_components(model)
    toks = tokenize_all(tokenizer, EXAMPLES)
    ref = [flat_component_grads(model, components, t) for t in toks]
    with GradientEngine(model, components) as engine:
        single = [engine.compute([t])[0] for t in toks]
        batched = engine.compute(toks)  # right-padded batch of 3
        assert engine.passes == 6
    _check_pairs(single, ref)
    _check_pairs(batched, ref)
    # the batched query-vs-candidates path equals the pairwise one, in cosine scale: both sum
    # float32 Gram products whose kernels (and rounding) depend on the batch shape
    pairwise = np.stack([component_dots(single[0], g) for g in single])
    scale = np.sqrt(component_dots(single[0], single[0]))[None, :] * np.sqrt(
        np.stack([component_dots(g, g) for g in single])
    )
    assert (np.abs(query_dots(single[0], single) - pairwise) <= 1e-6 * scale + 1e-30).all()
    # the engine restores requires_grad on exit
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_positions_after_the_last_loss_token_are_dropped_exactly(family, tokenizer):
    """The engine keeps only positions [0, m), m = 1 + the last position whose prediction
    enters the loss; a tail without labels (here 5 tokens) must then carry zero gradient."""
    from dataclasses import replace

    from gradlens.data.examples import IGNORE_INDEX

    model = build_tiny(family, tokenizer)
    components = discover_components(model)
    toks = []
    for t in tokenize_all(tokenizer, EXAMPLES[:2]):
        labels = t.labels.clone()
        labels[-5:] = IGNORE_INDEX
        toks.append(replace(t, labels=labels))
    last = int((toks[0].labels[1:] != IGNORE_INDEX).nonzero()[-1])
    assert GradientEngine._rows_with_gradient(toks[0]) == last + 1 <= toks[0].n_tokens - 5
    ref = [flat_component_grads(model, components, t) for t in toks]
    with GradientEngine(model, components) as engine:
        grads = [engine.compute([t])[0] for t in toks]
        batched = engine.compute(toks)
    _check_pairs(grads, ref)
    _check_pairs(batched, ref)
    for g, tok in zip(grads, toks):  # nothing beyond the prefix is stored
        m = GradientEngine._rows_with_gradient(tok)
        assert all(t.x.shape[0] == m for terms in g.comps for t in terms if isinstance(t, Factored))


def test_sum_reduction_and_loss_on_all(tokenizer):
    model = build_tiny("llama", tokenizer)
    components = discover_components(model)
    toks = tokenize_all(tokenizer, EXAMPLES[:2], loss_on="all")
    ref = [flat_component_grads(model, components, t, reduction="sum") for t in toks]
    with GradientEngine(model, components, reduction="sum") as engine:
        grads = engine.compute(toks)
    _check_pairs(grads, ref)


def test_term_dots_every_form_pair():
    """Each cross-form formula equals the dot of the densified matrices."""
    gen = torch.Generator().manual_seed(0)
    rows, cols = 40, 12

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    forms = [
        Dense(rand(rows, cols)),
        Factored(rand(5, cols), rand(5, rows)),
        Sparse(torch.randint(0, rows, (7,), generator=gen), rand(7, cols)),
        Sparse(torch.tensor([3, 3, 9]), rand(3, cols)),  # repeated ids
    ]
    for a in forms:
        for b in forms:
            da, db = densify((a,), (rows, cols)), densify((b,), (rows, cols))
            want = dot64(da.reshape(-1), db.reshape(-1))
            got = term_dot(a, b).item()
            assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_densify_mixed_terms_matches_brute_force_and_leaves_terms_untouched():
    gen = torch.Generator().manual_seed(1)
    rows, cols = 30, 8
    dense = Dense(torch.randn(rows, cols, generator=gen))
    fac = Factored(torch.randn(4, cols, generator=gen), torch.randn(4, rows, generator=gen))
    sparse = Sparse(torch.tensor([2, 2, 17]), torch.randn(3, cols, generator=gen))
    saved = dense.g.clone()
    want = dense.g + fac.d.T @ fac.x
    want[2] += sparse.e[0] + sparse.e[1]
    want[17] += sparse.e[2]
    for order in [(dense, fac, sparse), (sparse, fac, dense), (sparse, fac), (fac, fac)]:
        expect = sum((densify((t,), (rows, cols)) for t in order), torch.zeros(rows, cols))
        got = densify(order, (rows, cols))
        assert torch.allclose(got, expect, atol=1e-5)
    assert torch.allclose(densify((dense, fac, sparse), (rows, cols)), want, atol=1e-5)
    assert torch.equal(dense.g, saved)  # densify never writes into a stored term


def test_smollm2_three_examples(smollm2_dir):
    """The real bundled model: 211 components, exact against autograd on 3 examples."""
    from gradlens.models.loading import load_model

    model, tok = load_model(str(smollm2_dir))
    components = discover_components(model)
    assert len(components) == 211
    toks = tokenize_all(tok, EXAMPLES)
    ref = [flat_component_grads(model, components, t) for t in toks]
    with GradientEngine(model, components) as engine:
        grads = [engine.compute([t])[0] for t in toks]
    _check_pairs(grads, ref)


def _projected_by_engine(model, tokenizer, method: str, fraction: float):
    """Two examples through an engine projecting with (method, fraction), one call each, checked
    against the projection of the dense autograd gradient oriented [out, in] (GPT-2's Conv1D
    weights are stored [in, out]). Returns the engine (closed) and the examples' grads."""
    from gradlens.engine.projection import build_projections

    components = discover_components(model)
    toks = tokenize_all(tokenizer, EXAMPLES[:2])
    (ps,) = build_projections([(method, fraction)], components, 5, model)
    modules = dict(model.named_modules())
    with GradientEngine(model, components, projections=[ps]) as engine:
        grads = engine.compute([toks[0]]) + engine.compute([toks[1]])
    for g, tok in zip(grads, toks):
        ref = flat_component_grads(model, components, tok)
        for c, comp in enumerate(components):
            flat = ref[c].reshape(comp.shape)
            if not isinstance(modules[comp.module], (torch.nn.Linear, torch.nn.Embedding)):
                flat = flat.T
            want = ps.project[c](flat.reshape(-1).contiguous())
            got = g.proj[ps.method][c]
            scale = float(want.abs().max()) + 1e-12
            assert float((got - want).abs().max()) <= 1e-4 * scale + 1e-7, comp.name
    return engine, grads


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_kron_projection_in_the_engine_equals_sketching_the_autograd_gradient(family, tokenizer):
    """The engine applies `kron` to the compact forms without forming the gradient."""
    _projected_by_engine(build_tiny(family, tokenizer), tokenizer, "kron", 0.3)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sjlt_projection_in_the_engine_equals_sketching_the_autograd_gradient(family, tokenizer):
    """The engine densifies each component into a scratch buffer reused across components of one
    shape and across examples, then sketches it: equal to the SJLT of the autograd gradient for
    every component of two consecutive examples."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    cfg = tiny_config(family, len(tokenizer))  # wide enough that gradients stay factored
    if family == "llama":
        cfg.hidden_size, cfg.intermediate_size = 128, 256
    else:
        cfg.n_embd = 128
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    engine, grads = _projected_by_engine(model, tokenizer, "sjlt", 0.2)
    assert len(engine._scratch) < len(engine.components)  # buffers are shared by shape
    kinds = {type(t).__name__ for g in grads for terms in g.comps for t in terms}
    assert "Factored" in kinds, kinds  # the matmul-into-buffer path is exercised


def test_projected_dots_equal_per_component_dots() -> None:
    """The flat, vectorised projected dot products against K separate float64 dots."""
    gen = torch.Generator().manual_seed(3)
    sizes = [5, 1, 17, 8]
    parts = {e: [torch.randn(d, generator=gen) for d in sizes] for e in ("a", "b")}
    grads = {e: ExampleGrads(e, 3, [(), (), (), ()], np.zeros(4)) for e in parts}
    grads["a"].set_projection("sjlt:0.5", parts["a"])
    grads["b"].proj["sjlt:0.5"] = parts["b"]  # set directly: proj_flat builds it lazily
    want = [float(pa.double() @ pb.double()) for pa, pb in zip(parts["a"], parts["b"])]
    got = projected_dots(grads["a"], grads["b"], "sjlt:0.5")
    assert got.dtype == np.float64 and np.allclose(got, want, rtol=1e-12)
    sq = projected_sqnorms(grads["a"], "sjlt:0.5")
    assert np.allclose(sq, [float(p.double().square().sum()) for p in parts["a"]], rtol=1e-12)
    # stored as views of one flat vector, equal to the given parts
    views = grads["a"].proj["sjlt:0.5"]
    assert all(torch.equal(v, p) for v, p in zip(views, parts["a"]))
    assert views[1].untyped_storage().data_ptr() == views[2].untyped_storage().data_ptr()
