"""Background jobs started from the dashboard: the same CLI commands (``gradlens paraphrase``,
``generate``, ``compute``, ``select``) run one after another by a small runner process in its own
session, so the job survives a browser reload and is found again by any tab. No Streamlit here.

``plan_job`` turns the Compute page's choices into the job's steps (paraphrase -> generate ->
compute -> select, the first two optional), checked as the CLI checks them. A job for database
``X`` lives in ``X.jobs/<job_id>/``: ``job.json`` (the steps as CLI arguments), ``status.json``
(replaced atomically by the runner), ``log.txt`` (the commands' output), the query sets its steps
build, and ``inputs/`` (uploaded files, private to the job (0700), removed once every step has
succeeded or when the job is dismissed). Each step reports its progress in a structured file:
the compute in its work folder (``gradlens.store.workfile``), ``paraphrase`` and ``generate`` in
``OUT.progress.json`` (``gradlens.files``). Cancel sends SIGINT to the job's process group: the
compute stops between queries and stays resumable; Resume starts the runner again at the step
that did not finish.

    python -m gradlens.jobs X.jobs/<job_id>     # the runner (started by ``start``)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gradlens.errors import GradLensError
from gradlens.files import Progress, progress_path, read_progress, write_atomically
from gradlens.options import (
    ComputeOptions,
    GenerateOptions,
    ParaphraseOptions,
    SelectOptions,
    to_argv,
)
from gradlens.store.workfile import running_jobs

__all__ = [
    "BUILDERS",
    "BuiltQuerySet",
    "Job",
    "JobPlan",
    "cancel",
    "create_job",
    "dismiss",
    "jobs_dir",
    "list_jobs",
    "new_job_folder",
    "plan_job",
    "resume",
    "start",
]

#: Exit status of a command stopped by SIGINT (the CLI's "interrupted; rerun to resume").
INTERRUPTED = 130
#: The steps that build a query set before the compute: step -> the file it writes in the job's
#: folder and what the set is called.
BUILDERS = {
    "paraphrase": ("paraphrased.jsonl", "paraphrased"),
    "generate": ("generated.jsonl", "model-generated"),
}


def jobs_dir(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".jobs")


@dataclass(frozen=True)
class JobSpec:
    """job_id; db; run: the run name the compute writes; steps: CLI argument lists (after
    ``gradlens``) run in order; label: what the page shows; created: epoch seconds."""

    job_id: str
    db: str
    run: str
    steps: tuple[tuple[str, ...], ...]
    label: str
    created: float


@dataclass(frozen=True)
class JobStatus:
    """state: queued | running | complete | failed | cancelled; step: index of the step running
    (or that stopped); pid: the runner (= process group id); returncode of the last step."""

    state: str
    step: int
    pid: int | None
    returncode: int | None
    updated: float


@dataclass(frozen=True)
class Job:
    spec: JobSpec
    status: JobStatus
    folder: Path

    @property
    def alive(self) -> bool:
        if self.status.pid is None:
            return False
        try:
            os.killpg(self.status.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    @property
    def state(self) -> str:
        """The recorded state, or ``stopped`` for a job whose runner died without saying so."""
        if self.status.state == "queued":
            return "starting" if time.time() - self.status.updated < 30 else "stopped"
        if self.status.state == "running" and not self.alive:
            return "stopped"
        return self.status.state

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        # progress bars rewrite their line with carriage returns: keep the last state of each
        rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
        return "\n".join(rows[-lines:])

    @property
    def step_index(self) -> int:
        """The index of the step running (or where the job stopped; the last when complete)."""
        return min(self.status.step, len(self.spec.steps) - 1)

    @property
    def step(self) -> str:
        """The command of the step at ``step_index``."""
        return self.spec.steps[self.step_index][0]

    @property
    def running(self) -> bool:
        return self.state in ("running", "starting")

    def progress(self) -> Progress | None:
        """The compute step's progress file, when it has written one."""
        for p in running_jobs(self.spec.db):
            if p.name == self.spec.run:
                return p
        return None

    def step_progress(self) -> Progress | None:
        """The progress of the step that builds a query set, while it runs: what it reports in
        ``OUT.progress.json``."""
        if not self.running or self.step not in BUILDERS:
            return None
        out = _out_of(self.spec.steps[self.step_index])
        return None if out is None else read_progress(progress_path(out))

    def built_query_sets(self) -> list[BuiltQuerySet]:
        """The query sets the job's steps have finished writing, in step order."""
        found = []
        for step in self.spec.steps:
            out = _out_of(step) if step[0] in BUILDERS else None
            if out is not None and out.is_file():
                found.append(BuiltQuerySet.read(step[0], out))
        return found


