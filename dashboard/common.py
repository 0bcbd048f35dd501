"""What every page shares: the lasting view state (one object in session state, mirrored in the
URL), cached reads of the database, the sidebar, and small widgets."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from streamlit import config as st_config

from gradlens.errors import GradLensError
from gradlens.figures.textdiff import escape_markdown
from gradlens.runs import read as queries
from gradlens.runs.services import run_headline
from gradlens.runs.viewstate import ViewState
from gradlens.selection import GreedyStepper, greedy_select, per_component_accuracy
from gradlens.store.arrays import RunArrays

# Streamlit runs a full gc.collect() after every script run (runner.postScriptGC, meant for
# apps short of memory). With the dashboard's heap (~140k tracked objects: pandas, plotly,
# pyarrow, streamlit) one costs ~80 ms of CPU while holding the GIL, after every click of every
# session: with 8 users clicking once a second, most of the server's time, and every other
# session waits for it (benchmarks/many_users.py). Python's generational collector still
# reclaims cycles; the memory is held by numpy arrays, freed by reference counting.
st_config.set_option("runner.postScriptGC", False)

VIEW_KEY = "gl_view"
HISTORY_KEY = "gl_history"
DB_KEY = "gl_db"
DEFAULT_DB = "data/demo.duckdb"


# -- lasting state ------------------------------------------------------------------------------
def view() -> ViewState:
    """The session's ViewState; a new session starts from the URL's query parameters."""
    if VIEW_KEY not in st.session_state:
        st.session_state[VIEW_KEY] = ViewState.from_params(st.query_params.to_dict())
        st.session_state[HISTORY_KEY] = []
    return st.session_state[VIEW_KEY]


def set_view(new: ViewState) -> None:
    """Replace the view; a changed subset is remembered so that "Step back" restores it."""
    old = view()
    if new.subset != old.subset:
        st.session_state[HISTORY_KEY].append(old.subset)
    st.session_state[VIEW_KEY] = new


def step_back() -> None:
    history = st.session_state.get(HISTORY_KEY, [])
    if history:
        st.session_state[VIEW_KEY] = view().with_subset(history.pop())


def sync_url() -> None:
    """Mirror the view into the URL (navigation between pages clears query parameters)."""
    params = view().to_params()
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def db_path() -> str:
    if DB_KEY not in st.session_state:
        st.session_state[DB_KEY] = os.environ.get("GRADLENS_DB", DEFAULT_DB)
    return st.session_state[DB_KEY]


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

    def candidate_scores(self, subset: Sequence[int]) -> np.ndarray:
        with self._lock:
            return self._stepper.candidate_scores(subset)


@st.cache_resource(show_spinner=False, max_entries=16)
def stepper(db: str, run: str, method: str, objective: str, ver: tuple) -> SharedStepper:
    a = arrays(db, run, method, ver)
    return SharedStepper(GreedyStepper(*a.core, objective=objective, valid=a.valid))


@st.cache_data(show_spinner=False)
def single_accuracy(db: str, run: str, method: str, ver: tuple) -> np.ndarray:
    a = arrays(db, run, method, ver)
    return per_component_accuracy(*a.core, valid=a.valid)


@st.cache_data(show_spinner="Computing the headline (greedy, 5-fold held-out over 3 seeds)…")
def headline(db: str, run: str, ver: tuple) -> tuple[pd.DataFrame, dict]:
    """The run's headline table over every stored method, and measured greedy timings."""
    info = run_info(db, run, ver)
    exact = arrays(db, run, "exact", ver)
    projected = {m: arrays(db, run, m, ver) for m in info.methods if m != "exact"}
    t0 = time.perf_counter()
    greedy_select(*exact.core, valid=exact.valid)
    timings = {"accuracy": time.perf_counter() - t0}
    return run_headline(exact, projected), timings


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


def sidebar() -> Context | None:
    """Database, run, similarity method and the current subset, on every page. None (with a
    message drawn) when there is nothing to show."""
    sb = st.sidebar
    db = sb.text_input("DuckDB file", db_path(), key="gl_db_input")
    st.session_state[DB_KEY] = db
    if not Path(db).is_file():
        st.info(
            f"No database at {escape_markdown(db)}. Run `make demo` (or `gradlens compute …`) "
            "first."
        )
        return None
    try:
        ver = version(db)
        runs = run_list(db, ver)
    except GradLensError as exc:
        st.error(str(exc))
        return None
    complete = [str(n) for n in runs.loc[runs["status"] == "complete", "name"]]
    if not complete:
        st.info(f"{escape_markdown(db)} holds no complete run yet.")
        return None
    v = view()
    if v.run is None:  # a URL without a run: the first run, keeping the rest of the view
        st.session_state[VIEW_KEY] = v = v.replace(run=complete[0])
    elif v.run not in complete:  # a run that is gone: start over on the first one
        v = v.replace(run=complete[0], subset=(), query=None, method="exact")
        st.session_state[VIEW_KEY] = v
    run = sb.selectbox("Run", complete, index=complete.index(v.run), key="gl_run")
    if run != v.run:
        set_view(v.replace(run=run, subset=(), query=None, method="exact"))
        v = view()
    info = run_info(db, run, ver)
    methods = list(info.methods)
    method = v.method if v.method in methods else "exact"
    method = sb.selectbox(
        "Similarity",
        methods,
        index=methods.index(method),
        key="gl_method",
        help="exact dot products, or a random projection stored with the run",
    )
    if method != v.method:
        st.session_state[VIEW_KEY] = v.replace(method=method)
        v = view()
    k = info.n_components
    subset = tuple(c for c in v.subset if c < k)
    if subset != v.subset:
        st.session_state[VIEW_KEY] = v = v.with_subset(subset)
    names = arrays(db, run, "exact", ver).names
    sb.markdown(f"**Subset**: {len(subset)} of {k} components")
    if subset:
        sb.caption(", ".join(names[c] for c in subset[:12]) + (" …" if len(subset) > 12 else ""))
        sb.button("Clear subset", on_click=lambda: set_view(view().with_subset(())))
    return Context(db, ver, info, v)


def download(frame: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    st.download_button(
        label, frame.to_csv(index=False).encode(), f"{name}.csv", "text/csv", key=f"dl_{name}"
    )


def fmt4(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.4f}"


def context() -> Context | None:
    """The Context the sidebar built for this run of the script (None without a run)."""
    return st.session_state.get("gl_ctx")


def open_failure(query_id: str) -> None:
    """Open ``query_id`` on the failure page (keeps run, method and subset)."""
    set_view(view().replace(query=query_id))
    st.switch_page("views/failures.py", query_params=view().to_params())


@st.cache_data(show_spinner="Running greedy selection…")
def greedy_curve(db: str, run: str, method: str, objective: str, ver: tuple) -> pd.DataFrame:
    """The greedy curve stored by ``gradlens select`` (with its k-fold held-out curve), or,
    for a run that was never selected, computed here (without the held-out curve)."""
    from gradlens.selection import curve_frame

    stored = curves(db, run, method, ver)
    stored = stored[stored["objective"] == objective]
    if not stored.empty:
        return stored.reset_index(drop=True)
    a = arrays(db, run, method, ver)
    steps = greedy_select(*a.core, objective=objective, n_params=a.known_n_params, valid=a.valid)
    return curve_frame(steps, a.names).assign(heldout_accuracy=np.nan)
