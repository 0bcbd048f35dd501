"""The compute job: datasets -> candidates -> gradients -> dot products in DuckDB (resumable).

Scheduling: each unique example gets ONE forward+backward. Queries are processed in a greedy
order (next = the query with most candidates already cached); a training example's gradient
stays cached while later queries still need it and the cache fits ``max_memory`` bytes;
otherwise the example with the fewest remaining uses is evicted (and recomputed if needed).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gradlens.config import ComputeConfig
from gradlens.data.candidates import bm25_candidates
from gradlens.data.examples import (
    Example,
    Tokenized,
    check_queries,
    content_hash,
    load_examples,
    tokenize_all,
)
from gradlens.engine.capture import GradientEngine, ProjectionSet
from gradlens.engine.distributed import DistContext, init_distributed
from gradlens.engine.projection import method_label
from gradlens.engine.terms import ExampleGrads, projected_dots, projected_sqnorms, query_dots
from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.models.loading import (
    Component,
    discover_components,
    load_model,
    model_fingerprint,
    resolve_device,
)
from gradlens.options import ComputeOptions
from gradlens.store.connect import read_store
from gradlens.store.database import Store, check_database
from gradlens.store.workfile import (
    Progress,
    RunLock,
    job_files,
    open_work_store,
    progress_file,
    publish,
    work_dir,
    work_file,
    write_progress,
)

log = logging.getLogger(__name__)


#: What Ctrl-C (SIGINT) raises: Python's KeyboardInterrupt, or DuckDB's own exception when the
#: signal arrives during a write.
INTERRUPTS = (KeyboardInterrupt, duckdb.InterruptException)
#: Share of the memory available at start that the gradient cache may use by default.
CACHE_SHARE_OF_AVAILABLE = 0.7
#: Memory kept back from the cache for the model and the working set (and the budget's floor).
CACHE_RESERVE_BYTES = 1 << 30
#: Examples per forward/backward on a GPU when --batch-size is not given (CPU: 1; batching
#: measured no faster there, see benchmarks/RESULTS.md).
DEFAULT_CUDA_BATCH = 8


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
        fault_point("compute.query")
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


@dataclass(frozen=True, eq=False)
class _Job:
    """One compute invocation: its options plus what was derived from them before the model
    loads (start time, memory budget in bytes or None, parsed projections, device)."""

    opts: ComputeOptions
    t0: float
    max_memory: int | None
    projections: list[tuple[str, float]]
    device: str


@dataclass(frozen=True, eq=False)
class _Setup:
    """Everything fixed once the model is loaded: components, run config and id, candidates
    and tokenized examples by id."""

    components: list[Component]
    config: ComputeConfig
    run_id: str
    candidates: pd.DataFrame
    train_tok: dict[str, Tokenized]
    query_tok: dict[str, Tokenized]


def compute(model: str, train_path: str, queries_path: str, db: str, **options) -> object:
    """Run (or resume) a compute job: ``run_compute`` with ``ComputeOptions`` spelled as keyword
    arguments (``progress=False`` for ``no_progress``; ``max_memory`` in bytes or e.g. "8G")."""
    if "progress" in options:
        options["no_progress"] = not options.pop("progress")
    if isinstance(options.get("max_memory"), int):
        options["max_memory"] = str(options["max_memory"])
    opts = ComputeOptions(
        model=model, train=str(train_path), queries=str(queries_path), db=str(db), **options
    )
    return run_compute(opts)


def validate_inputs(
    opts: ComputeOptions,
) -> tuple[list[Example], list[Example], list[tuple[str, float]], int | None]:
    """Every check that needs no model: the data files (file, line, field), query ids against
    the training set, ``--project`` and ``--max-memory``. GradLensError with one line otherwise.
    Returns (train, queries, projections, memory budget in bytes or None). The dashboard runs
    this before it starts a job, so a browser user gets the CLI's messages."""
    proj_specs = _parse_projections(opts.project)
    budget = parse_memory(opts.max_memory) if opts.max_memory else None
    train = load_examples(opts.train)
    queries = load_examples(opts.queries)
    check_queries(train, queries, opts.queries)
    check_database(opts.db)  # a foreign or other-version file: refused before anything starts
    return train, queries, proj_specs, budget


def _check_writable(db: str) -> None:
    """Fail before the model loads when the job could not write beside the database."""
    try:
        work_dir(db).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GradLensError(f"cannot open database {db}: {exc.strerror or exc}") from None