@dataclass(frozen=True)
class BuiltQuerySet:
    """A query set a job built: ``step`` (paraphrase | generate), its file, how many examples it
    holds and how many of them the paraphrase checks flagged (0 for a generated set)."""

    step: str
    path: Path
    examples: int
    flagged: int

    @property
    def kind(self) -> str:
        """What the set is called: "paraphrased" or "model-generated"."""
        return BUILDERS[self.step][1]

    @classmethod
    def read(cls, step: str, path: Path) -> BuiltQuerySet:
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
        return cls(step, path, len(rows), sum(1 for r in rows if r.get("flag")))


def _out_of(step: Sequence[str]) -> Path | None:
    """The ``--out`` file of a step's arguments (None without one)."""
    args = list(step)
    return Path(args[args.index("--out") + 1]) if "--out" in args[:-1] else None


@dataclass(frozen=True)
class JobPlan:
    """What a job will run: ``run``, the name the compute writes; ``steps``, CLI argument lists
    (after ``gradlens``) in order; ``label``, one line for the job's card."""

    run: str
    steps: tuple[tuple[str, ...], ...]
    label: str


def _paraphrase_step(train: str, out: Path, settings: Mapping[str, object]) -> list[str]:
    """The paraphrase step's arguments, checked as the CLI checks them, and the key's variable
    checked in this process's environment (the job inherits it)."""
    if not settings.get("model"):
        raise GradLensError("name the endpoint's model (the name it serves) to paraphrase")
    opts = ParaphraseOptions(train=train, out=str(out), no_progress=True, **settings)
    var = opts.api_key_env
    if var and not os.environ.get(var, "").strip():
        raise GradLensError(
            f"the environment variable {var} is not set where the dashboard runs (the job "
            f"reads the key from it): start the dashboard with {var} set"
        )
    return ["paraphrase", *to_argv(opts)]


def plan_job(
    opts: ComputeOptions,
    folder: Path,
    paraphrase: Mapping[str, object] | None = None,
    generate: bool = False,
) -> JobPlan:
    """The steps of a job in ``folder`` that computes ``opts``, checked before anything starts
    (GradLensError with the CLI's one-line message otherwise).

    ``paraphrase``: the ``ParaphraseOptions`` fields other than ``train`` and ``out``; the query
    set is then the training set paraphrased into the job's folder (``opts.queries`` is not
    read). ``generate``: the compute reads the query set's prompts with this model's greedy
    completions (its adapter merged in, under its system prompt), generated into the job's
    folder first. The run name defaults to ``<query file>-<model folder>``. Every step reports
    its progress in its progress file, not as a bar in the log."""
    from gradlens.data.sources import STANDARD_COLUMNS, file_columns
    from gradlens.engine.job import validate_inputs  # loads torch: not in the runner

    steps: list[list[str]] = []
    queries = opts.queries
    query_columns = file_columns(opts, "queries").mapped()
    if paraphrase is not None and opts.train:
        queries = str(folder / BUILDERS["paraphrase"][0])
        train_columns = file_columns(opts, "train").mapped()
        settings = {**paraphrase, "columns": train_columns}
        steps.append(_paraphrase_step(opts.train, Path(queries), settings))
    if not opts.train or not queries:
        raise GradLensError("choose a training set and a query set (a path or an upload)")
    run = opts.run or f"{Path(queries).stem}-{Path(opts.model).name}"
    # paraphrases carry the training set's ids: only the training set is checked
    validate_inputs(replace(opts, queries="" if paraphrase is not None else queries))
    source = Path(queries).name if paraphrase is None else f"paraphrased by {paraphrase['model']}"
    if generate:
        generated = str(folder / BUILDERS["generate"][0])
        columns = query_columns if paraphrase is None else None
        gen = GenerateOptions(
            queries,
            generated,
            opts.model,
            system_prompt=opts.system_prompt,
            device=opts.device,
            columns=columns,
            no_progress=True,
            adapter=opts.adapter,
        )
        steps.append(["generate", *to_argv(gen)])
        queries = generated
    compute = replace(opts, queries=queries, run=run, no_progress=True)
    if queries != opts.queries and query_columns:  # a query set built here has the own names
        compute = replace(compute, query_columns=STANDARD_COLUMNS)
    steps += [["compute", *to_argv(compute)], ["select", *to_argv(SelectOptions(opts.db, run))]]
    label = f"{run}: {opts.model} on {Path(opts.train).name} / {source}"
    return JobPlan(run, tuple(tuple(s) for s in steps), label)


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, [json.dumps(data)])


