"""The order in which the compute job takes its queries, and the gradient cache that lets each
unique example get ONE forward+backward.

Queries are processed in a greedy order (``query_schedule``: next = the query with most
candidates already cached); a training example's gradient stays cached while later queries still
need it and the cache fits the memory budget (``default_max_memory``, or ``--max-memory``
through ``parse_memory``); otherwise the example with the fewest remaining uses is evicted (and
recomputed if needed). ``iter_schedule`` yields each query's dot and norm rows.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gradlens.data.examples import Tokenized
from gradlens.engine.capture import GradientEngine
from gradlens.engine.terms import ExampleGrads, projected_dots, projected_sqnorms, query_dots
from gradlens.errors import GradLensError
from gradlens.faults import fault_point

#: Share of the memory available at start that the gradient cache may use by default.
CACHE_SHARE_OF_AVAILABLE = 0.7
#: Memory kept back from the cache for the model and the working set (and the budget's floor).
CACHE_RESERVE_BYTES = 1 << 30


def default_max_memory() -> int:
    """The gradient cache budget in bytes: ``CACHE_SHARE_OF_AVAILABLE`` of the memory available
    now, less ``CACHE_RESERVE_BYTES`` (at least ``CACHE_RESERVE_BYTES``)."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = 8 << 30
    return max(CACHE_RESERVE_BYTES, int(avail * CACHE_SHARE_OF_AVAILABLE) - CACHE_RESERVE_BYTES)


def parse_memory(text: str) -> int:
    """``'8G'``, ``'512M'``, ``'1.5GB'`` or bytes -> bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(float(t))
    except ValueError:
        raise GradLensError(f"--max-memory: cannot read '{text}' (e.g. 8G, 512M)") from None


@dataclass(frozen=True)
class QueryResult:
    """Rows for one finished query: ``dots`` (method, query_id, candidate_id, component_idx,
    dot) and ``norms`` (method, split, example_id, component_idx, sqnorm) of the examples first
    computed for it; ``kept``: what ``iter_schedule``'s ``keep`` returned for the examples
    computed for it (their index rows), Nones left out."""

    query_id: str
    dots: pd.DataFrame
    norms: pd.DataFrame
    kept: tuple = ()


@dataclass
class ScheduleStats:
    """What a schedule did, counted as it runs: forward+backward ``passes``, cache
    ``evictions``, the cache's peak size in bytes and the query ``order``."""

    passes: int = 0
    evictions: int = 0
    peak_cache_bytes: int = 0
    order: list[str] = field(default_factory=list)


def query_schedule(query_cands: dict[str, list[str]]) -> list[str]:
    """Static query order: next = most candidates shared with what is cached (ties: input order),
    assuming an unbounded cache that drops examples once no later query needs them."""
    uses = Counter(c for cands in query_cands.values() for c in cands)
    cached: set[str] = set()
    remaining = list(query_cands)
    order = []
    while remaining:
        best = max(remaining, key=lambda q: sum(c in cached for c in query_cands[q]))
        remaining.remove(best)
        order.append(best)
        for c in query_cands[best]:
            uses[c] -= 1
            if uses[c]:
                cached.add(c)
            else:
                cached.discard(c)
    return order


def iter_schedule(
    engine: GradientEngine,
    queries: dict[str, Tokenized],
    train: dict[str, Tokenized],
    query_cands: dict[str, list[str]],
    max_memory: int,
    batch_size: int,
    stats: ScheduleStats,
    order: Sequence[str] | None = None,
    progress: bool = True,
    keep: Callable[[str, ExampleGrads], object] | None = None,
) -> Iterator[QueryResult]:
    """Yield one QueryResult per query (in ``order``, default ``query_schedule``), computing each
    example once where the budget allows. Query norms come with their query; a training
    example's norms come with the first query that computed it (see ``drop_written_norms``).
    ``keep(split, grads)`` sees every example as soon as it is computed (before it is cached)."""
    order = list(query_schedule(query_cands) if order is None else order)
    stats.order = order
    uses = Counter(c for q in order for c in query_cands[q])
    cache: dict[str, ExampleGrads] = {}
    methods = [p.method for p in engine.projections]
    bar = tqdm(total=len(order), desc="queries", unit="q", disable=not progress, leave=False)
    for qid in order:
        cands = query_cands[qid]
        missing = [c for c in cands if c not in cache]
        todo = [queries[qid]] + [train[c] for c in missing]
        computed: list[ExampleGrads] = []
        for start in range(0, len(todo), batch_size):
            computed.extend(engine.compute(todo[start : start + batch_size]))
        stats.passes = engine.passes
        fault_point("compute.query")
        q_grads, new_train = computed[0], computed[1:]
        kept = []
        if keep is not None:
            kept = [keep("query", q_grads)] + [keep("train", g) for g in new_train]
        for g in new_train:
            cache[g.example_id] = g
        norm_rows = [_norm_rows(q_grads, "query", methods)]
        norm_rows += [_norm_rows(g, "train", methods) for g in new_train]
        exact = query_dots(q_grads, [cache[cid] for cid in cands])
        dot_rows = []
        for j, cid in enumerate(cands):
            dot_rows.append(_dot_frame(qid, cid, "exact", exact[j]))
            for m in methods:
                dot_rows.append(_dot_frame(qid, cid, m, projected_dots(q_grads, cache[cid], m)))
        kept = tuple(k for k in kept if k is not None)
        result = QueryResult(qid, pd.concat(dot_rows), pd.concat(norm_rows), kept)
        for cid in cands:
            uses[cid] -= 1
        for cid in [c for c in cache if uses[c] == 0]:
            del cache[cid]
        cache_bytes = sum(g.nbytes for g in cache.values())
        stats.peak_cache_bytes = max(stats.peak_cache_bytes, cache_bytes + q_grads.nbytes)
        while cache_bytes > max_memory and cache:
            victim = min(cache, key=lambda c: uses[c])
            cache_bytes -= cache.pop(victim).nbytes
            stats.evictions += 1
        bar.update(1)
        bar.set_postfix(passes=engine.passes, cached=len(cache))
        yield result
    bar.close()


def drop_written_norms(result: QueryResult, written_train: set[str]) -> QueryResult:
    """Keep each training example's norms once: drop those already written, remember the rest."""
    norms = result.norms
    is_train = norms["split"] == "train"
    repeat = is_train & norms["example_id"].isin(written_train)
    written_train.update(norms.loc[is_train, "example_id"])
    return QueryResult(result.query_id, result.dots, norms[~repeat], result.kept)


def _per_component(values: np.ndarray, column: str, **keys: str) -> pd.DataFrame:
    """Long rows: the constant ``keys`` columns, component_idx 0..K-1 and ``column`` = values."""
    index = np.arange(len(values), dtype=np.int32)
    return pd.DataFrame(keys | {"component_idx": index, column: values})


def _dot_frame(qid: str, cid: str, method: str, dots: np.ndarray) -> pd.DataFrame:
    return _per_component(dots, "dot", method=method, query_id=qid, candidate_id=cid)


def _norm_rows(g: ExampleGrads, split: str, methods: Sequence[str]) -> pd.DataFrame:
    frames = [_norm_frame(g.example_id, split, "exact", g.sqnorms)]
    for m in methods:
        frames.append(_norm_frame(g.example_id, split, m, projected_sqnorms(g, m)))
    return pd.concat(frames)


def _norm_frame(example_id: str, split: str, method: str, sq: np.ndarray) -> pd.DataFrame:
    return _per_component(sq, "sqnorm", method=method, split=split, example_id=example_id)
