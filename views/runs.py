"""Runs: every run in the database with its status, size, configuration and cost; two runs'
headlines side by side; deleting a run. Works without a complete run (``common.context()`` None)
as long as the database file exists."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import streamlit as st

from dashboard import common
from gradlens.errors import GradLensError
from gradlens.store.workfile import write_store

FLASH_KEY = "runs_flash"
PICK_KEY = "runs_delete_pick"
CONFIRM_KEY = "runs_delete_confirm"


def _files(*paths: object) -> str:
    return ", ".join(Path(str(p)).name for p in paths if p)


def summary(info) -> dict[str, object]:
    """Model, data, candidates, projections and cost of one run, from its config and stats."""
    if info is None:
        return {}
    c, s = info.config, info.stats
    if c.get("source") == "import":
        filters = c.get("filters") or {}
        where = " (" + ", ".join(f"{k}={v}" for k, v in filters.items()) + ")" if filters else ""
        model = "imported"
        data = f"{_files(c.get('dots'))}{where}"
        projections = [m for m in info.methods if m != "exact"]
    else:
        model = f"{c.get('model', '?')} ({c.get('dtype', 'float32')})"
        data = f"train {_files(c.get('train_path'))}, queries {_files(c.get('queries_path'))}"
        projections = list(c.get("projections") or [])
    return {
        "candidates": int(c.get("candidates") or info.n_candidates or 0) or None,
        "projections": ", ".join(projections) or "none",
        "seconds": s.get("seconds"),
        "passes": s.get("passes"),
        "model": model,
        "data": data,
    }


def run_table(db: str, ver: tuple, runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in runs.itertuples(index=False):
        try:
            info = common.run_info(db, str(r.name), ver)
        except GradLensError:
            info = None
        rows.append(
            {
                "name": r.name,
                "status": r.status,
                "created_at": r.created_at,
                "queries": r.queries,
                "components": r.components,
                "methods": r.methods,
                **summary(info),
                "run_id": r.run_id,
            }
        )
    return pd.DataFrame(rows)


def headline_columns(table: pd.DataFrame, run: str) -> pd.DataFrame:
    """metric, then ``<run> accuracy`` (4 decimals) and ``<run> 95% CI``."""
    return pd.DataFrame(
        {
            "metric": table["metric"],
            f"{run} accuracy": table["accuracy"].map(common.fmt4),
            f"{run} 95% CI": [
                f"[{lo:.4f}, {hi:.4f}]" for lo, hi in zip(table["ci_lo"], table["ci_hi"])
            ],
        }
    )


def delete_selected(db: str, runs: pd.DataFrame) -> None:
    """Button callback (runs before the script, so the sidebar redraws without the run)."""
    name = st.session_state.get(PICK_KEY)
    if name is None or not st.session_state.get(CONFIRM_KEY):
        return
    match = runs.loc[runs["name"] == name, "run_id"]
    if match.empty:
        st.session_state[FLASH_KEY] = ("error", f"No run named {name} in the database.", "")
        return
    try:  # a short write, retried for a few seconds while readers or a publish hold the file
        with write_store(db, retry_seconds=5) as store:
            store.delete_run(str(match.iloc[0]))
    except GradLensError as exc:
        msg = (
            "The database is held by another process (an import or a job publishing its run?), "
            "so the run was not deleted. Try again in a moment."
        )
        st.session_state[FLASH_KEY] = ("error", msg, str(exc))
        return
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        st.session_state[FLASH_KEY] = ("error", "Deleting the run failed.", first)
        return
    # every cached read of this file is stale (the version key changes only after its ttl)
    st.cache_data.clear()
    st.cache_resource.clear()
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

db = common.db_path()
if not Path(db).is_file():
    st.info(f"No database at `{db}`.")
    st.stop()
try:
    ver = common.version(db)
    runs = common.run_list(db, ver)
    table = run_table(db, ver, runs)
except GradLensError as exc:
    st.error("Cannot read the database.")
    st.text(str(exc))
    st.stop()
st.text(f"Database: {db}")
if runs.empty:
    st.info("The database holds no run yet.")
    st.stop()

st.dataframe(
    table,
    hide_index=True,
    width="stretch",
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
common.download(table, "runs")

# -- two headlines side by side ------------------------------------------------------------------
st.subheader("Compare two runs")
complete = [str(n) for n in runs.loc[runs["status"] == "complete", "name"]]
if len(complete) < 2:
    st.caption("Needs two complete runs; the Overview page shows this run's headline.")
else:
    st.caption(
        "The headline of each run (full gradient, best single component, greedy peak in-sample "
        "and held-out, BM25): accuracy and its 95 % bootstrap interval over queries."
    )
    current = common.view().run
    first = current if current in complete else complete[0]
    second = next(n for n in complete if n != first)
    left, right = st.columns(2)
    a = left.selectbox("Run A", complete, index=complete.index(first), key="runs_cmp_a")
    b = right.selectbox("Run B", complete, index=complete.index(second), key="runs_cmp_b")
    if a == b:
        st.info("Pick two different runs.")
    else:
        ha = headline_columns(common.headline(db, a, ver)[0], a)
        hb = headline_columns(common.headline(db, b, ver)[0], b)
        # rows in A's order, then any metric only B has (a projection, say)
        order = list(ha["metric"]) + [m for m in hb["metric"] if m not in set(ha["metric"])]
        both = (
            ha.set_index("metric")
            .join(hb.set_index("metric"), how="outer")
            .reindex(order)
            .fillna("–")
            .reset_index()
        )
        st.dataframe(both, hide_index=True, width="stretch")
        common.download(both, f"headlines-{a}-vs-{b}")

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