def _set_status(folder: Path, **fields) -> None:
    _write_json(folder / "status.json", asdict(JobStatus(**fields, updated=time.time())))


def create_job(
    db: str | Path,
    run: str,
    steps: list[list[str]],
    label: str,
    job_id: str | None = None,
) -> Job:
    """Register a job (not started). Use ``new_job_folder`` first when uploads must be copied
    into the job's ``inputs/`` before the steps can name them."""
    job_id = job_id or uuid.uuid4().hex[:12]
    folder = jobs_dir(db) / job_id
    (folder / "inputs").mkdir(parents=True, exist_ok=True, mode=0o700)
    spec = JobSpec(job_id, str(db), run, tuple(tuple(s) for s in steps), label, time.time())
    _write_json(folder / "job.json", asdict(spec))
    _set_status(folder, state="queued", step=0, pid=None, returncode=None)
    return load_job(folder)


def new_job_folder(db: str | Path) -> tuple[str, Path]:
    """A fresh job id and its private ``inputs/`` folder (mode 0700) for uploaded files."""
    job_id = uuid.uuid4().hex[:12]
    inputs = jobs_dir(db) / job_id / "inputs"
    inputs.mkdir(parents=True, mode=0o700)
    os.chmod(inputs.parent, 0o700)
    return job_id, inputs


def load_job(folder: Path) -> Job:
    spec = json.loads((folder / "job.json").read_text())
    spec["steps"] = tuple(tuple(s) for s in spec["steps"])
    status = json.loads((folder / "status.json").read_text())
    return Job(JobSpec(**spec), JobStatus(**status), folder)


def list_jobs(db: str | Path) -> list[Job]:
    """Every job of ``db``, newest first (unreadable folders are skipped)."""
    jobs = []
    for folder in jobs_dir(db).glob("*/"):
        try:
            jobs.append(load_job(folder))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return sorted(jobs, key=lambda j: -j.spec.created)


def start(job: Job, from_step: int = 0) -> None:
    """Start the runner in its own session (a browser reload or a server restart leaves it
    running); its output goes to the job's log."""
    if job.alive:
        raise GradLensError(f"job {job.spec.job_id} is already running")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    # the runner records "running" with its own pid (= its process group) as soon as it starts
    _set_status(job.folder, state="queued", step=from_step, pid=None, returncode=None)
    with open(job.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gradlens.jobs", str(job.folder), str(from_step)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    # reap the runner when it exits (else it lingers as a zombie of this process and looks
    # alive); it runs in its own session, so it outlives this process if need be
    threading.Thread(target=proc.wait, daemon=True).start()


def cancel(job: Job) -> None:
    """Interrupt the job (SIGINT to its process group): the compute stops cleanly and stays
    resumable."""
    if job.alive:
        os.killpg(job.status.pid, signal.SIGINT)


def resume(job: Job) -> None:
    """Start again at the step that did not finish (a compute resumes from its work file)."""
    start(job, from_step=job.status.step)


def dismiss(job: Job) -> None:
    """Remove a finished job's folder, its uploaded inputs included."""
    if job.alive:
        raise GradLensError(f"job {job.spec.job_id} is running: cancel it first")
    shutil.rmtree(job.folder, ignore_errors=True)


def _run(folder: Path, from_step: int) -> int:
    """The runner: each step as ``python -m gradlens ...``; records the state after each."""
    job = load_job(folder)
    interrupted = {"flag": False}

    def on_sigint(_signum, _frame):  # the child got the same signal; wait for it to stop
        interrupted["flag"] = True

    signal.signal(signal.SIGINT, on_sigint)
    pid = os.getpid()
    for i in range(from_step, len(job.spec.steps)):
        _set_status(folder, state="running", step=i, pid=pid, returncode=None)
        argv = [sys.executable, "-m", "gradlens", *job.spec.steps[i]]
        print(f"$ gradlens {' '.join(job.spec.steps[i])}", flush=True)
        rc = subprocess.call(argv)
        if rc != 0 or interrupted["flag"]:
            state = "cancelled" if rc == INTERRUPTED or interrupted["flag"] else "failed"
            _set_status(folder, state=state, step=i, pid=pid, returncode=rc)
            return rc or INTERRUPTED
    # Every step succeeded: the run is in the database, so the uploaded copies are not needed
    # (a failed or cancelled job keeps them for Resume; Dismiss removes them).
    shutil.rmtree(folder / "inputs", ignore_errors=True)
    _set_status(folder, state="complete", step=len(job.spec.steps), pid=pid, returncode=0)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through start() in the tests
    raise SystemExit(_run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0))
