"""Compute: start `gradlens compute` (optionally `paraphrase` and/or `generate` first, and
`select` after) as a background job from the browser, watch its progress, cancel and resume it.
The job is the CLI in another process (``gradlens.jobs``); it writes into its own file and
publishes the finished run into the database, so every other page keeps reading while it runs.
The form's option inputs come from the options' field metadata, as the CLI's flags do."""

from __future__ import annotations

import shutil

import streamlit as st

from dashboard import common, state
from dashboard.job_widgets import (
    QUERY_SETS,
    TRAIN_SETS,
    data_source,
    job_card,
    materialise,
    option_inputs,
)
from dashboard.models import current_model
from gradlens import jobs
from gradlens.errors import GradLensError
from gradlens.options import ComputeOptions, ParaphraseOptions

#: How the form shows the options' fields (label, placeholder, a value other than the default).
COMPUTE_SHOWN = {
    "model": {"value": current_model().spec},
    "trust_remote_code": {"label": "trust_remote_code (runs model code from disk)"},
    "run": {"label": "Run name", "placeholder": "default: <query file>-<model>"},
    "candidates": {"label": "Candidates b"},
    "bm25_on": {"label": "BM25 over"},
    "max_length": {"placeholder": "no cut"},
    "columns": {"label": "Columns", "placeholder": "e.g. prompt=instruction,response=output"},
    "project": {"label": "Projections", "placeholder": "e.g. sjlt:0.01"},
    "index": {"label": "Index (full-set retrieval)", "placeholder": "e.g. sjlt:d32"},
    "adapter": {"label": "LoRA adapter folder", "placeholder": "none"},
    "max_memory": {"label": "Memory budget", "placeholder": "default: 70% of free - 1G"},
}
PARAPHRASE_SHOWN = {
    "endpoint": {"value": "http://127.0.0.1:8000/v1"},
    "model": {"label": "Endpoint model"},
    "api_key_env": {
        "label": "API key environment variable",
        "placeholder": "none (a local server)",
    },
    "field": {"label": "Paraphrase"},
    "concurrency": {"label": "Requests in flight"},
}
#: The options in the form's right column.
RIGHT = (
    "candidates", "bm25_on", "loss_on", "reduction", "max_length", "project", "index",
    "max_memory", "device", "columns",
)  # fmt: skip
#: The steps a job may run before the compute: checkbox label and help.
BEFORE = {
    "paraphrase": (
        "Paraphrase the training set first",
        "`gradlens paraphrase`: each training example's prompt and response reworded by an LLM "
        "behind an OpenAI-compatible endpoint; the result is the query set",
    ),
    "generate": (
        "Build the model-generated query set first",
        "`gradlens generate`: the query set's prompts with this model's greedy completions",
    ),
}

db = state.db_path()
st.title("Compute")
st.caption(
    "Starts the same `gradlens compute` as the command line, as a background job: it survives a "
    "browser reload, any tab finds it here, and the other pages keep working while it runs (it "
    "writes its own file and publishes the run into the database when complete). When it "
    "completes, `gradlens select` runs and the run appears in every page's run picker."
)


def before(step: str) -> bool:
    label, help_text = BEFORE[step]
    return st.checkbox(label, help=help_text, key=f"compute_{step}")


def paraphrase_settings() -> dict[str, object]:
    """The endpoint's settings for the paraphrase step (the key stays in the environment)."""
    with st.container(border=True):
        names = ("endpoint", "model", "api_key_env")
        settings = option_inputs(ParaphraseOptions, names, "compute_pp", PARAPHRASE_SHOWN)
        for col, name in zip(st.columns(2), ("field", "concurrency"), strict=True):
            with col:
                settings |= option_inputs(
                    ParaphraseOptions, (name,), "compute_pp", PARAPHRASE_SHOWN
                )
    return settings


with st.container(border=True):
    st.subheader("New job")
    left, right = st.columns(2)
    with left:
        names = ("model", "trust_remote_code", "adapter", "adapter_merge")
        chosen = option_inputs(ComputeOptions, names, "compute", COMPUTE_SHOWN)
        train_src = data_source("Training set", TRAIN_SETS, "compute_train")
        paraphrase = paraphrase_settings() if before("paraphrase") else None
        query_src = ("path", None)
        if paraphrase is None:
            query_src = data_source("Query set", QUERY_SETS, "compute_queries")
        generate = before("generate")
        chosen |= option_inputs(ComputeOptions, ("run",), "compute", COMPUTE_SHOWN)
    with right:
        chosen |= option_inputs(ComputeOptions, RIGHT, "compute", COMPUTE_SHOWN)
    submitted = st.button("Start job", type="primary", key="compute_start")

if submitted:
    job_id, inputs = jobs.new_job_folder(db)
    try:
        train = materialise(train_src, inputs, "train")
        queries = materialise(query_src, inputs, "queries")
        opts = ComputeOptions(train=train, queries=queries, db=db, **chosen)
        plan = jobs.plan_job(opts, inputs.parent, paraphrase, generate)
        job = jobs.create_job(db, plan.run, plan.steps, plan.label, job_id=job_id)
        jobs.start(job)
        st.success(f"Started job `{job.spec.job_id}` for run `{plan.run}`.")
    except GradLensError as exc:
        shutil.rmtree(inputs.parent, ignore_errors=True)  # nothing half-made is left
        st.error(str(exc))


@st.fragment(run_every=2)
def job_list() -> None:
    """Polls the job registry every 2 s (only this fragment reruns)."""
    found = jobs.list_jobs(db)
    st.subheader(f"Jobs ({len(found)})")
    if not found:
        st.caption("No jobs yet for this database.")
    for job in found:
        job_card(job)
    # a job that just completed published a run: redraw the whole app so the run picker has it
    complete = {j.spec.job_id for j in found if j.state == "complete"}
    seen = st.session_state.setdefault("compute_complete_seen", set(complete))
    if complete - seen:
        seen |= complete
        common.refresh()
        st.rerun(scope="app")


job_list()