def run_compute(opts: ComputeOptions) -> ComputeSummary | None:
    """Run (or resume) a compute job; see ``gradlens compute --help`` for the options.

    Under ``torchrun`` every rank computes a slice of the queries and rank 0 writes; ranks
    other than 0 return None.
    """
    t0 = time.perf_counter()
    train, queries, proj_specs, budget = validate_inputs(opts)
    _check_writable(opts.db)
    device = resolve_device(opts.device)
    ctx = init_distributed(device)
    try:
        if ctx.active and device.startswith("cuda"):
            device = f"cuda:{ctx.local_rank}"
        job = _Job(opts, t0, budget, proj_specs, device)
        return _compute_run(ctx, job, train, queries)
    finally:
        ctx.close()


def _by_id(toks: list[Tokenized]) -> dict[str, Tokenized]:
    return {t.example.id: t for t in toks}


def _setup(job: _Job, net, tokenizer, train: list[Example], queries: list[Example]) -> _Setup:
    o = job.opts
    candidates = bm25_candidates(train, queries, o.candidates, o.bm25_on)
    fault_point("compute.bm25")
    components = discover_components(net)
    config = ComputeConfig.from_options(
        o,
        model_hash=model_fingerprint(net),
        train_hash=content_hash(train),
        queries_hash=content_hash(queries),
        projections=tuple(method_label(m, f) for m, f in job.projections),
    )
    return _Setup(
        components=components,
        config=config,
        run_id=config.key(),
        candidates=candidates,
        train_tok=_by_id(tokenize_all(tokenizer, train, o.loss_on, o.max_length)),
        query_tok=_by_id(tokenize_all(tokenizer, queries, o.loss_on, o.max_length)),
    )


def _published(db: str, run_id: str, name: str) -> bool:
    """True when ``db`` already holds the run complete; GradLensError when its name belongs to
    another run there. A short read-only look: the database is not held during the job."""
    if not os.path.exists(db):
        return False
    with read_store(db) as target:
        row = target.run(run_id)
        if row is not None and row["status"] == "complete":
            return True
        other = target.name_owner(name, run_id)
    if other is not None:
        raise GradLensError(
            f"run name '{name}' is already used by a run with a different configuration "
            f"({other}) in {db}; pass another --run"
        )
    return False


def _open_run(ctx: DistContext, job: _Job, setup: _Setup, lock: RunLock | None):
    """Rank 0 finds the run complete in the database (status ``published``), or (holding the
    run's lock) opens the job's own work file and creates or resumes the run there (status
    ``running``, or ``complete`` when an earlier job finished it but stopped before publishing
    it); every rank gets its name, status and done queries. Returns (state, work store or
    None)."""
    state: dict = {}
    store = None
    if ctx.is_main:
        name = lock.name
        try:
            if _published(job.opts.db, setup.run_id, name):
                _remove_leftovers(job.opts.db, lock)
                state = {"name": name, "status": "published", "done": set()}
            else:
                lock.acquire()
                store = open_work_store(job.opts.db, setup.run_id, name)
                row = store.begin_run(setup.run_id, name, json.loads(setup.config.to_json()))
                if row["status"] != "complete" and not store.has_rows("components", setup.run_id):
                    _write_setup(store, setup)
                state = {
                    "name": row["name"],
                    "status": row["status"],
                    "stats": row["stats"],
                    "done": store.done_queries(setup.run_id),
                }
        except GradLensError as exc:
            state = {"error": str(exc)}
    state = ctx.broadcast(state)
    if "error" in state:
        raise GradLensError(state["error"])
    return state, store


