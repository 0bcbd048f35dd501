"""GradLens dashboard: runs in a DuckDB file, their headline numbers and the per-layer x kind
single-component retrieval accuracy. Reads cached scalars only; never recomputes gradients."""

from __future__ import annotations

import os
from pathlib import Path

import plotly.express as px
import streamlit as st

from gradlens.errors import GradLensError
from gradlens.queries import list_runs, load_arrays
from gradlens.runs import run_headline
from gradlens.selection import layer_kind_table, per_component_accuracy

st.set_page_config(page_title="GradLens", layout="wide")


@st.cache_data(show_spinner="Reading the run's dot products…")
def overview(db: str, run: str, mtime: float) -> dict:
    a = load_arrays(db, run)
    single = per_component_accuracy(a.dots, a.query_sq, a.cand_sq, a.target, a.valid)
    grid = layer_kind_table(single, a.layers, a.kinds)
    return {"headline": run_headline(a), "layer_kind": grid}


st.title("GradLens")
st.caption("Which components of the loss gradient identify the training example behind a query?")
db = st.sidebar.text_input("DuckDB file", os.environ.get("GRADLENS_DB", "data/demo.duckdb"))
if not Path(db).is_file():
    st.info(f"No database at `{db}`. Run `make demo` (or `gradlens compute …`) first.")
    st.stop()
try:
    runs = list_runs(db)
except GradLensError as exc:
    st.error(str(exc))
    st.stop()
complete = runs[runs["status"] == "complete"]
if complete.empty:
    st.info(f"`{db}` holds no complete run yet.")
    st.stop()
name = st.sidebar.selectbox("Run", list(complete["name"]))
st.sidebar.dataframe(runs[["name", "status", "queries", "components"]], hide_index=True)

data = overview(db, name, Path(db).stat().st_mtime)
head = data["headline"]
st.subheader(f"Run `{name}`")
cols = st.columns(len(head))
for col, row in zip(cols, head.itertuples(index=False)):
    col.metric(
        row.metric,
        f"{row.accuracy:.3f}",
        help=f"{row.detail}; 95% CI [{row.ci_lo:.3f}, {row.ci_hi:.3f}]",
    )
st.dataframe(head, hide_index=True)

grid = data["layer_kind"]
fig = px.imshow(
    grid.astype(float),
    color_continuous_scale="Viridis",
    zmin=0,
    zmax=1,
    aspect="auto",
    labels={"x": "component kind", "y": "layer", "color": "accuracy"},
    title="Retrieval accuracy of each single component",
)
st.plotly_chart(fig, width="stretch")
