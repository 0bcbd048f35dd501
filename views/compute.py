"""Compute: start `gradlens compute` (optionally `paraphrase` and/or `generate` first, and
`select` after) as a background job from the browser, watch its progress, cancel and resume it.
The job is the CLI in another process (``gradlens.jobs``); it writes into its own file and
publishes the finished run into the database, so every other page keeps reading while it runs.
The steps before the compute report their progress bar in the job's log, read back here."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import streamlit as st

from dashboard import common
from gradlens import jobs
from gradlens.engine.job import validate_inputs
from gradlens.errors import GradLensError
from gradlens.options import ComputeOptions, GenerateOptions, ParaphraseOptions, to_argv

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
DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"

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


def paraphrase_inputs() -> dict:
    """The endpoint's settings for the paraphrase step (the key stays in the environment)."""
    with st.container(border=True):
        endpoint = st.text_input(
            "Endpoint",
            DEFAULT_ENDPOINT,
            help="an OpenAI-compatible base URL: a local server (e.g. `transformers serve`) or "
            "a hosted API such as https://api.openai.com/v1",
            key="compute_pp_endpoint",
        )
        model_name = st.text_input(
            "Endpoint model", help="the model name the endpoint serves", key="compute_pp_model"
        )
        key_env = st.text_input(
            "API key environment variable",
            placeholder="none (a local server)",
            help="the NAME of a variable in the dashboard server's environment that holds the "
            "key; the key itself is never typed here, stored or logged",
            key="compute_pp_key_env",
        )
        cols = st.columns(2)
        field = cols[0].selectbox(
            "Paraphrase", ["prompt+response", "prompt"], key="compute_pp_field"
        )
        concurrency = cols[1].number_input("Requests in flight", 1, 64, 4, key="compute_pp_conc")
    return {
        "endpoint": endpoint.strip(),
        "model": model_name.strip(),
        "api_key_env": key_env.strip() or None,
        "field": field,
        "concurrency": int(concurrency),
    }


def paraphrase_step(train: str, out: str, settings: dict) -> list[str]:
    """The paraphrase step's arguments, checked as the CLI checks them, and the key's variable
    checked in this process's environment (the job inherits it)."""
    if not settings["model"]:
        raise GradLensError("name the endpoint's model (the name it serves) to paraphrase")
    opts = ParaphraseOptions(train=train, out=out, **settings)
    var = opts.api_key_env
    if var and not os.environ.get(var, "").strip():
        raise GradLensError(
            f"the environment variable {var} is not set where the dashboard runs (the job "
            f"reads the key from it): start the dashboard with {var} set"
        )
    return ["paraphrase", *to_argv(opts)]


#: The last state of a tqdm bar in a log: "paraphrase:  50%|##   | 8/16 [00:10<00:10, ...".
TQDM_LINE = re.compile(r"^(\w+):\s+\d+%\|.*?\| *(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")


def step_progress(log_tail: str, step: str) -> tuple[int, int, str, str] | None:
    """(done, total, elapsed, remaining) of the last progress bar ``step`` wrote to the log."""
    for line in reversed(log_tail.splitlines()):
        m = TQDM_LINE.match(line.strip())
        if m and m.group(1) == step:
            return int(m.group(2)), int(m.group(3)), m.group(4), m.group(5)
    return None


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
        paraphrase_first = st.checkbox(
            "Paraphrase the training set first",
            help="`gradlens paraphrase`: each training example's prompt and response reworded "
            "by an LLM behind an OpenAI-compatible endpoint; the result is the query set",
            key="compute_paraphrase",
        )
        if paraphrase_first:
            pp_inputs = paraphrase_inputs()
            query_src = ("path", None)
        else:
            query_src = data_source("Query set", QUERY_SETS, "compute_queries")
        generate_first = st.checkbox(
            "Build the model-generated query set first",
            help="`gradlens generate`: the query set's prompts with this model's greedy "
            "completions",
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
        steps: list[list[str]] = []
        # query sets built by the job are its outputs: beside inputs/ (uploads, removed once the
        # job succeeds), kept with the job until Dismiss, downloadable from its card
        if paraphrase_first and train:
            queries = str(inputs.parent / "paraphrased.jsonl")
            steps.append(paraphrase_step(train, queries, pp_inputs))
        else:
            queries = materialise(*query_src, inputs, "queries")
        if not train or not queries:
            raise GradLensError("choose a training set and a query set (a path or an upload)")
        name = run_name.strip() or f"{Path(queries).stem}-{Path(model).name}"
        if generate_first:
            generated = str(inputs.parent / "generated.jsonl")
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
        # the CLI's own checks, before anything starts (paraphrases have the training ids)
        validate_inputs(dataclasses.replace(opts, queries=train) if paraphrase_first else opts)
        if generate_first:
            opts = dataclasses.replace(opts, queries=generated)
        steps += [["compute", *to_argv(opts)], ["select", "--db", db, "--run", name]]
        source = f"paraphrased by {pp_inputs['model']}" if paraphrase_first else Path(queries).name
        label = f"{name}: {model} on {Path(train).name} / {source}"
        job = jobs.create_job(db, name, steps, label, job_id=job_id)
        jobs.start(job)
        st.success(f"Started job `{job.spec.job_id}` for run `{name}`.")
    except GradLensError as exc:
        shutil.rmtree(inputs.parent, ignore_errors=True)  # nothing half-made is left
        st.error(str(exc))


BUILT = {"paraphrase": "paraphrased", "generate": "model-generated"}


def built_query_sets(job: jobs.Job) -> list[tuple[str, Path]]:
    """(step, file) of the query sets the job's steps have finished writing."""
    found = []
    for step in job.spec.steps:
        if step[0] in BUILT and "--out" in step:
            path = Path(step[list(step).index("--out") + 1])
            if path.is_file():
                found.append((step[0], path))
    return found


def download_query_sets(job: jobs.Job) -> None:
    for step, path in built_query_sets(job):
        data = path.read_bytes()
        rows = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        flagged = sum(1 for r in rows if r.get("flag"))
        note = f", {flagged} flagged" if step == "paraphrase" else ""
        st.download_button(
            f"Download the {BUILT[step]} query set ({len(rows)} examples{note})",
            data,
            file_name=path.name,
            mime="application/jsonl",
            key=f"download_{job.spec.job_id}_{step}",
        )


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
        elif state in ("running", "starting") and steps[step] in ("paraphrase", "generate"):
            bar = step_progress(job.log_tail(), steps[step])
            if bar is None:
                st.progress(0.0, text=f"{steps[step]}: starting")
            else:
                done, total, elapsed, remaining = bar
                st.progress(
                    done / max(total, 1),
                    text=f"{steps[step]}: {done} / {total} examples · {elapsed} elapsed · "
                    f"ETA {remaining}",
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
        download_query_sets(job)
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
