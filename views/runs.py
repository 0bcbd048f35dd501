"""Runs: every run in the database with its status, size, configuration and cost; two runs'
headlines side by side; deleting a run. Works without a complete run (``state.context()`` None)
as long as the database file exists."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from dashboard import common, state, widgets
from gradlens.errors import GradLensError
from gradlens.figures.textdiff import escape_markdown
from gradlens.runs.report import MISSING, headline_strings

FLASH_KEY = "runs_flash"
PICK_KEY = "runs_delete_pick"
CONFIRM_KEY = "runs_delete_confirm"
HELD = "The database is held by another process (an import or a job publishing its run?), so "
HELD += "the run was not deleted. Try again in a moment."


def headlines(db: str, ver: tuple, names: tuple[str, str]) -> pd.DataFrame | None:
    """Two runs' stored headlines side by side (metric, then each run's accuracy, 95% CI and
    reading; rows in the first run's order, then the second's own); None (saying what to run)
    when either run was never selected."""
    stored = {n: common.stored_headline(db, n, ver) for n in names}
    if missing := [n for n, h in stored.items() if h is None]:
        hints = ", ".join(common.select_hint(db, n) for n in missing)
        st.info(f"No stored headline for {escape_markdown(', '.join(missing))}: run {hints}.")
        return None
    shown = [headline_strings(stored[n]).set_index("id") for n in names]
    order = list(shown[0].index) + [i for i in shown[1].index if i not in shown[0].index]
    both = pd.DataFrame({"metric": shown[0]["metric"].combine_first(shown[1]["metric"])})
    for name, h in zip(names, shown, strict=True):
        both[f"{name} accuracy"] = h["accuracy"]
        both[f"{name} 95% CI"] = h["95% CI"]
        both[f"{name} reading"] = h["reading"]
    return both.reindex(order).fillna(MISSING).reset_index(drop=True)


def delete_selected(db: str, runs: pd.DataFrame) -> None:
    """Button callback (runs before the script, so the sidebar redraws without the run)."""
    name = st.session_state.get(PICK_KEY)
    if name is None or not st.session_state.get(CONFIRM_KEY):
        return
    match = runs.loc[runs["name"] == name, "run_id"]
    if match.empty:
        st.session_state[FLASH_KEY] = ("error", f"No run named {name} in the database.", "")
        return
    try:
        common.delete_run(db, str(match.iloc[0]))
    except GradLensError as exc:
        st.session_state[FLASH_KEY] = ("error", HELD, str(exc))
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        st.session_state[FLASH_KEY] = ("error", "Deleting the run failed.", first)
    else:
        st.session_state[FLASH_KEY] = ("success", f"Deleted run {name} and all its rows.", "")
        st.session_state[CONFIRM_KEY] = False
        st.session_state[PICK_KEY] = None


st.title("Runs")
st.caption(
    "Every run in the database; all of them can be explored on the other pages. A compute job "
    "writes into its own file beside the database and publishes its run here when it is "
    "complete: jobs still running (or stopped half-way) are listed on the Compute page."
)
flash = st.session_state.pop(FLASH_KEY, None)
if flash:
    kind, msg, detail = flash
    (st.success if kind == "success" else st.error)(msg)
    if detail:
        st.text(detail)

db = state.db_path()
if not Path(db).is_file():
    st.info(f"No database at {escape_markdown(db)}.")
    st.stop()
try:
    ver = common.version(db)
    runs = common.run_list(db, ver)
    table = common.runs_table(db, ver)
except GradLensError as exc:
    st.error("Cannot read the database.")
    st.text(str(exc))
    st.stop()
st.text(f"Database: {db}")
if runs.empty:
    st.info("The database holds no run yet.")
    st.stop()

widgets.table(
    table,
    "runs",
    column_config={
        "created_at": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
        "queries": st.column_config.NumberColumn(width="small"),
        "candidates": st.column_config.NumberColumn(width="small"),
        "methods": st.column_config.TextColumn(width="small"),
        "seconds": st.column_config.NumberColumn(format="%.1f", width="small"),
        "passes": st.column_config.NumberColumn(format="%d", width="small"),
        "run_id": st.column_config.TextColumn("run id"),
    },
)

# -- two headlines side by side ------------------------------------------------------------------
st.subheader("Compare two runs")
complete = common.complete_runs(db, ver)
if len(complete) < 2:
    st.caption("Needs two complete runs; the Overview page shows this run's headline.")
else:
    st.caption(
        "The headline `gradlens select` stored with each run: accuracy, 95 % interval and "
        "reading (the Overview page says how each is computed)."
    )
    current = state.view().run
    first = current if current in complete else complete[0]
    second = next(n for n in complete if n != first)
    left, right = st.columns(2)
    a = left.selectbox("Run A", complete, index=complete.index(first), key="runs_cmp_a")
    b = right.selectbox("Run B", complete, index=complete.index(second), key="runs_cmp_b")
    if a == b:
        st.info("Pick two different runs.")
    elif (both := headlines(db, ver, (a, b))) is not None:
        widgets.table(both, f"headlines-{a}-vs-{b}")

# -- delete ----------------------------------------------------------------------------------------
st.subheader("Delete a run")
names = [str(n) for n in runs["name"]]
if st.session_state.get(PICK_KEY) not in names:
    st.session_state[PICK_KEY] = None
pick = st.selectbox("Run to delete", names, index=None, key=PICK_KEY, placeholder="choose a run")
confirm = st.checkbox(
    "Yes, delete this run and every row of it (this cannot be undone)",
    key=CONFIRM_KEY,
    disabled=pick is None,
)
st.button(
    "Delete run",
    type="primary",
    key="runs_delete",
    disabled=not (pick and confirm),
    on_click=delete_selected,
    args=(db, runs),
)
