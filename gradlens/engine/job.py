"""The compute job: datasets -> candidates -> gradients -> dot products in DuckDB (resumable).

The job validates its inputs, loads the model, picks BM25 candidates, then holds the run's lock
while it computes the queries in the order ``gradlens.engine.schedule`` gives (each unique
example gets ONE forward+backward within the memory budget) into its own work file
(``gradlens.store.workfile``), reporting progress after every query; finally it publishes the
run into the database. ``compute`` is the Python API, ``run_compute`` the CLI's entry point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

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
from gradlens.data.sources import file_columns
from gradlens.engine.capture import GradientEngine
from gradlens.engine.costs import measure_uncached
from gradlens.engine.distributed import DistContext, init_distributed
from gradlens.engine.indexing import (
    IndexBuild,
    IndexExtractor,
    example_frame,
    fill_index,
    index_todo,
)
from gradlens.engine.projection import (
    IndexSpec,
    build_index_sets,
    build_projections,
    method_label,
    parse_index,
    parse_projections,
)
from gradlens.engine.schedule import (
    QueryResult,
    ScheduleStats,
    default_max_memory,
    drop_written_norms,
    iter_schedule,
    parse_memory,
    query_schedule,
)
from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.files import ProgressReporter
from gradlens.models.adapters import adapter_fingerprint, check_adapter_options
from gradlens.models.loading import (
    Component,
    discover_components,
    load_model,
    model_fingerprint,
    resolve_device,
)
from gradlens.options import ComputeOptions, IndexOptions
from gradlens.store.connect import read_store, write_store
from gradlens.store.database import Store, check_database
from gradlens.store.index import recorded_methods
from gradlens.store.workfile import (
    RunLock,
    job_files,
    open_work_store,
    progress_file,
    publish,
    work_dir,
    work_file,
)

log = logging.getLogger(__name__)


#: What Ctrl-C (SIGINT) raises: Python's KeyboardInterrupt, or DuckDB's own exception when the
#: signal arrives during a write.
INTERRUPTS = (KeyboardInterrupt, duckdb.InterruptException)
#: Examples per forward/backward on a GPU when --batch-size is not given (CPU: 1; batching
#: measured no faster there, see benchmarks/RESULTS.md).
DEFAULT_CUDA_BATCH = 8


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
    indexed: tuple[str, ...] = ()

    def line(self) -> str:
        if self.already_complete and not self.indexed:
            return (
                f"run '{self.run_name}' ({self.run_id}) is already complete in {self.db}: "
                "nothing to do"
            )
        index = f" index={','.join(self.indexed)}" if self.indexed else ""
        if self.already_complete:
            return (
                f"run={self.run_name} already complete; indexed {self.examples} examples"
                f"{index} passes={self.passes} seconds={self.seconds:.1f} db={self.db}"
            )
        return (
            f"run={self.run_name} examples={self.examples} pairs={self.pairs} "
            f"components={self.components} passes={self.passes} seconds={self.seconds:.1f}"
            f"{index} db={self.db}"
        )


def component_rows(components: Sequence[Component]) -> pd.DataFrame:
    """The run's rows of the ``components`` table, one per component in index order."""
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
    loads (start time, memory budget in bytes or None, parsed projections, device, parsed
    index entries)."""

    opts: ComputeOptions
    t0: float
    max_memory: int | None
    projections: list[tuple[str, float]]
    device: str
    index: list[IndexSpec] = dataclasses.field(default_factory=list)


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
    the training set, ``--project``, ``--index``, ``--adapter`` and ``--max-memory``.
    GradLensError with one line otherwise. Returns (train, queries, projections, memory budget
    in bytes or None). The dashboard runs this before it starts a job, so a browser user gets
    the CLI's messages. An empty ``queries`` path (``gradlens index``) means no queries."""
    proj_specs = parse_projections(opts.project)
    parse_index(opts.index)
    check_adapter_options(opts.adapter, opts.adapter_merge)
    budget = parse_memory(opts.max_memory) if opts.max_memory else None
    train = load_examples(opts.train, file_columns(opts, "train"), row_ids=True)
    queries = load_examples(opts.queries, file_columns(opts, "queries")) if opts.queries else []
    if queries:
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
        job = _Job(opts, t0, budget, proj_specs, device, parse_index(opts.index))
        return _compute_run(ctx, job, train, queries)
    finally:
        ctx.close()


