"""The compute job: datasets -> candidates -> gradients -> dot products in DuckDB (resumable).

Scheduling: each unique example gets ONE forward+backward. Queries are processed in a greedy
order (next = the query with most candidates already cached); a training example's gradient
stays cached while later queries still need it and the cache fits ``max_memory`` bytes;
otherwise the example with the fewest remaining uses is evicted (and recomputed if needed).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gradlens.candidates import bm25_candidates
from gradlens.config import ComputeConfig
from gradlens.data import (
    Example,
    Tokenized,
    check_queries,
    content_hash,
    load_examples,
    tokenize_all,
)
from gradlens.distributed import DistContext, init_distributed
from gradlens.engine import GradientEngine, ProjectionSet
from gradlens.errors import GradLensError
from gradlens.grads import ExampleGrads, projected_dots, projected_sqnorms, query_dots
from gradlens.models import (
    Component,
    discover_components,
    load_model,
    model_fingerprint,
    resolve_device,
)
from gradlens.store import Store

log = logging.getLogger(__name__)


def default_max_memory() -> int:
    """The gradient cache budget in bytes: 70 % of the memory available now, less 1 GiB for the
    model and the working set (at least 1 GiB). On the 24 GiB box the demo's cache peaks at
    ~11 GB, so this leaves headroom where half of the free memory was borderline."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = 8 << 30
    return max(1 << 30, int(avail * 0.7) - (1 << 30))


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


@dataclass
class QueryResult:
    """Rows for one finished query: dots and the norms of examples first computed for it."""

    query_id: str
    dots: pd.DataFrame
    norms: pd.DataFrame


@dataclass
class ScheduleStats:
    passes: int = 0
    evictions: int = 0
    peak_cache_bytes: int = 0
    order: list[str] = field(default_factory=list)


def greedy_order(query_cands: dict[str, list[str]]) -> list[str]:
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
) -> Iterator[QueryResult]:
    """Yield one QueryResult per query (in ``order``, default ``greedy_order``), computing each
    example once where the budget allows. Query norms come with their query; a training
    example's norms come with the first query that computed it (see ``drop_written_norms``)."""
    order = list(greedy_order(query_cands) if order is None else order)
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
        q_grads, new_train = computed[0], computed[1:]
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
        result = QueryResult(qid, pd.concat(dot_rows), pd.concat(norm_rows))
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
    return QueryResult(result.query_id, result.dots, norms[~repeat])


def _dot_frame(qid: str, cid: str, method: str, dots: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": method,
            "query_id": qid,
            "candidate_id": cid,
            "component_idx": np.arange(len(dots), dtype=np.int32),
            "dot": dots,
        }
    )


def _norm_rows(g: ExampleGrads, split: str, methods: Sequence[str]) -> pd.DataFrame:
    frames = [_norm_frame(g.example_id, split, "exact", g.sqnorms)]
    for m in methods:
        frames.append(_norm_frame(g.example_id, split, m, projected_sqnorms(g, m)))
    return pd.concat(frames)


def _norm_frame(example_id: str, split: str, method: str, sq: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": method,
            "split": split,
            "example_id": example_id,
            "component_idx": np.arange(len(sq), dtype=np.int32),
            "sqnorm": sq,
        }
    )


@dataclass(frozen=True)
class ComputeSummary:
    """What ``gradlens compute`` reports on its final line."""

    run_name: str
    run_id: str
    db: str
    examples: int
    pairs: int
    components: int
    passes: int
    seconds: float
    already_complete: bool = False
    evictions: int = 0

    def line(self) -> str:
        if self.already_complete:
            return (
                f"run '{self.run_name}' ({self.run_id}) is already complete in {self.db}: "
                "nothing to do"
            )
        return (
            f"run={self.run_name} examples={self.examples} pairs={self.pairs} "
            f"components={self.components} passes={self.passes} seconds={self.seconds:.1f} "
            f"db={self.db}"
        )


def component_frame(components: Sequence[Component]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "component_idx": np.arange(len(components), dtype=np.int32),
            "component": [c.name for c in components],
            "layer": pd.array([c.layer for c in components], dtype="Int32"),
            "kind": [c.kind for c in components],
            "n_params": [c.n_params for c in components],
            "param_name": [c.params[0] for c in components],
        }
    )


@dataclass(frozen=True)
class ComputeJob:
    """The options of one ``gradlens compute`` invocation (see ``compute``)."""

    model: str
    train_path: str
    queries_path: str
    db: str
    run: str | None
    candidates: int
    bm25_on: str
    loss_on: str
    reduction: str
    max_length: int | None
    dtype: str
    seed: int
    max_memory: int | None
    batch_size: int | None
    trust_remote_code: bool
    progress: bool
    t0: float


