"""What every run page reads: cached reads of the database (keyed by its version), the greedy
stepper every session on a run shares, the page's ``Context`` and the sidebar that builds it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit import config as st_config

from dashboard import state
from gradlens.errors import GradLensError
from gradlens.figures.textdiff import escape_markdown
from gradlens.runs import read as queries
from gradlens.runs.report import run_description
from gradlens.runs.viewstate import ViewState
from gradlens.selection import (
    BM25,
    FULL,
    GREEDY_HELDOUT,
    GreedyStepper,
    accuracy,
    chance,
    greedy_curve_table,
    greedy_select,
    headline_rows,
    per_component_accuracy,
)
from gradlens.selection.cells import CellIntervals, cell_intervals
from gradlens.store.arrays import RunArrays
from gradlens.store.connect import write_store

# Streamlit runs a full gc.collect() after every script run (runner.postScriptGC, meant for
# apps short of memory). With the dashboard's heap (~140k tracked objects: pandas, plotly,
# pyarrow, streamlit) one costs ~80 ms of CPU while holding the GIL, after every click of every
# session: with 8 users clicking once a second, most of the server's time, and every other
# session waits for it (benchmarks/many_users.py). Python's generational collector still
# reclaims cycles; the memory is held by numpy arrays, freed by reference counting.
st_config.set_option("runner.postScriptGC", False)


# -- cached reads (keyed by the file's (mtime, size), so a rewrite invalidates them) --------------
@st.cache_data(show_spinner=False, ttl=5)
def _version(db: str) -> tuple[float, int]:
    return queries.db_version(db)


def version(db: str) -> tuple[float, int]:
    return _version(db)


def refresh() -> None:
    """Forget the database's cached version now (a job just published a run)."""
    _version.clear()


@st.cache_data(show_spinner=False)
def run_list(db: str, ver: tuple) -> pd.DataFrame:
    return queries.list_runs(db)


@st.cache_data(show_spinner=False)
def run_info(db: str, run: str, ver: tuple) -> queries.RunInfo:
    return queries.run_info(db, run)


@st.cache_resource(show_spinner="Reading the run's dot products…", max_entries=16)
def arrays(db: str, run: str, method: str, ver: tuple) -> RunArrays:
    """Shared by every session (read-only: nothing mutates RunArrays)."""
    return queries.load_arrays(db, run, method)


class SharedStepper:
    """The GreedyStepper that every session on a run shares (``st.cache_resource``). Its scorer
    computes into preallocated buffers, so two sessions stepping at the same moment would
    overwrite each other's sums and one session's choice would leak into the other's: every
    call holds the stepper's lock (a call takes milliseconds)."""

    def __init__(self, stepper: GreedyStepper) -> None:
        self._stepper = stepper
        self._lock = threading.Lock()

    def next_component(self, subset: Sequence[int]) -> int | None:
        with self._lock:
            return self._stepper.next_component(subset)

    def subset_scores(self, subset: Sequence[int]) -> tuple[float, float]:
        with self._lock:
            return self._stepper.subset_scores(subset)

    def extend(self, subset: Sequence[int], steps: int | None = None) -> tuple[int, ...]:
        """``subset`` followed by greedy's next ``steps`` choices (every remaining one for None;
        fewer when the components run out)."""
        out = [int(c) for c in subset]
        while steps is None or len(out) < len(subset) + steps:
            nxt = self.next_component(out)
            if nxt is None:
                break
            out.append(nxt)
        return tuple(out)


@st.cache_resource(show_spinner=False, max_entries=16)
def stepper(db: str, run: str, method: str, objective: str, ver: tuple) -> SharedStepper:
    a = arrays(db, run, method, ver)
    return SharedStepper(GreedyStepper(*a.core, objective=objective, valid=a.valid))


@st.cache_data(show_spinner=False)
def single_accuracy(db: str, run: str, method: str, ver: tuple) -> np.ndarray:
    a = arrays(db, run, method, ver)
    return per_component_accuracy(*a.core, valid=a.valid)


@st.cache_data(show_spinner=False)
def stored_headline(db: str, run: str, ver: tuple) -> pd.DataFrame | None:
    """The headline rows ``gradlens select`` stored with the run (with their nulls and paired
    intervals); None when it never ran. Pages read these and never recompute them."""
    return queries.stored_headline(db, run)


@st.cache_data(show_spinner=False)
def null_band(db: str, run: str, method: str, ver: tuple) -> pd.DataFrame | None:
    """The stored null band of the greedy curve (step, band_lo, band_hi), None when not
    stored (``select`` not run, or a method it does not draw nulls for)."""
    return queries.null_band(db, run, method, "greedy_peak")


@st.cache_data(show_spinner=False)
def costs(db: str, run: str, ver: tuple) -> pd.DataFrame:
    """The run's cost table in the paper's Table 2 rows (``runs.costs``)."""
    return queries.costs(db, run)


