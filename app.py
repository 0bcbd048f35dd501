"""GradLens dashboard: explore runs of per-component gradient dot products. Reads cached scalars
only (``gradlens.runs.read``); never loads a model or recomputes a gradient to draw a page.

``streamlit run app.py`` with ``GRADLENS_DB`` naming the database (default data/demo.duckdb).
"""

from __future__ import annotations

import streamlit as st

from dashboard import common, state

# The pages live in views/, not pages/: Streamlit treats a folder named pages/ beside the entry
# point as a v1 multipage app until st.navigation runs, so a deep link such as /greedy would run
# that page's file alone, without this script (no sidebar, no state).

st.set_page_config(page_title="GradLens", page_icon="🔎", layout="wide")

#: The pages that show a complete run (the others load a model, start jobs or list the runs).
RUN_PAGES = [
    st.Page("views/overview.py", title="Overview", url_path="overview", default=True),
    st.Page("views/greedy.py", title="Greedy selection", url_path="greedy"),
    st.Page("views/heatmaps.py", title="Layer heatmaps", url_path="heatmaps"),
    st.Page("views/failures.py", title="Failure cases", url_path="failures"),
    st.Page("views/project.py", title="Select vs project", url_path="project"),
    st.Page("views/attribute.py", title="Attribute", url_path="attribute"),
]
PAGES = {
    "Explore runs": [*RUN_PAGES, st.Page("views/runs.py", title="Runs", url_path="runs")],
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

page = st.navigation(PAGES)  # one of the page objects above
st.sidebar.title("GradLens")
st.sidebar.caption("Which gradient components identify the training example behind a query?")
ctx = common.sidebar()
state.set_context(ctx)
if ctx is None and any(page is p for p in RUN_PAGES):
    st.stop()
page.run()
state.sync_url()