def compute(
    model: str,
    train_path: str,
    queries_path: str,
    db: str,
    run: str | None = None,
    candidates: int = 5,
    bm25_on: str = "prompt",
    loss_on: str = "response",
    reduction: str = "mean",
    max_length: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    project: str | None = None,
    seed: int = 0,
    max_memory: int | None = None,
    batch_size: int | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> ComputeSummary | None:
    """Run (or resume) a compute job; see ``gradlens compute --help`` for the options.

    Under ``torchrun`` every rank computes a slice of the queries and rank 0 writes; ranks
    other than 0 return None.
    """
    t0 = time.perf_counter()
    if candidates < 1:
        raise GradLensError(f"--candidates must be at least 1, got {candidates}")
    if max_length is not None and max_length < 2:
        raise GradLensError(f"--max-length must be at least 2, got {max_length}")
    proj_specs = _parse_projections(project)
    train = load_examples(train_path)
    queries = load_examples(queries_path)
    check_queries(train, queries, queries_path)
    job = ComputeJob(
        model,
        str(train_path),
        str(queries_path),
        str(db),
        run,
        candidates,
        bm25_on,
        loss_on,
        reduction,
        max_length,
        dtype,
        seed,
        max_memory,
        batch_size,
        trust_remote_code,
        progress,
        t0,
    )
    ctx = init_distributed(resolve_device(device))
    try:
        if ctx.active and device.startswith("cuda"):
            device = f"cuda:{ctx.local_rank}"
        # only rank 0 touches the database (DuckDB has a single writer)
        store = Store(db) if ctx.is_main else None
        try:
            return _compute_run(ctx, store, job, train, queries, proj_specs, device)
        finally:
            if store is not None:
                store.close()
    finally:
        ctx.close()


def _compute_run(
    ctx: DistContext,
    store: Store | None,
    job: ComputeJob,
    train: list[Example],
    queries: list[Example],
    proj_specs: list[tuple[str, float]],
    device: str,
) -> ComputeSummary | None:
    net, tokenizer = load_model(
        job.model, device=device, trust_remote_code=job.trust_remote_code, dtype=job.dtype
    )
    components = discover_components(net)
    config = ComputeConfig(
        model=job.model,
        model_hash=model_fingerprint(net),
        train_hash=content_hash(train),
        queries_hash=content_hash(queries),
        train_path=str(job.train_path),
        queries_path=str(job.queries_path),
        candidates=job.candidates,
        bm25_on=job.bm25_on,
        loss_on=job.loss_on,
        reduction=job.reduction,
        max_length=job.max_length,
        dtype=job.dtype,
        projections=tuple(f"{m}:{f:g}" for m, f in proj_specs),
        seed=job.seed,
    )
    run_id = config.key()
    cand_df = bm25_candidates(train, queries, job.candidates, job.bm25_on)
    train_tok = {
        t.example.id: t for t in tokenize_all(tokenizer, train, job.loss_on, job.max_length)
    }
    query_tok = {
        t.example.id: t for t in tokenize_all(tokenizer, queries, job.loss_on, job.max_length)
    }
    state: dict = {}
    if ctx.is_main:
        try:
            row = store.begin_run(
                run_id, job.run or f"{_stem(job.queries_path)}-{run_id[:6]}", _config_dict(config)
            )
            if row["status"] != "complete" and not store.has_rows("components", run_id):
                _write_setup(store, run_id, components, train_tok, query_tok, cand_df)
            state = {
                "name": row["name"],
                "status": row["status"],
                "done": store.done_queries(run_id),
            }
        except GradLensError as exc:
            state = {"error": str(exc)}
    state = ctx.broadcast(state)
    if "error" in state:
        raise GradLensError(state["error"])
    name, done = state["name"], state["done"]
    if state["status"] == "complete":
        if not ctx.is_main:
            return None
        return ComputeSummary(name, run_id, str(job.db), 0, 0, len(components), 0, 0.0, True)
    query_cands = {
        q: list(g.sort_values("rank")["candidate_id"])
        for q, g in cand_df.groupby("query_id", sort=False)
        if q not in done
    }
    if done and ctx.is_main:
        log.warning(
            "resuming run '%s': %d of %d queries already stored", name, len(done), len(queries)
        )
    projections = build_projections(proj_specs, components, job.seed, net)
    engine = GradientEngine(net, components, reduction=job.reduction, projections=projections)
    budget = job.max_memory if job.max_memory is not None else default_max_memory()
    bsz = job.batch_size or (8 if str(engine.device).startswith("cuda") else 1)
    written = store.normed_examples(run_id, "train") if ctx.is_main else set()

    def write(res: QueryResult) -> None:
        res = drop_written_norms(res, written)
        store.write_query(run_id, res.query_id, res.dots, res.norms)

    stats = ScheduleStats()
    with engine:
        if not ctx.active:
            for res in iter_schedule(
                engine, query_tok, train_tok, query_cands, budget, bsz, stats, progress=job.progress
            ):
                write(res)
        else:
            # contiguous slices of the greedy order keep each rank's candidates shared
            order = greedy_order(query_cands)
            lo = len(order) * ctx.rank // ctx.world
            hi = len(order) * (ctx.rank + 1) // ctx.world
            rounds = -(-len(order) // ctx.world)
            shard = {q: query_cands[q] for q in order[lo:hi]}
            results = iter_schedule(
                engine,
                query_tok,
                train_tok,
                shard,
                budget,
                bsz,
                stats,
                order=order[lo:hi],
                progress=job.progress and ctx.is_main,
            )
            for _ in range(rounds):
                gathered = ctx.gather(next(results, None))
                for res in gathered or []:
                    if res is not None:
                        write(res)
    passes = ctx.sum(stats.passes)
    evictions = ctx.sum(stats.evictions)
    if not ctx.is_main:
        return None
    seconds = time.perf_counter() - job.t0
    unique = len(query_tok) + len(set(cand_df["candidate_id"]))
    store.mark_complete(
        run_id,
        {
            "seconds": seconds,
            "passes": passes,
            "unique_examples": unique,
            "evictions": evictions,
            "peak_cache_bytes": stats.peak_cache_bytes,
            "max_memory": budget,
            "batch_size": bsz,
            "device": str(engine.device),
            "world_size": ctx.world,
            "resumed_queries": len(done),
            "projection_seconds": engine.projection_seconds,
        },
    )
    return ComputeSummary(
        run_name=name,
        run_id=run_id,
        db=str(job.db),
        examples=unique,
        pairs=len(cand_df),
        components=len(components),
        passes=passes,
        seconds=seconds,
        evictions=evictions,
    )


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _config_dict(config: ComputeConfig) -> dict:
    import json

    return json.loads(config.to_json())


def _write_setup(store: Store, run_id, components, train_tok, query_tok, cand_df) -> None:
    used = set(cand_df["candidate_id"])
    ex_rows = [
        (split, t.example.id, t.example.prompt, t.example.response, t.n_tokens)
        for split, toks in (("train", train_tok), ("query", query_tok))
        for t in toks.values()
        if split == "query" or t.example.id in used
    ]
    examples = pd.DataFrame(
        ex_rows, columns=["split", "example_id", "prompt", "response", "n_tokens"]
    )
    store.con.execute("BEGIN TRANSACTION")
    try:
        store.insert("components", run_id, component_frame(components))
        store.insert("examples", run_id, examples)
        store.insert("candidates", run_id, cand_df)
        store.con.execute("COMMIT")
    except BaseException:
        store.con.execute("ROLLBACK")
        raise


def _parse_projections(project: str | None) -> list[tuple[str, float]]:
    if not project:
        return []
    from gradlens.projection import parse_project_spec

    try:
        return list(parse_project_spec(project))
    except ValueError as exc:
        raise GradLensError(f"--project: {exc}") from None


def build_projections(
    specs: Sequence[tuple[str, float]], components: Sequence[Component], seed: int, net
) -> list[ProjectionSet]:
    """The engine's projections for ``--project`` specs [(method, fraction), ...]: component c
    gets ``Projector(P_c, d_c, method, seed=seed * 100_003 + c)`` on the model's device, or for
    ``kron`` a ``KroneckerSketch`` of its gradient oriented [out, in], applied to the factors."""
    if not specs:
        return []
    from gradlens.projection import KroneckerSketch, Projector, component_dims

    device = str(next(net.parameters()).device)
    modules = dict(net.named_modules())
    sets = []
    for method, fraction in specs:
        dims = component_dims([c.n_params for c in components], fraction)
        if method == "kron":
            sketches = [
                KroneckerSketch(_term_shape(c, modules[c.module]), d, seed * 100_003 + idx, device)
                for idx, (c, d) in enumerate(zip(components, dims))
            ]
            label = f"{method}:{fraction:g}"
            sets.append(ProjectionSet(label, [k.project for k in sketches], factored=sketches))
            continue
        projectors = [
            Projector(c.n_params, d, method, seed=seed * 100_003 + idx, device=device).project
            for idx, (c, d) in enumerate(zip(components, dims))
        ]
        sets.append(ProjectionSet(f"{method}:{fraction:g}", projectors))
    return sets


def _term_shape(comp: Component, module: torch.nn.Module) -> tuple[int, int]:
    """The engine's orientation of a component's gradient: [out, in] (nn.Linear and
    nn.Embedding store their weight that way; GPT-2's Conv1D stores it transposed)."""
    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
        return tuple(comp.shape)
    return (comp.shape[1], comp.shape[0])