def run_index(opts: IndexOptions) -> ComputeSummary | None:
    """``gradlens index``: a run of the training set alone, with its index and no queries (the
    compute job with an empty query set)."""
    fields = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}
    return run_compute(ComputeOptions(queries="", **fields))


def _by_id(toks: list[Tokenized]) -> dict[str, Tokenized]:
    return {t.example.id: t for t in toks}


def _setup(job: _Job, net, tokenizer, train: list[Example], queries: list[Example]) -> _Setup:
    o = job.opts
    candidates = bm25_candidates(train, queries, o.candidates, o.bm25_on)
    fault_point("compute.bm25")
    components = discover_components(net)
    for spec in job.index:
        try:
            spec.index_components(components)
        except ValueError as exc:
            raise GradLensError(f"--index: {exc}") from None
    config = ComputeConfig.from_options(
        o,
        model_hash=model_fingerprint(net),
        train_hash=content_hash(train),
        queries_hash=content_hash(queries),
        projections=tuple(method_label(m, f) for m, f in job.projections),
        adapter_hash=adapter_fingerprint(o.adapter) if o.adapter else None,
    )
    config = dataclasses.replace(  # how the files were read: stated, not in the key
        config,
        train_columns=file_columns(o, "train").mapped(),
        query_columns=file_columns(o, "queries").mapped(),
        train_ids="str(row index)" if train and train[0].id_from_row else None,
    )
    return _Setup(
        components=components,
        config=config,
        run_id=config.key(),
        candidates=candidates,
        train_tok=_by_id(tokenize_all(tokenizer, train, o.loss_on, o.max_length, o.system_prompt)),
        query_tok=_by_id(
            tokenize_all(tokenizer, queries, o.loss_on, o.max_length, o.system_prompt)
        ),
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
                if job.index:  # the index of a published run is computed under its lock
                    lock.acquire()
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


def _results(ctx, engine, setup: _Setup, query_cands, budget, bsz, stats, progress, keep):
    """QueryResults to write on rank 0 (single process: all; torchrun: gathered from every
    rank, one query per rank and round; other ranks get nothing). ``keep``: the index's
    extractor (or None), see ``iter_schedule``."""
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
            keep=keep,
        )
        return
    # contiguous slices of the schedule keep each rank's candidates shared
    order = query_schedule(query_cands)
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
        keep=keep,
    )
    for _ in range(rounds):
        gathered = ctx.gather(next(results, None))
        yield from (res for res in gathered or [] if res is not None)


