"""Cosine error of the projections on real SmolLM2 gradients, against the exact dot products.

Training examples and their paraphrased queries go through one engine with ``--project``
methods (default ``sjlt:0.01,kron:0.01``); every (query, training example) pair's cosine, per
component and over the full gradient, is compared with the exact one. As a baseline the script
also applies the textbook CountSketch, a fully random hash (one independent row and sign per
coordinate, the same d_c), to the same dense gradients; its tables are drawn here with
``torch.randint`` and applied with ``index_add_``.

    python benchmarks/projection_error.py [--examples 6] [--project sjlt:0.01,kron:0.01]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradlens.data.examples import load_examples, tokenize_all  # noqa: E402
from gradlens.engine.capture import GradientEngine  # noqa: E402
from gradlens.engine.projection import (  # noqa: E402
    build_projections,  # noqa: E402
    component_dims,
    parse_project_spec,
)
from gradlens.engine.terms import component_dots, densify  # noqa: E402
from gradlens.models.loading import discover_components, load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def random_hash_sketches(grads, components, fraction: float, seed: int) -> list[list[np.ndarray]]:
    """Fully random CountSketch p_c[d_c] of every example's every component (float64)."""
    dims = component_dims([c.n_params for c in components], fraction)
    out: list[list[np.ndarray]] = [[] for _ in grads]
    for c, (comp, d) in enumerate(zip(components, dims)):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + c)
        rows = torch.randint(0, d, (comp.n_params,), generator=gen)
        signs = torch.randint(0, 2, (comp.n_params,), generator=gen).double() * 2 - 1
        for e, g in enumerate(grads):
            p = torch.zeros(d, dtype=torch.float64)
            if g.comps[c]:
                flat = densify(g.comps[c], comp.shape).reshape(-1).double()
                p.index_add_(0, rows, flat * signs)
            out[e].append(p.numpy())
    return out


def cosines(dots: np.ndarray, qn: np.ndarray, cn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-component cosines [pairs, K] (nan where a norm is 0) and full-gradient ones [pairs]."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per = dots / np.sqrt(qn * cn)
        full = dots.sum(1) / np.sqrt(qn.sum(1) * cn.sum(1))
    return per, full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=6, help="training examples (and queries)")
    ap.add_argument("--project", default="sjlt:0.01,kron:0.01")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, tok = load_model("smollm2")
    components = discover_components(model)
    train = load_examples(REPO / "data/demo/train.jsonl")
    queries = {q.id: q for q in load_examples(REPO / "data/demo/paraphrased.jsonl")}
    step = len(train) // args.examples
    picked = [train[i * step] for i in range(args.examples)]
    twins = [queries[t.id] for t in picked]  # a query shares its source example's id
    toks = tokenize_all(tok, picked + twins)
    specs = parse_project_spec(args.project)
    sets = build_projections(specs, components, args.seed, model)
    with GradientEngine(model, components, projections=sets) as engine:
        engine.compute(toks[:1])  # draws the hash tables
        for k in engine.projection_seconds:
            engine.projection_seconds[k] = 0.0
        grads = engine.compute(toks)
        seconds = {k: v / len(toks) for k, v in engine.projection_seconds.items()}
    n = args.examples
    train_g, query_g = grads[:n], grads[n:]
    pairs = [(q, t) for q in range(n) for t in range(n)]
    exact = np.array([component_dots(query_g[q], train_g[t]) for q, t in pairs])
    qn = np.array([query_g[q].sqnorms for q, _ in pairs])
    cn = np.array([train_g[t].sqnorms for _, t in pairs])
    ex_per, ex_full = cosines(exact, qn, cn)

    def report(label: str, vecs: list[list[np.ndarray]], secs: float | None) -> None:
        v64 = [[np.asarray(p, dtype=np.float64) for p in ps] for ps in vecs]
        dots = np.array([[a @ b for a, b in zip(v64[n + q], v64[t])] for q, t in pairs])
        sq = np.array([[a @ a for a in ps] for ps in v64])
        per, full = cosines(dots, sq[[n + q for q, _ in pairs]], sq[[t for _, t in pairs]])
        err = np.abs(per - ex_per)
        err = err[np.isfinite(err)]
        ferr = np.abs(full - ex_full)
        cost = f"{secs:.3f}" if secs is not None else "—"
        print(
            f"| {label} | {cost} | {err.mean():.4f} ({np.quantile(err, 0.95):.4f}) | "
            f"{ferr.mean():.4f} ({ferr.max():.4f}) |"
        )

    tokens = [t.n_tokens for t in toks]
    print(
        f"## projection error: {n} training examples x {n} paraphrased queries = {len(pairs)} "
        f"pairs, {len(components)} components, tokens per example {min(tokens)}-{max(tokens)}"
    )
    print(
        "| method | projection s per example | per-component mean |Δcos| (p95) | "
        "full-gradient mean |Δcos| (max) |"
    )
    print("|---|---|---|---|")
    for method in engine.projection_seconds:
        report(f"`{method}`", [g.proj[method] for g in grads], seconds[method])
    for method, fraction in specs:
        if method == "sjlt":
            t0 = time.perf_counter()
            ref = random_hash_sketches(grads, components, fraction, args.seed)
            report(
                f"fully random CountSketch at {fraction:g} (reference, index_add_)",
                ref,
                (time.perf_counter() - t0) / len(toks),
            )


if __name__ == "__main__":
    main()
