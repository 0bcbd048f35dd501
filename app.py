"""GradLens dashboard: explore runs of per-component gradient dot products. Reads cached scalars
only (``gradlens.runs.read``); never loads a model or recomputes a gradient to draw a page.

``streamlit run app.py`` with ``GRADLENS_DB`` naming the database (default data/demo.duckdb).
"""

from __future__ import annotations

import streamlit as st

from dashboard import common

# The pages live in views/, not pages/: Streamlit treats a folder named pages/ beside the entry
# point as a v1 multipage app until st.navigation runs, so a deep link such as /greedy would run
# that page's file alone, without this script (no sidebar, no state).

st.set_page_config(page_title="GradLens", page_icon="🔎", layout="wide")

PAGES = {
    "Explore runs": [
        st.Page("views/overview.py", title="Overview", url_path="overview", default=True),
        st.Page("views/greedy.py", title="Greedy selection", url_path="greedy"),
        st.Page("views/heatmaps.py", title="Layer heatmaps", url_path="heatmaps"),
        st.Page("views/failures.py", title="Failure cases", url_path="failures"),
        st.Page("views/project.py", title="Select vs project", url_path="project"),
        st.Page("views/runs.py", title="Runs", url_path="runs"),
    ],
    "Compute": [
        st.Page("views/model.py", title="Model", url_path="model"),
        st.Page("views/compute.py", title="Compute", url_path="compute"),
    ],
    "Lenses on single gradients": [
        st.Page("views/backward_lens.py", title="Backward lens", url_path="backward-lens"),
        st.Page("views/input_embeddings.py", title="Input embeddings", url_path="input-embeddings"),
        st.Page("views/pairs.py", title="Pair inspector", url_path="pairs"),
    ],
}
#: Pages that work without a complete run in the database (they load a model or start jobs).
STANDALONE = {"Runs", "Model", "Compute", "Backward lens", "Input embeddings", "Pair inspector"}

page = st.navigation(PAGES)
st.sidebar.title("GradLens")
st.sidebar.caption("Which gradient components identify the training example behind a query?")
ctx = common.sidebar()
st.session_state["gl_ctx"] = ctx
if ctx is None and page.title not in STANDALONE:
    st.stop()
page.run()
common.sync_url()