def _compute_run(
    ctx: DistContext, job: _Job, train: list[Example], queries: list[Example]
) -> ComputeSummary | None:
    o = job.opts
    net, tokenizer = load_model(
        o.model,
        device=job.device,
        trust_remote_code=o.trust_remote_code,
        dtype=o.dtype,
        adapter=o.adapter,
        adapter_merge=o.adapter_merge,
    )
    fault_point("compute.model")
    setup = _setup(job, net, tokenizer, train, queries)
    name = o.run or f"{_stem(o.queries or o.train)}-{setup.run_id[:6]}"
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
    the work file and reports progress, then publishes the run into the database. With
    ``--index`` the examples passed for the pairs give their index rows, the rest get a pass
    each; a run already published (or complete) gets only its index."""
    o = job.opts
    name, done, run_id = state["name"], state["done"], setup.run_id
    build, wanted = _index_build(ctx, job, setup, state)
    if state["status"] == "published":
        return _index_published(ctx, job, setup, name, net, build, wanted)
    if state["status"] == "complete":  # computed by a job that stopped before publishing it
        _index_only(ctx, job, setup, name, net, build, wanted)
        if not ctx.is_main:
            return None
        return _publish(store, job, setup, name, json.loads(state["stats"]), build)
    query_cands = {
        q: list(g.sort_values("rank")["candidate_id"])
        for q, g in setup.candidates.groupby("query_id", sort=False)
        if q not in done
    }
    if done and ctx.is_main:
        log.warning(
            "resuming run '%s': %d of %d queries already stored", name, len(done), n_queries
        )
    engine, projections = _engine(job, setup, net)
    extract = IndexExtractor(engine, job.index, setup.components, wanted) if job.index else None
    budget = job.max_memory if job.max_memory is not None else default_max_memory()
    on_gpu = str(engine.device).startswith("cuda")
    bsz = o.batch_size or (DEFAULT_CUDA_BATCH if on_gpu else 1)
    written = store.normed_examples(run_id, "train") if ctx.is_main else set()
    stats = ScheduleStats()
    reporting = nullcontext(None)
    if ctx.is_main:
        where = progress_file(o.db, run_id)
        reporter = ProgressReporter(where, name, len(done), n_queries, run_id, str(o.db))
        reporting = reporter.reporting(INTERRUPTS)
    with engine, reporting as reporter:
        progress = not o.no_progress
        for res in _results(ctx, engine, setup, query_cands, budget, bsz, stats, progress, extract):
            for row in res.kept:  # before the query's rows: a rerun finds them written
                build.write(row)
            _write_query(store, run_id, drop_written_norms(res, written))
            reporter.advance(engine.passes)
        if extract is not None:
            _fill_rest(ctx, engine, extract, build, setup, bsz, reporter)
        stats.passes = engine.passes
    indexed = set(setup.train_tok) if job.index else set()
    run_stats = {
        "passes": ctx.sum(stats.passes),
        "unique_examples": len(setup.query_tok)
        + len(set(setup.candidates["candidate_id"]) | indexed),
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
    if build is not None:
        build.finalize()
    run_stats |= _uncached(job, setup, net, projections)
    return _finish(store, job, setup, name, run_stats, build)


def _engine(job: _Job, setup: _Setup, net) -> tuple[GradientEngine, list]:
    """The job's engine: the ``--project`` projections (returned too) and those only the index
    needs, with the run's seeds."""
    o = job.opts
    projections = build_projections(job.projections, setup.components, o.seed, net)
    shared = [p.method for p in projections]
    engine = GradientEngine(
        net,
        setup.components,
        reduction=o.reduction,
        projections=projections,
        index_projections=build_index_sets(job.index, setup.components, o.seed, net, shared),
    )
    return engine, projections


def _uncached(job: _Job, setup: _Setup, net, projections) -> dict:
    """``{"uncached_projection": ...}``: the paper's procedure, timed for the cost table
    (engine.costs), where the run stores projections; {} otherwise."""
    if not projections:
        return {}
    all_cands = {
        q: list(g.sort_values("rank")["candidate_id"])
        for q, g in setup.candidates.groupby("query_id", sort=False)
    }
    measured = measure_uncached(
        net,
        setup.components,
        projections,
        setup.query_tok,
        setup.train_tok,
        all_cands,
        job.opts.reduction,
    )
    return {"uncached_projection": measured}


def _toks(setup: _Setup) -> dict[str, dict[str, Tokenized]]:
    return {"train": setup.train_tok, "query": setup.query_tok}


def _index_build(ctx, job: _Job, setup: _Setup, state: dict):
    """(rank 0's IndexBuild or None, the rows some method still lacks on every rank)."""
    if not job.index:
        return None, {}
    build, wanted = None, {}
    if ctx.is_main:
        recorded = ()
        if state["status"] == "published":
            recorded = _recorded_methods(job.opts.db, setup.run_id)
        row_ids = {split: list(toks) for split, toks in _toks(setup).items()}
        build = IndexBuild(
            job.opts.db, setup.run_id, job.index, setup.components, row_ids, recorded
        )
        shared = build.share(json.loads(setup.config.to_json()))
        if shared:
            log.info("index: %d training rows copied from another run's index", shared)
        wanted = build.missing()
    return build, ctx.broadcast(wanted)


def _recorded_methods(db: str, run_id: str) -> list[str]:
    """The methods the database already describes for the run's index."""
    with read_store(db) as target:
        return recorded_methods(target.con, run_id)


def _fill_rest(ctx, engine, extract, build, setup: _Setup, bsz: int, reporter) -> None:
    """After the queries: one pass for each row still missing (rank 0 knows which); the
    progress file counts them as units after the queries."""
    wanted = ctx.broadcast(build.missing() if ctx.is_main else None)
    extract.wanted = {split: set(ids) for split, ids in wanted.items()}
    todo = index_todo(wanted, _toks(setup))
    if reporter is not None:
        reporter.total += len(todo)

    def advance(n: int) -> None:
        for _ in range(n):
            reporter.advance(engine.passes)

    fill_index(ctx, engine, extract, build, todo, bsz, advance if reporter is not None else None)