def greedy_lines(db: str, run: str, method: str, ver: tuple) -> dict[str, float]:
    """The greedy chart's horizontal lines (accuracy objective): chance, then from the stored
    headline the full gradient (exact and each projection), BM25 top-1 and the whole greedy
    procedure's held-out estimate; without one, the full gradient alone."""
    lines = {"chance": baselines(db, run, method, ver)[0]}
    head = stored_headline(db, run, ver)
    if head is None:
        return lines | {"full gradient": baselines(db, run, "exact", ver)[1]}
    for row in headline_rows(head):
        if row.id in (FULL, BM25) or row.projection is not None:
            lines[row.metric] = row.accuracy
        elif row.id == GREEDY_HELDOUT:
            lines["greedy, whole procedure held out"] = row.accuracy
    return lines


def select_hint(db: str, run: str) -> str:
    """What to run for a run without a stored headline, as Markdown that shows the command's
    text as it is (whatever the path and run name hold)."""
    return escape_markdown(f"gradlens select --db {db} --run {run}")


@st.cache_data(show_spinner=False)
def curves(db: str, run: str, method: str, ver: tuple) -> pd.DataFrame:
    return queries.curves(db, run, method)


@st.cache_data(show_spinner=False)
def examples(db: str, run: str, ver: tuple) -> pd.DataFrame:
    return queries.examples(db, run)


# -- page context -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    """What a page works on: the database, its version, the run's info and the view."""

    db: str
    ver: tuple
    info: queries.RunInfo
    view: ViewState

    @property
    def arrays(self) -> RunArrays:
        return arrays(self.db, self.info.name, self.view.method, self.ver)

    @property
    def exact(self) -> RunArrays:
        return arrays(self.db, self.info.name, "exact", self.ver)


@st.cache_data(show_spinner=False)
def baselines(db: str, run: str, method: str, ver: tuple) -> tuple[float, float]:
    """(chance, full-gradient accuracy) of a run under ``method``."""
    a = arrays(db, run, method, ver)
    return chance(a), accuracy(*a.core, subset=np.arange(a.shape[2]), valid=a.valid)


@st.cache_data(show_spinner=False)
def cells(db: str, run: str, method: str, ver: tuple) -> CellIntervals:
    """Every component's interval and paired difference from the full gradient (tens of ms)."""
    return cell_intervals(arrays(db, run, method, ver))


@dataclass(frozen=True)
class RunPanel:
    """One run as a page draws it: its info, method, arrays, single-component accuracy (K,),
    chance, full-gradient accuracy and each component's intervals (``CellIntervals``)."""

    info: queries.RunInfo
    method: str
    arrays: RunArrays
    single: np.ndarray
    chance: float
    full: float
    cells: CellIntervals

    @property
    def short(self) -> str:
        """Run name (and method when not exact): table columns and legends."""
        return self.info.name + ("" if self.method == "exact" else f" [{self.method}]")

    @property
    def label(self) -> str:
        """``short`` plus the import's filter when the name does not already say it."""
        filters = self.info.config.get("filters") or {}
        where = ", ".join(f"{k}={v}" for k, v in filters.items() if str(v) not in self.info.name)
        return f"{self.short} ({where})" if where else self.short


def run_panel(ctx: Context, run: queries.RunInfo) -> RunPanel:
    """``run`` under the view's method (exact where ``run`` does not store that method)."""
    method = ctx.view.method if ctx.view.method in run.methods else "exact"
    single = single_accuracy(ctx.db, run.name, method, ctx.ver)
    chance, full = baselines(ctx.db, run.name, method, ctx.ver)
    a = arrays(ctx.db, run.name, method, ctx.ver)
    intervals = cells(ctx.db, run.name, method, ctx.ver)
    return RunPanel(run, method, a, np.asarray(single, dtype=np.float64), chance, full, intervals)


def runs_table(db: str, ver: tuple) -> pd.DataFrame:
    """Every run of the database, one row each: its ``list_runs`` columns, then candidates,
    projections, cost, model and data (left blank for a run whose info cannot be read)."""
    rows = []
    for r in run_list(db, ver).itertuples(index=False):
        row = {c: getattr(r, c) for c in ("name", "status", "created_at", "queries")}
        row |= {"components": r.components, "methods": r.methods}
        try:
            info = run_info(db, str(r.name), ver)
        except GradLensError:
            rows.append(row | {"run_id": r.run_id})
            continue
        d = run_description(info)
        row |= {"candidates": d.candidates, "projections": d.projections}
        row |= {k: info.stats.get(k) for k in ("seconds", "passes")}
        rows.append(row | {"model": d.model, "data": d.data, "run_id": r.run_id})
    return pd.DataFrame(rows)