def _results(ctx, engine, setup: _Setup, query_cands, budget, bsz, stats, progress):
    """QueryResults to write on rank 0 (single process: all; torchrun: gathered from every
    rank, one query per rank and round; other ranks get nothing)."""
    if not ctx.active:
        yield from iter_schedule(
            engine,
            setup.query_tok,
            setup.train_tok,
            query_cands,
            budget,
            bsz,
            stats,
            progress=progress,
        )
        return
    # contiguous slices of the greedy order keep each rank's candidates shared
    order = greedy_order(query_cands)
    lo = len(order) * ctx.rank // ctx.world
    hi = len(order) * (ctx.rank + 1) // ctx.world
    rounds = -(-len(order) // ctx.world)
    shard = {q: query_cands[q] for q in order[lo:hi]}
    results = iter_schedule(
        engine,
        setup.query_tok,
        setup.train_tok,
        shard,
        budget,
        bsz,
        stats,
        order=order[lo:hi],
        progress=progress and ctx.is_main,
    )
    for _ in range(rounds):
        gathered = ctx.gather(next(results, None))
        yield from (res for res in gathered or [] if res is not None)


def _compute_run(
    ctx: DistContext, job: _Job, train: list[Example], queries: list[Example]
) -> ComputeSummary | None:
    o = job.opts
    net, tokenizer = load_model(
        o.model, device=job.device, trust_remote_code=o.trust_remote_code, dtype=o.dtype
    )
    fault_point("compute.model")
    setup = _setup(job, net, tokenizer, train, queries)
    name = o.run or f"{_stem(o.queries)}-{setup.run_id[:6]}"
    lock = RunLock(o.db, setup.run_id, name) if ctx.is_main else None
    try:
        state, store = _open_run(ctx, job, setup, lock)
        try:
            return _compute_open_run(ctx, job, setup, state, store, net, len(queries))
        finally:
            if store is not None:
                store.close()
    finally:
        if lock is not None:
            lock.release()


def _compute_open_run(ctx, job: _Job, setup: _Setup, state: dict, store, net, n_queries: int):
    """The scheduled computation of a run opened by ``_open_run``; rank 0 writes each query to
    the work file and reports progress, then publishes the run into the database."""
    o = job.opts
    name, done, run_id = state["name"], state["done"], setup.run_id
    if state["status"] == "published":
        if not ctx.is_main:
            return None
        k = len(setup.components)
        return ComputeSummary(name, run_id, o.db, 0, 0, k, 0, 0.0, already_complete=True)
    if state["status"] == "complete":  # computed by a job that stopped before publishing it
        if not ctx.is_main:
            return None
        return _publish(store, job, setup, name, json.loads(state["stats"]))
    query_cands = {
        q: list(g.sort_values("rank")["candidate_id"])
        for q, g in setup.candidates.groupby("query_id", sort=False)
        if q not in done
    }
    if done and ctx.is_main:
        log.warning(
            "resuming run '%s': %d of %d queries already stored", name, len(done), n_queries
        )
    projections = build_projections(job.projections, setup.components, o.seed, net)
    engine = GradientEngine(net, setup.components, reduction=o.reduction, projections=projections)
    budget = job.max_memory if job.max_memory is not None else default_max_memory()
    on_gpu = str(engine.device).startswith("cuda")
    bsz = o.batch_size or (DEFAULT_CUDA_BATCH if on_gpu else 1)
    written = store.normed_examples(run_id, "train") if ctx.is_main else set()
    stats = ScheduleStats()
    reporter = _Reporter(o.db, run_id, name, len(done), n_queries) if ctx.is_main else None
    with engine, _reporting(reporter):
        progress = not o.no_progress
        for res in _results(ctx, engine, setup, query_cands, budget, bsz, stats, progress):
            res = drop_written_norms(res, written)
            _write_query(store, run_id, res)
            reporter.query_written(engine.passes)
    run_stats = {
        "passes": ctx.sum(stats.passes),
        "unique_examples": len(setup.query_tok) + len(set(setup.candidates["candidate_id"])),
        "evictions": ctx.sum(stats.evictions),
        "peak_cache_bytes": stats.peak_cache_bytes,
        "max_memory": budget,
        "batch_size": bsz,
        "device": str(engine.device),
        "world_size": ctx.world,
        "resumed_queries": len(done),
        "projection_seconds": engine.projection_seconds,
    }
    if not ctx.is_main:
        return None
    return _finish(store, job, setup, name, run_stats)


class _Reporter:
    """Writes the job's progress file after every stored query (done / total, passes, elapsed,
    ETA from this session's pace)."""

    def __init__(self, db: str, run_id: str, name: str, done: int, total: int) -> None:
        self.db, self.run_id, self.name = db, run_id, name
        self.start_done, self.done, self.total = done, done, total
        self.t0 = time.time()
        self.passes = 0
        self.write("running")

    def query_written(self, passes: int) -> None:
        self.done += 1
        self.passes = passes
        self.write("running")

    def write(self, state: str) -> None:
        elapsed = time.time() - self.t0
        pace = elapsed / max(1, self.done - self.start_done)
        eta = pace * (self.total - self.done) if self.done > self.start_done else None
        write_progress(
            Progress(
                self.run_id, self.name, str(self.db), os.getpid(), state, self.done,
                self.total, self.passes, elapsed, eta, time.time(),
            )
        )  # fmt: skip


@contextmanager
def _reporting(reporter: _Reporter | None):
    """Record how the job ended in its progress file (interrupted / failed) if it stops early."""
    try:
        yield
    except INTERRUPTS:
        if reporter is not None:
            reporter.write("interrupted")
        raise
    except BaseException:
        if reporter is not None:
            reporter.write("failed")
        raise


def _write_query(store: Store, run_id: str, res: QueryResult) -> None:
    """One query's dots, its new norms and its progress row in one transaction, so a job
    stopped at any point resumes at exactly the queries without a progress row."""
    with store.transaction():
        store.insert("dots", run_id, res.dots)
        fault_point("compute.write")
        store.insert("norms", run_id, res.norms)
        store.insert("progress", run_id, pd.DataFrame({"query_id": [res.query_id]}))


def _finish(store: Store, job: _Job, setup: _Setup, name: str, run_stats: dict) -> ComputeSummary:
    """Mark the run complete in the work file with its measured stats, then ``_publish`` it."""
    run_stats = {"seconds": time.perf_counter() - job.t0} | run_stats
    store.mark_complete(setup.run_id, run_stats)
    fault_point("compute.complete")
    return _publish(store, job, setup, name, run_stats)


def _publish(store: Store, job: _Job, setup: _Setup, name: str, run_stats: dict) -> ComputeSummary:
    """Publish the work file's complete run into the database (a short write) and remove the
    job's files; the summary line's numbers (``run_stats``: the run's stored stats)."""
    store.close()
    publish(work_file(job.opts.db, setup.run_id), job.opts.db, setup.run_id)
    progress_file(job.opts.db, setup.run_id).unlink(missing_ok=True)
    return ComputeSummary(
        run_name=name,
        run_id=setup.run_id,
        db=job.opts.db,
        examples=run_stats["unique_examples"],
        pairs=len(setup.candidates),
        components=len(setup.components),
        passes=run_stats["passes"],
        seconds=run_stats["seconds"],
        evictions=run_stats["evictions"],
    )


def _remove_leftovers(db: str, lock: RunLock) -> None:
    """Remove the work and progress files a job killed right after publishing its run left
    behind (under the run's lock: a job still holding it removes them itself)."""
    files = job_files(db, lock.run_id)
    if not any(p.exists() for p in files):
        return
    try:
        lock.acquire()
    except GradLensError:
        return
    try:
        for path in files:
            path.unlink(missing_ok=True)
    finally:
        lock.release()


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _write_setup(store: Store, setup: _Setup) -> None:
    """The run's components, examples (queries and the training examples some query uses) and
    candidates, in one transaction."""
    used = set(setup.candidates["candidate_id"])
    ex_rows = [
        (split, t.example.id, t.example.prompt, t.example.response, t.n_tokens)
        for split, toks in (("train", setup.train_tok), ("query", setup.query_tok))
        for t in toks.values()
        if split == "query" or t.example.id in used
    ]
    examples = pd.DataFrame(
        ex_rows, columns=["split", "example_id", "prompt", "response", "n_tokens"]
    )
    with store.transaction():
        store.insert("components", setup.run_id, component_frame(setup.components))
        fault_point("compute.setup")
        store.insert("examples", setup.run_id, examples)
        store.insert("candidates", setup.run_id, setup.candidates)


def _parse_projections(project: str | None) -> list[tuple[str, float]]:
    if not project:
        return []
    from gradlens.engine.projection import parse_project_spec

    try:
        return list(parse_project_spec(project))
    except ValueError as exc:
        raise GradLensError(f"--project: {exc}") from None


def build_projections(
    specs: Sequence[tuple[str, float]], components: Sequence[Component], seed: int, net
) -> list[ProjectionSet]:
    """The engine's projections for ``--project`` specs [(method, fraction), ...]: component c
    gets ``Projector(P_c, d_c, method, seed=component_seed(seed, c))`` on the model's device, or
    for ``kron`` a ``KroneckerSketch`` of its gradient oriented [out, in], applied to the
    factors."""
    if not specs:
        return []
    from gradlens.engine.projection import (
        KroneckerSketch,
        Projector,
        component_dims,
        component_seed,
    )

    device = str(next(net.parameters()).device)
    modules = dict(net.named_modules())
    sets = []
    for method, fraction in specs:
        dims = component_dims([c.n_params for c in components], fraction)
        if method == "kron":
            sketches = [
                KroneckerSketch(
                    _term_shape(c, modules[c.module]), d, component_seed(seed, idx), device
                )
                for idx, (c, d) in enumerate(zip(components, dims))
            ]
            label = method_label(method, fraction)
            sets.append(ProjectionSet(label, [k.project for k in sketches], factored=sketches))
            continue
        projectors = [
            Projector(c.n_params, d, method, seed=component_seed(seed, idx), device=device).project
            for idx, (c, d) in enumerate(zip(components, dims))
        ]
        sets.append(ProjectionSet(method_label(method, fraction), projectors))
    return sets


def _term_shape(comp: Component, module: torch.nn.Module) -> tuple[int, int]:
    """The engine's orientation of a component's gradient: [out, in] (nn.Linear and
    nn.Embedding store their weight that way; GPT-2's Conv1D stores it transposed)."""
    if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
        return tuple(comp.shape)
    return (comp.shape[1], comp.shape[0])
