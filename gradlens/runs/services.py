"""Services that write runs (besides ``compute``): import long tables or bergson's gradient
stores, ``select`` (headline and greedy curves stored with the run); ``export --modules``.
Reading goes through ``gradlens.runs.read``."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gradlens.data.sources import parse_columns
from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.files import file_digest
from gradlens.options import SelectOptions
from gradlens.runs.costs import cost_table
from gradlens.runs.rank import full_set_inputs, index_hint
from gradlens.runs.read import arrays_of
from gradlens.selection import (
    Headline,
    Step,
    build_headline,
    greedy_curve_table,
    greedy_select,
    kfold_greedy,
)
from gradlens.selection.fullset import FULL_SET_OBJECTIVE, full_set_headline
from gradlens.store.arrays import RunArrays
from gradlens.store.bergson import (
    bergson_tables,
    module_names,
    read_bergson_store,
    store_digest,
    write_index,
)
from gradlens.store.connect import read_store, write_store
from gradlens.store.database import Store
from gradlens.store.importer import read_long_tables

__all__ = [
    "ImportSummary",
    "export_modules",
    "import_bergson",
    "SelectResult",
    "headline_of",
    "import_run",
    "run_headline",
    "select_run",
]


def parse_filters(filters: Sequence[str]) -> dict[str, str]:
    """``["setting=paraphrased"]`` -> ``{"setting": "paraphrased"}`` (GradLensError otherwise)."""
    parsed: dict[str, str] = {}
    for f in filters:
        col, sep, value = f.partition("=")
        if not sep or not col:
            raise GradLensError(f"--filter expects COL=VALUE, got '{f}'")
        parsed[col] = value
    return parsed


@dataclass(frozen=True)
class ImportSummary:
    name: str
    run_id: str
    db: str
    shape: tuple[int, int, int]
    n_dots: int
    seconds: float
    already: bool = False

    def line(self) -> str:
        if self.already:
            return (
                f"run '{self.name}' ({self.run_id}) is already imported in {self.db}: nothing to do"
            )
        n, b, k = self.shape
        return (
            f"run={self.name} imported queries={n} candidates={b} components={k} "
            f"dots={self.n_dots} seconds={self.seconds:.1f} db={self.db}"
        )


def import_run(
    db: str,
    name: str,
    dots_path: str,
    norms_path: str,
    n_params_path: str | None = None,
    filters: Sequence[str] = (),
) -> ImportSummary:
    """Import long tables (``gradlens.store.importer``) as a complete run named ``name``, in one
    transaction: the database shows the whole run, complete, or nothing of it."""
    parsed = parse_filters(filters)
    for p in (dots_path, norms_path, n_params_path):
        if p is not None and not Path(p).is_file():
            raise GradLensError(f"{p}: file not found")
    t0 = time.perf_counter()
    try:
        tables = read_long_tables(dots_path, norms_path, n_params_path, parsed or None)
        shape = tables.to_arrays().shape
    except ValueError as exc:
        raise GradLensError(str(exc)) from None
    config = {
        "source": "import",
        "dots": str(dots_path),
        "norms": str(norms_path),
        "n_params": n_params_path,
        "filters": parsed,
        "digest": [file_digest(p) for p in (dots_path, norms_path, n_params_path)],
    }
    queries = pd.unique(tables.candidates["query_id"])
    train = pd.unique(tables.candidates["candidate_id"])
    examples = pd.concat(
        [
            pd.DataFrame({"split": "query", "example_id": queries}),
            pd.DataFrame({"split": "train", "example_id": train}),
        ]
    )
    return _write_import(db, name, config, tables, examples, shape, t0)


def _write_import(
    db: str, name: str, config: dict, tables, examples: pd.DataFrame, shape, t0: float, also=None
) -> ImportSummary:
    """Write imported tables as a complete run (id: the hash of ``config``) in one transaction:
    the database shows the whole run, complete, or nothing of it. ``also(store, run_id)``
    writes more of the run inside that transaction."""
    run_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    with write_store(db) as store, store.transaction():
        row = store.run(run_id)
        if row is not None and row["status"] == "complete":
            return ImportSummary(row["name"], run_id, db, shape, 0, 0.0, already=True)
        store.delete_run(run_id)  # an incomplete run under this id starts over
        store.begin_run(run_id, name, config)
        store.insert("components", run_id, tables.components)
        store.insert("examples", run_id, examples)
        store.insert("candidates", run_id, tables.candidates)
        store.insert("dots", run_id, tables.dots)
        fault_point("import.write")
        store.insert("norms", run_id, tables.norms)
        if also is not None:
            also(store, run_id)
        seconds = time.perf_counter() - t0
        store.mark_complete(run_id, {"seconds": seconds, "imported": True})
    return ImportSummary(name, run_id, db, shape, len(tables.dots), seconds)


def import_bergson(
    db: str,
    name: str,
    train_dir: str,
    queries_dir: str,
    candidates: int | None = 5,
    columns: str | None = None,
) -> ImportSummary:
    """Import two bergson gradient stores (``gradlens.store.bergson``) as a complete run named
    ``name``: dots of BM25's ``candidates`` pairs per query, or of every pair (``None``), and
    every example's squared norms, under the stores' method (``exact`` or ``bergson:...``)."""
    t0 = time.perf_counter()
    cols = parse_columns(columns, "--columns")
    train = read_bergson_store(train_dir, cols, train=True)
    queries = read_bergson_store(queries_dir, cols, train=False)
    tables = bergson_tables(train, queries, candidates)
    try:
        shape = tables.to_arrays(train.method).shape
    except ValueError as exc:
        raise GradLensError(f"{queries_dir}: {exc}") from None
    config = {
        "source": "bergson",
        "bergson_train": str(train_dir),
        "bergson_queries": str(queries_dir),
        "candidates": candidates,  # None: every pair
        "method": train.method,
        "bergson": train.settings,
        "digest": store_digest(train) + store_digest(queries),
    }
    examples = pd.DataFrame(
        [
            (split, ex.id, ex.prompt, ex.response)
            for split, store in (("query", queries), ("train", train))
            for ex in store.examples
        ],
        columns=["split", "example_id", "prompt", "response"],
    )
    index = None
    if train.method != "exact":  # a projection GradLens cannot redo: the stored vectors serve

        def index(store: Store, run_id: str) -> None:
            write_index(db, store, run_id, train, queries)

    return _write_import(db, name, config, tables, examples, shape, t0, index)


def export_modules(db: str, run: str, subset: str | None, greedy: int | None) -> list[str]:
    """The module names (as bergson names them) of a subset of the run's components: the named
    ``subset`` (``NAME,NAME...``) or the first ``greedy`` components of its greedy curve
    (accuracy objective, the run's first method: the stored curve, else computed now)."""
    with read_store(db) as store:
        run_id = store.resolve(run)["run_id"]
        components = store.frame("components", run_id).sort_values("component_idx")
        if subset is not None:
            names = [n.strip() for n in subset.split(",") if n.strip()]
            if not names:
                raise GradLensError("--subset: expected NAME,NAME... (e.g. L3.up,L5.down)")
            return module_names(components, names)
        if greedy > len(components):
            raise GradLensError(f"--greedy {greedy}: the run has {len(components)} components")
        method = store.methods(run_id)[0]
        curve = (
            store.frame("selection_curves", run_id, method)
            if store.has_table("selection_curves")
            else pd.DataFrame(columns=["objective", "step", "component"])
        )
        curve = curve[curve["objective"] == "accuracy"].sort_values("step")
        if len(curve) >= greedy:
            names = list(curve["component"][:greedy])
        else:
            arrays = arrays_of(store, run_id, method)
            steps = greedy_select(*arrays.core, n_params=arrays.known_n_params, valid=arrays.valid)
            names = [arrays.names[s.component_idx] for s in steps[:greedy]]
    return module_names(components, names)


def run_headline(exact: RunArrays, *args, **settings) -> pd.DataFrame:
    """The headline table of a run's exact arrays (n_params / BM25 only where known) and its
    projected methods: ``headline_of``'s table, with the same arguments."""
    return headline_of(exact, *args, **settings).table


def headline_of(
    exact: RunArrays,
    projected: dict[str, RunArrays] | None = None,
    folds: int = 5,
    seed: int = 0,
    null_draws: int = 20,
    steps: list[Step] | None = None,
) -> Headline:
    """``selection.build_headline`` of a run (``run_headline`` with the nulls and timings)."""
    return build_headline(
        *exact.core,
        exact.names,
        valid=exact.valid,
        n_params=exact.known_n_params,
        bm25=exact.known_bm25,
        projected={m: (a.dots, a.query_sq, a.cand_sq) for m, a in (projected or {}).items()},
        folds=folds,
        seed=seed,
        null_draws=null_draws,
        steps=steps,
    )


#: ``select_timings.what`` values: in-sample greedy (all K steps), the k-fold held-out curve of
#: an objective, the whole-procedure held-out greedy estimate, the held-out best single
#: component and the permutation nulls (both procedures).
GREEDY, KFOLD_CURVE, GREEDY_HELDOUT = "greedy", "kfold_curve", "greedy_heldout"
BEST_SINGLE_HELDOUT, NULL = "best_single_heldout", "null"


def greedy_curves(
    arrays: RunArrays, folds: int, seed: int, known: Headline | None = None
) -> tuple[pd.DataFrame, list[tuple[str, str, float]]]:
    """Greedy curves (accuracy and fidelity objectives) with the k-fold held-out curve, as
    ``selection_curves`` rows (without run_id), and (what, objective, seconds) of each greedy
    run. ``known``: the run's headline, whose in-sample accuracy greedy and whose held-out
    estimate under fold seed ``seed`` (that k-fold run itself) are reused, not recomputed."""
    frames, timings = [], []
    for objective in ("accuracy", "fidelity"):
        t0 = time.perf_counter()
        if known is not None and objective == "accuracy":
            steps = known.steps
        else:
            steps = greedy_select(
                *arrays.core,
                objective=objective,
                n_params=arrays.known_n_params,
                valid=arrays.valid,
            )
            timings.append((GREEDY, objective, time.perf_counter() - t0))
        held = np.full(len(steps), np.nan)
        if 2 <= folds <= len(arrays.target):
            t0 = time.perf_counter()
            if known is not None and objective == "accuracy" and known.heldout_curve is not None:
                h = known.heldout_curve
            else:
                h = kfold_greedy(
                    *arrays.core, folds=folds, seed=seed, objective=objective, valid=arrays.valid
                ).accuracy
                timings.append((KFOLD_CURVE, objective, time.perf_counter() - t0))
            held[: len(h)] = h
        frame = greedy_curve_table(steps, arrays.names)
        frame.insert(0, "objective", objective)
        frame.insert(0, "method", arrays.method)
        frames.append(frame.assign(heldout_accuracy=held))
    return pd.concat(frames, ignore_index=True), timings


@dataclass(frozen=True, eq=False)
class SelectResult:
    """What ``select`` computed: the run's row, its shape (N, b, K), the headline table, the
    seconds each greedy objective took (in-sample, all steps), the run's stored stats, the
    cost table (``runs.costs.cost_table``) and the options it ran with."""

    row: dict
    shape: tuple[int, int, int]
    table: pd.DataFrame
    timings: dict
    stats: dict
    costs: pd.DataFrame
    options: SelectOptions


def _band_rows(headline: Headline, draws: int, seed: int) -> pd.DataFrame:
    """``null_bands`` rows (without run_id) of the headline's nulls."""
    frames = []
    for procedure, null in headline.nulls.items():
        x = np.arange(len(null.band_lo))
        where = {"step": x + 1} if procedure == "greedy_peak" else {"component_idx": x}
        frames.append(
            pd.DataFrame(
                {"method": "exact", "procedure": procedure, **where}
                | {"band_lo": null.band_lo, "band_hi": null.band_hi, "draws": draws, "seed": seed}
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _timing_rows(method: str, rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["what", "objective", "seconds"]).assign(method=method)


def _computed(opts: SelectOptions, arrays: dict[str, RunArrays]):
    """The headline (exact and projected arrays), every method's curves and the
    ``select_timings`` rows, timed."""
    exact = arrays.pop("exact")
    t0 = time.perf_counter()
    steps = greedy_select(*exact.core, n_params=exact.known_n_params, valid=exact.valid)
    timed = [(GREEDY, "accuracy", time.perf_counter() - t0)]
    head = headline_of(exact, arrays, opts.folds, opts.seed, opts.null_draws, steps)
    timed += [
        (what, "accuracy", head.timings[what])
        for what in (GREEDY_HELDOUT, BEST_SINGLE_HELDOUT, NULL)
        if what in head.timings
    ]
    curves, more = greedy_curves(exact, opts.folds, opts.seed, head)
    timings = [_timing_rows("exact", timed + more)]
    frames = [curves]
    for method, a in arrays.items():
        frame, t = greedy_curves(a, opts.folds, opts.seed)
        frames.append(frame)
        timings.append(_timing_rows(method, t))
    return exact.shape, head, pd.concat(frames), pd.concat(timings, ignore_index=True)


def _store_selection(db: str, run_id: str, tables: dict[str, pd.DataFrame]) -> None:
    """Replace the run's rows of each table in one transaction (the old rows or the new ones,
    never none or a mix)."""
    with write_store(db) as store, store.transaction():
        for i, (table, frame) in enumerate(tables.items()):
            store.con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
            if i == 0:
                fault_point("select.write")
            store.insert(table, run_id, frame)


def _full_set(opts: SelectOptions, row: dict, exact: RunArrays, head: Headline):
    """The full-set rows of a run with an index (``selection.fullset``; with
    ``--full-set-greedy`` also greedy by full-set recall@1), None for a run without one
    (GradLensError saying what to run when ``--full-set-greedy`` asks for them)."""
    inputs = full_set_inputs(opts.db, row["run_id"], exact)
    if inputs is None:
        if opts.full_set_greedy:
            raise GradLensError(f"--full-set-greedy: {index_hint(row, opts.db)}")
        return None
    return full_set_headline(
        inputs, head.steps, opts.folds, opts.seed, opts.null_draws, opts.full_set_greedy
    )


def _with_full_set(opts: SelectOptions, full, head: Headline, stored, curves, timings):
    """The printed table, stored headline rows, curves and timings with the full-set rows
    (stored under the index's method), curve and times added."""
    if full is None:
        return head.table, stored, curves, timings
    rows = full.table.assign(
        method=full.method,
        position=np.arange(len(full.table)),
        folds=opts.folds,
        seed=opts.seed,
        null_draws=opts.null_draws,
    )
    times = [(what, FULL_SET_OBJECTIVE, s) for what, s in full.timings.items()]
    times = _timing_rows(full.method, times)
    return (
        pd.concat([head.table, full.table], ignore_index=True),
        pd.concat([stored, rows], ignore_index=True),
        pd.concat([curves, full.curve], ignore_index=True) if full.curve is not None else curves,
        pd.concat([timings, times], ignore_index=True),
    )


def select_run(opts: SelectOptions) -> SelectResult:
    """Headline table of a complete run (every stored method) with its permutation nulls, and
    its greedy curves; the curves, the headline rows, the greedy null band and the timings are
    written with the run (``selection_curves``, ``headline``, ``null_bands``,
    ``select_timings``), replacing earlier ones in one transaction."""
    with Store(opts.db, read_only=True) as store:
        row = store.resolve(opts.run)
        if row["status"] != "complete":
            raise GradLensError(
                f"run '{row['name']}' is {row['status']}: rerun its compute command to finish it"
            )
        run_id = row["run_id"]
        arrays = {m: arrays_of(store, run_id, m) for m in store.methods(run_id)}
    if not arrays:
        raise GradLensError(
            f"run '{row['name']}' has no queries (a training set indexed on its own): nothing "
            "to select; use gradlens rank"
        )
    if "exact" not in arrays:
        raise GradLensError(
            f"run '{row['name']}' holds {', '.join(arrays)} dots only (a projected bergson "
            "store): select needs exact ones (bergson build with --projection_dim 0)"
        )
    methods, exact = tuple(arrays), arrays["exact"]
    shape, head, curves, timings = _computed(opts, arrays)
    full = _full_set(opts, row, exact, head)
    fault_point("select.computed")
    stored = head.table.assign(
        method="exact",
        position=np.arange(len(head.table)),
        folds=opts.folds,
        seed=opts.seed,
        null_draws=opts.null_draws,
    )
    table, stored, curves, timings = _with_full_set(opts, full, head, stored, curves, timings)
    _store_selection(
        opts.db,
        run_id,
        {
            "selection_curves": curves,
            "headline": stored,
            "null_bands": _band_rows(head, opts.null_draws, opts.seed),
            "select_timings": timings,
        },
    )
    stats = json.loads(row["stats"]) if row.get("stats") else {}
    greedy = timings[(timings["method"] == "exact") & (timings["what"] == GREEDY)]
    costs = cost_table(stats, timings, shape[0], methods, opts.folds, opts.null_draws)
    by_objective = dict(zip(greedy["objective"], greedy["seconds"]))
    return SelectResult(row, shape, table, by_objective, stats, costs, opts)
