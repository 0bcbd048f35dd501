"""Compute: start `gradlens compute` (optionally `generate` first, and `select` after) as a
background job from the browser, watch its progress, cancel and resume it. The job is the CLI in
another process (``gradlens.jobs``); it writes into its own file and publishes the finished run
into the database, so every other page keeps reading while it runs."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import streamlit as st

from dashboard import common
from gradlens import jobs
from gradlens.compute import validate_inputs
from gradlens.errors import GradLensError
from gradlens.options import ComputeOptions, GenerateOptions, to_argv

DEMO = Path("data/demo")
TRAIN_SETS = {
    "demo training set (124 examples)": DEMO / "train.jsonl",
    "small demo training set (16)": DEMO / "small" / "train.jsonl",
}
QUERY_SETS = {
    "demo paraphrases (124)": DEMO / "paraphrased.jsonl",
    "demo model-generated queries (124)": DEMO / "generated.jsonl",
    "small demo paraphrases (16)": DEMO / "small" / "paraphrased.jsonl",
}
OTHER = ("a path on the server", "upload a file")
MAX_UPLOAD_MB = 200

db = common.db_path()
st.title("Compute")
st.caption(
    "Starts the same `gradlens compute` as the command line, as a background job: it survives a "
    "browser reload, any tab finds it here, and the other pages keep working while it runs (it "
    "writes its own file and publishes the run into the database when complete). When it "
    "completes, `gradlens select` runs and the run appears in every page's run picker."
)


def data_source(label: str, choices: dict[str, Path], key: str) -> tuple[str, object]:
    """("path", Path) or ("upload", UploadedFile or None) for one data file."""
    pick = st.selectbox(label, list(choices) + list(OTHER), key=f"{key}_pick")
    if pick in choices:
        return "path", choices[pick]
    if pick == OTHER[0]:
        text = st.text_input(f"{label}: path (.jsonl, .csv or .parquet)", key=f"{key}_path")
        return "path", Path(text) if text else None
    upload = st.file_uploader(
        f"{label}: upload", type=["jsonl", "csv", "parquet"], key=f"{key}_upload"
    )
    return "upload", upload


def materialise(kind: str, value, inputs: Path, stem: str) -> str | None:
    """The file the job reads: a path as given, an upload saved under a generated name in the
    job's private inputs folder."""
    if value is None:
        return None
    if kind == "path":
        return str(value)
    suffix = Path(value.name).suffix.lower() or ".jsonl"
    target = inputs / f"{stem}{suffix}"
    target.write_bytes(value.getvalue())
    return str(target)


with st.container(border=True):
    st.subheader("New job")
    left, right = st.columns(2)
    with left:
        model = st.text_input(
            "Model",
            st.session_state.get("model_spec", "smollm2"),
            help="smollm2 (bundled), a local Hugging Face folder, or a hub id already in the "
            "local cache; nothing is downloaded",
            key="compute_model",
        )
        trust = st.checkbox("trust_remote_code (runs model code from disk)", key="compute_trust")
        train_src = data_source("Training set", TRAIN_SETS, "compute_train")
        query_src = data_source("Query set", QUERY_SETS, "compute_queries")
        generate_first = st.checkbox(
            "Build the model-generated query set first (`gradlens generate`: the query set's "
            "prompts with this model's greedy completions)",
            key="compute_generate",
        )
        run_name = st.text_input(
            "Run name", placeholder="default: <query file>-<model>", key="compute_run"
        )
    with right:
        b = st.number_input("Candidates b", 1, 50, 5, key="compute_b")
        bm25_on = st.selectbox("BM25 over", ["prompt", "prompt+response"], key="compute_bm25")
        loss_on = st.selectbox("Loss on", ["response", "all"], key="compute_loss_on")
        reduction = st.selectbox("Reduction", ["mean", "sum"], key="compute_reduction")
        max_length = st.number_input("Max length (0 = no cut)", 0, 100_000, 0, key="compute_max")
        project = st.text_input("Projections", placeholder="e.g. sjlt:0.01", key="compute_proj")
        memory = st.text_input(
            "Memory budget", placeholder="default: 70% of free - 1G", key="compute_memory"
        )
        device = st.selectbox("Device", ["cpu", "cuda", "auto"], key="compute_device")
    submitted = st.button("Start job", type="primary", key="compute_start")