def delete_run(db: str, run_id: str) -> None:
    """Delete a run (a short write, retried for a few seconds while readers or a publish hold
    the file: GradLensError after that) and forget every cached read, which the deletion made
    stale (the version key changes only after its ttl)."""
    with write_store(db, retry_seconds=5) as store:
        store.delete_run(run_id)
    st.cache_data.clear()
    st.cache_resource.clear()


def complete_runs(db: str, ver: tuple) -> list[str]:
    """Names of the database's complete runs, in the order ``list_runs`` gives."""
    runs = run_list(db, ver)
    return [str(n) for n in runs.loc[runs["status"] == "complete", "name"]]


def partner_runs(ctx: Context) -> tuple[list[queries.RunInfo], list[str]]:
    """The other complete runs of the same model and data as ``ctx``'s run (other query
    settings), and the names of all other complete runs."""
    others = [n for n in complete_runs(ctx.db, ctx.ver) if n != ctx.info.name]
    infos = (run_info(ctx.db, n, ctx.ver) for n in others)
    return [o for o in infos if queries.same_data(ctx.info, o)], others


def _database() -> tuple[str, tuple, list[str]] | None:
    """The sidebar's database input: (path, version, complete runs), or None with a message
    drawn when there is no database or no complete run in it."""
    db = st.sidebar.text_input("DuckDB file", state.db_path(), key="gl_db_input")
    state.set_db_path(db)
    if not Path(db).is_file():
        st.info(
            f"No database at {escape_markdown(db)}. Run `make demo` (or `gradlens compute …`) "
            "first."
        )
        return None
    try:
        ver = version(db)
        complete = complete_runs(db, ver)
    except GradLensError as exc:
        st.error(str(exc))
        return None
    if not complete:
        st.info(f"{escape_markdown(db)} holds no complete run yet.")
        return None
    return db, ver, complete


def _run_and_method(db: str, ver: tuple, complete: list[str]) -> ViewState:
    """The run and similarity selectboxes; the view with a run and method the database has."""
    sb = st.sidebar
    v = state.view()
    if v.run is None:  # a URL without a run: the first run, keeping the rest of the view
        state.correct_view(v := v.replace(run=complete[0]))
    elif v.run not in complete:  # a run that is gone: start over on the first one
        state.correct_view(v := v.replace(run=complete[0], subset=(), query=None, method="exact"))
    run = sb.selectbox("Run", complete, index=complete.index(v.run), key="gl_run")
    if run != v.run:
        state.set_view(v.replace(run=run, subset=(), query=None, method="exact"))
        v = state.view()
    methods = list(run_info(db, run, ver).methods)
    method = sb.selectbox(
        "Similarity",
        methods,
        index=methods.index(v.method if v.method in methods else "exact"),
        key="gl_method",
        help="exact dot products, or a random projection stored with the run",
    )
    if method != v.method:
        state.correct_view(v := v.replace(method=method))
    return v


def sidebar() -> Context | None:
    """Database, run, similarity method and the current subset, on every page. None (with a
    message drawn) when there is nothing to show."""
    found = _database()
    if found is None:
        return None
    db, ver, complete = found
    v = _run_and_method(db, ver, complete)
    info = run_info(db, v.run, ver)
    k = info.n_components
    subset = tuple(c for c in v.subset if c < k)
    if subset != v.subset:
        state.correct_view(v := v.with_subset(subset))
    names = arrays(db, v.run, "exact", ver).names
    st.sidebar.markdown(f"**Subset**: {len(subset)} of {k} components")
    if subset:
        more = " …" if len(subset) > 12 else ""
        st.sidebar.caption(", ".join(names[c] for c in subset[:12]) + more)
        st.sidebar.button(
            "Clear subset", on_click=lambda: state.set_view(state.view().with_subset(()))
        )
    return Context(db, ver, info, v)


def open_failure(query_id: str) -> None:
    """Open ``query_id`` on the failure page (keeps run, method and subset)."""
    state.set_view(state.view().replace(query=query_id))
    st.switch_page("views/failures.py", query_params=state.view().to_params())


@st.cache_data(show_spinner="Running greedy selection…")
def greedy_curve(db: str, run: str, method: str, objective: str, ver: tuple) -> pd.DataFrame:
    """The greedy curve stored by ``gradlens select`` (with its k-fold held-out curve), or,
    for a run that was never selected, computed here (without the held-out curve)."""
    stored = curves(db, run, method, ver)
    stored = stored[stored["objective"] == objective]
    if not stored.empty:
        return stored.reset_index(drop=True)
    a = arrays(db, run, method, ver)
    steps = greedy_select(*a.core, objective=objective, n_params=a.known_n_params, valid=a.valid)
    return greedy_curve_table(steps, a.names).assign(heldout_accuracy=np.nan)
