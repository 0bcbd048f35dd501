"""The paper's random projection without caching, timed on a few queries of a run.

The paper projects without a gradient cache: for every query, one fresh forward+backward for
the query and for each of its b candidates, each gradient densified (every component's full
matrix, as autograd's ``.grad`` would hold it) and projected, then the projected dots taken.
``measure_uncached`` does exactly that for the first ``UNCACHED_QUERIES`` queries of a run with
the run's own model, loss options and projections, and returns the measured times; the run
stores them in its stats (``uncached_projection``) and ``gradlens select`` extrapolates them to
the run's queries (``gradlens.runs.costs``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch

from gradlens.data.examples import Tokenized
from gradlens.engine.capture import GradientEngine, ProjectionSet
from gradlens.engine.terms import densify
from gradlens.models.loading import Component

#: Queries the uncached procedure is timed on (the paper's Table 2 extrapolates the same way).
UNCACHED_QUERIES = 3


def _clock(device: torch.device) -> float:
    """Wall time after the device's queued work has finished (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def measure_uncached(
    net: torch.nn.Module,
    components: Sequence[Component],
    projections: Sequence[ProjectionSet],
    queries: Mapping[str, Tokenized],
    train: Mapping[str, Tokenized],
    query_cands: Mapping[str, Sequence[str]],
    reduction: str,
    n_queries: int = UNCACHED_QUERIES,
) -> dict:
    """Time the uncached procedure on the first ``n_queries`` of ``query_cands`` (query id in
    ``queries`` -> candidate ids in ``train``).

    Returns ``{"queries", "examples", "pass_seconds", "densify_seconds",
    "project_seconds": {method: seconds}, "wall_seconds"}``: the fresh passes (forward,
    backward, capture) of the query and its candidates, densifying every component of each,
    and per method projecting them and taking the query's projected dots; ``wall_seconds`` is
    the whole measurement (what it adds to the compute job's time)."""
    start = time.perf_counter()
    passes = dens = 0.0
    proj = {p.method: 0.0 for p in projections}
    n_examples = 0
    with GradientEngine(net, components, reduction=reduction) as engine:
        dev = engine.device
        for q, cands in list(query_cands.items())[:n_queries]:
            projected: dict[str, list[list[torch.Tensor]]] = {m: [] for m in proj}
            for tok in [queries[q], *(train[c] for c in cands)]:
                t0 = _clock(dev)
                grads = engine.compute([tok])[0]
                t1 = _clock(dev)
                dense = [
                    densify(terms, comp.shape).reshape(-1)
                    if terms
                    else torch.zeros(comp.n_params, device=dev)
                    for terms, comp in zip(grads.comps, components)
                ]
                t2 = _clock(dev)
                passes, dens = passes + t1 - t0, dens + t2 - t1
                n_examples += 1
                for ps in projections:
                    t0 = _clock(dev)
                    projected[ps.method].append([ps.project[c](g) for c, g in enumerate(dense)])
                    proj[ps.method] += _clock(dev) - t0
                del dense
            for m, vecs in projected.items():
                t0 = _clock(dev)
                query = vecs[0]
                dots = [torch.stack([c[k] for c in vecs[1:]]) @ p for k, p in enumerate(query)]
                torch.stack(dots).cpu()  # [K, b]
                proj[m] += _clock(dev) - t0
    return {
        "queries": min(n_queries, len(query_cands)),
        "examples": n_examples,
        "pass_seconds": passes,
        "densify_seconds": dens,
        "project_seconds": proj,
        "wall_seconds": time.perf_counter() - start,
    }