def _index_only(ctx, job: _Job, setup: _Setup, name: str, net, build, wanted) -> int:
    """The index rows of a run whose pairs are all computed: one pass per missing row (every
    rank), then rank 0 finalizes. Returns the passes of all ranks."""
    passes = 0
    if wanted:
        o = job.opts
        sets = build_index_sets(job.index, setup.components, o.seed, net)
        engine = GradientEngine(net, setup.components, o.reduction, index_projections=sets)
        extract = IndexExtractor(engine, job.index, setup.components, wanted)
        todo = index_todo(wanted, _toks(setup))
        on_gpu = str(engine.device).startswith("cuda")
        bsz = o.batch_size or (DEFAULT_CUDA_BATCH if on_gpu else 1)
        reporting, advance = nullcontext(None), None
        if ctx.is_main:
            where = progress_file(o.db, setup.run_id)
            reporter = ProgressReporter(where, name, 0, len(todo), setup.run_id, str(o.db))
            reporting = reporter.reporting(INTERRUPTS)

            def advance(n: int) -> None:
                for _ in range(n):
                    reporter.advance(engine.passes)

        with engine, reporting:
            fill_index(ctx, engine, extract, build, todo, bsz, advance)
        passes = ctx.sum(engine.passes)
    if build is not None:
        build.finalize()
    return passes


def _index_published(ctx, job: _Job, setup: _Setup, name: str, net, build, wanted):
    """A run already in the database: compute, move into place and record the index methods
    it lacks (its rows in one short transaction of their own)."""
    o = job.opts
    passes = _index_only(ctx, job, setup, name, net, build, wanted)
    if not ctx.is_main:
        return None
    k, run_id = len(setup.components), setup.run_id
    if build is None or not build.labels:
        return ComputeSummary(name, run_id, o.db, 0, 0, k, 0, 0.0, already_complete=True)
    build.move()
    with write_store(o.db) as target, target.transaction():
        build.record(target, example_frame(setup.train_tok))
    progress_file(o.db, run_id).unlink(missing_ok=True)
    seconds = time.perf_counter() - job.t0
    rows = sum(len(ids) for ids in build.row_ids.values())
    return ComputeSummary(
        name, run_id, o.db, rows, 0, k, passes, seconds, True, indexed=tuple(build.labels)
    )


def _write_query(store: Store, run_id: str, res: QueryResult) -> None:
    """One query's dots, its new norms and its progress row in one transaction, so a job
    stopped at any point resumes at exactly the queries without a progress row."""
    with store.transaction():
        store.insert("dots", run_id, res.dots)
        fault_point("compute.write")
        store.insert("norms", run_id, res.norms)
        store.insert("progress", run_id, pd.DataFrame({"query_id": [res.query_id]}))


def _finish(store: Store, job: _Job, setup: _Setup, name: str, run_stats: dict, build):
    """Mark the run complete in the work file with its measured stats, then ``_publish`` it."""
    run_stats = {"seconds": time.perf_counter() - job.t0} | run_stats
    store.mark_complete(setup.run_id, run_stats)
    fault_point("compute.complete")
    return _publish(store, job, setup, name, run_stats, build)


def _publish(store: Store, job: _Job, setup: _Setup, name: str, run_stats: dict, build):
    """Publish the work file's complete run into the database (a short write; its finished
    index moved into place first and described in the same transaction) and remove the
    job's files; the summary line's numbers (``run_stats``: the run's stored stats)."""
    store.close()
    record = None
    if build is not None and build.labels:
        build.move()
        examples = example_frame(setup.train_tok)

        def record(target: Store) -> None:
            build.record(target, examples)

    publish(work_file(job.opts.db, setup.run_id), job.opts.db, setup.run_id, record)
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
        indexed=tuple(build.labels) if build is not None else (),
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
        store.insert("components", setup.run_id, component_rows(setup.components))
        fault_point("compute.setup")
        store.insert("examples", setup.run_id, examples)
        store.insert("candidates", setup.run_id, setup.candidates)
