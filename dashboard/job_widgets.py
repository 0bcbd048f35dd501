"""Widgets of the Compute page: option inputs generated from an options dataclass's field
metadata (``gradlens.options``, the metadata that generates the CLI's argparse options), the
choice of a data file (a bundled set, a path on the server: a file, a ``datasets`` folder or
``hf:NAME``; or an upload), and a job's card
(state, progress, Cancel / Resume / Dismiss, the query sets it built, its log)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import streamlit as st

from gradlens import jobs

DEMO = Path("data/demo")
#: The bundled data files the Compute page offers by name.
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
STATE_ICONS = {
    "complete": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/pause_circle:",
    "stopped": ":material/pause_circle:",
}


def option_input(cls: type, name: str, key: str, shown: Mapping[str, object]) -> object:
    """One widget, keyed ``key``, for the field ``name`` of the options dataclass ``cls``: a
    checkbox for a flag, a selectbox for choices, a number input (empty for an optional number)
    for an integer, else a text input; its help, choices, minimum and default from the field.
    ``shown`` may give the ``label`` (default: the field's name), a ``placeholder`` and a
    ``value`` in place of the default. Returns the value in the field's type ("" from an empty
    required text, None from an empty optional one)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    label = shown.get("label") or name.replace("_", " ").capitalize()
    common = {"key": key, "help": f.metadata["help"]}
    value = shown.get("value", f.default)
    value = None if value is dataclasses.MISSING else value
    kind = str(f.type).split()[0]  # "int | None" -> "int" (the annotations are strings)
    if kind == "bool":
        return st.checkbox(label, value=bool(value), **common)
    if f.metadata["choices"]:
        choices = list(f.metadata["choices"])
        return st.selectbox(label, choices, index=choices.index(value), **common)
    placeholder = shown.get("placeholder")
    if kind == "int":
        minimum = f.metadata["minimum"]
        number = st.number_input(
            label, minimum, value=value, step=1, placeholder=placeholder, **common
        )
        return None if number is None else int(number)
    text = st.text_input(
        label, "" if value is None else str(value), placeholder=placeholder, **common
    )
    return text.strip() or (None if f.default is None else "")


def option_inputs(
    cls: type, names: Sequence[str], prefix: str, shown: Mapping[str, Mapping[str, object]]
) -> dict[str, object]:
    """``option_input`` for each field of ``names``, in order, keyed ``<prefix>_<field>``, with
    what ``shown`` gives for it: {field: value}."""
    return {n: option_input(cls, n, f"{prefix}_{n}", shown.get(n, {})) for n in names}


def data_source(label: str, choices: Mapping[str, Path], key: str) -> tuple[str, object]:
    """("path", Path or None) or ("upload", UploadedFile or None) for one data file."""
    pick = st.selectbox(label, list(choices) + list(OTHER), key=f"{key}_pick")
    if pick in choices:
        return "path", choices[pick]
    if pick == OTHER[0]:
        text = st.text_input(
            f"{label}: path (.jsonl, .csv or .parquet) or a datasets folder, .arrow or hf:NAME",
            key=f"{key}_path",
        )
        return "path", Path(text) if text else None
    upload = st.file_uploader(
        f"{label}: upload", type=["jsonl", "csv", "parquet", "arrow"], key=f"{key}_upload"
    )
    return "upload", upload


def materialise(source: tuple[str, object], inputs: Path, stem: str) -> str | None:
    """The file the job reads: a path as given, an upload saved under a generated name in the
    job's private inputs folder."""
    kind, value = source
    if value is None:
        return None
    if kind == "path":
        return str(value)
    suffix = Path(value.name).suffix.lower() or ".jsonl"
    target = inputs / f"{stem}{suffix}"
    target.write_bytes(value.getvalue())
    return str(target)


def job_progress(job: jobs.Job) -> None:
    """The running step's progress bar (a step that builds a query set counts examples, the
    compute queries), or the line that says the run is ready."""
    if job.running:
        st.caption(f"step {job.step_index + 1} of {len(job.spec.steps)}: {job.step}")
    if job.running and job.step in jobs.BUILDERS:
        progress, head, tail = job.step_progress(), f"{job.step}: ", "examples"
    else:
        progress, head = job.progress(), ""
        tail = None if progress is None else f"queries · {progress.passes} passes"
    if progress is not None:
        eta = "–" if progress.eta is None else f"{progress.eta:.0f} s"
        st.progress(
            progress.fraction,
            text=f"{head}{progress.done} / {progress.total} {tail} · "
            f"{progress.elapsed:.0f} s elapsed · ETA {eta}",
        )
    elif head:
        st.progress(0.0, text=f"{head}starting")
    elif job.state == "complete":
        st.progress(1.0, text="complete: the run is in every page's run picker")


def job_card(job: jobs.Job) -> None:
    """A job's state, progress, buttons, built query sets and the tail of its log."""
    job_id = job.spec.job_id
    with st.container(border=True):
        icon = STATE_ICONS.get(job.state, ":material/hourglass_top:")
        st.markdown(f"{icon} **{job.state}** · `{job_id}`")
        st.text(job.spec.label)
        job_progress(job)
        cols = st.columns(4)
        if cols[0].button("Cancel", key=f"cancel_{job_id}", disabled=not job.running):
            jobs.cancel(job)
            st.rerun()
        can_resume = job.state in ("cancelled", "failed", "stopped")
        if cols[1].button("Resume", key=f"resume_{job_id}", disabled=not can_resume):
            jobs.resume(job)
            st.rerun()
        if cols[2].button("Dismiss", key=f"dismiss_{job_id}", disabled=job.running):
            jobs.dismiss(job)
            st.rerun()
        for built in job.built_query_sets():
            note = f", {built.flagged} flagged" if built.step == "paraphrase" else ""
            st.download_button(
                f"Download the {built.kind} query set ({built.examples} examples{note})",
                built.path.read_bytes(),
                file_name=built.path.name,
                mime="application/jsonl",
                key=f"download_{job_id}_{built.step}",
            )
        with st.expander("Log"):
            st.code(job.log_tail() or "(no output yet)", language=None)