if submitted:
    job_id, inputs = jobs.new_job_folder(db)
    try:
        train = materialise(*train_src, inputs, "train")
        queries = materialise(*query_src, inputs, "queries")
        if not train or not queries:
            raise GradLensError("choose a training set and a query set (a path or an upload)")
        name = run_name.strip() or f"{Path(queries).stem}-{Path(model).name}"
        steps: list[list[str]] = []
        if generate_first:
            generated = str(inputs / "generated.jsonl")
            gen = GenerateOptions(queries=queries, out=generated, model=model, device=device)
            steps.append(["generate", *to_argv(gen)])
        opts = ComputeOptions(
            train=train,
            queries=queries,
            db=db,
            model=model,
            run=name,
            candidates=int(b),
            bm25_on=bm25_on,
            loss_on=loss_on,
            reduction=reduction,
            max_length=int(max_length) or None,
            device=device,
            project=project.strip() or None,
            max_memory=memory.strip() or None,
            trust_remote_code=trust,
            no_progress=True,
        )
        validate_inputs(opts)  # the CLI's own checks, before anything starts
        if generate_first:
            opts = dataclasses.replace(opts, queries=generated)
        steps += [["compute", *to_argv(opts)], ["select", "--db", db, "--run", name]]
        label = f"{name}: {model} on {Path(train).name} / {Path(queries).name}"
        job = jobs.create_job(db, name, steps, label, job_id=job_id)
        jobs.start(job)
        st.success(f"Started job `{job.spec.job_id}` for run `{name}`.")
    except GradLensError as exc:
        shutil.rmtree(inputs.parent, ignore_errors=True)  # nothing half-made is left
        st.error(str(exc))


def show_job(job: jobs.Job) -> None:
    state = job.state
    icon = {
        "complete": ":material/check_circle:",
        "failed": ":material/error:",
        "cancelled": ":material/pause_circle:",
        "stopped": ":material/pause_circle:",
    }.get(state, ":material/hourglass_top:")
    with st.container(border=True):
        st.markdown(f"{icon} **{state}** · `{job.spec.job_id}`")
        st.text(job.spec.label)
        progress = job.progress()
        steps = [s[0] for s in job.spec.steps]
        step = min(job.status.step, len(steps) - 1)
        if state in ("running", "starting"):
            st.caption(f"step {step + 1} of {len(steps)}: {steps[step]}")
        if progress is not None:
            eta = "–" if progress.eta is None else f"{progress.eta:.0f} s"
            st.progress(
                progress.fraction,
                text=f"{progress.done} / {progress.total} queries · {progress.passes} passes · "
                f"{progress.elapsed:.0f} s elapsed · ETA {eta}",
            )
        elif state == "complete":
            st.progress(1.0, text="complete: the run is in every page's run picker")
        cols = st.columns(4)
        running = state in ("running", "starting")
        if cols[0].button("Cancel", key=f"cancel_{job.spec.job_id}", disabled=not running):
            jobs.cancel(job)
            st.rerun()
        can_resume = state in ("cancelled", "failed", "stopped")
        if cols[1].button("Resume", key=f"resume_{job.spec.job_id}", disabled=not can_resume):
            jobs.resume(job)
            st.rerun()
        if cols[2].button("Dismiss", key=f"dismiss_{job.spec.job_id}", disabled=running):
            jobs.dismiss(job)
            st.rerun()
        with st.expander("Log"):
            st.code(job.log_tail() or "(no output yet)", language=None)


@st.fragment(run_every=2)
def job_list() -> None:
    """Polls the job registry every 2 s (only this fragment reruns)."""
    found = jobs.list_jobs(db)
    st.subheader(f"Jobs ({len(found)})")
    if not found:
        st.caption("No jobs yet for this database.")
    for job in found:
        show_job(job)
    # a job that just completed published a run: redraw the whole app so the run picker has it
    complete = {j.spec.job_id for j in found if j.state == "complete"}
    seen = st.session_state.setdefault("compute_complete_seen", set(complete))
    if complete - seen:
        seen |= complete
        common.refresh()
        st.rerun(scope="app")


job_list()
