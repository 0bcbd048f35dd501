"""A job's plan (``gradlens.jobs.plan_job``): the steps the Compute page starts, each parsed back
by the CLI's own parser into the options the page chose; the query sets a job built, counted from
their files; and a building step's progress, read from its ``OUT.progress.json``."""

from __future__ import annotations

import json
import os

import pytest

from gradlens import jobs
from gradlens.cli import build_parser
from gradlens.errors import GradLensError
from gradlens.files import Progress, progress_path, write_progress
from gradlens.options import ComputeOptions, from_namespace
from tests.conftest import DEMO

TRAIN, QUERIES = str(DEMO / "small" / "train.jsonl"), str(DEMO / "small" / "paraphrased.jsonl")
SETTINGS = {"endpoint": "http://127.0.0.1:8000/v1", "model": "served", "api_key_env": None}


def options(tmp_path, **fields) -> ComputeOptions:
    given = {"train": TRAIN, "queries": QUERIES, "db": str(tmp_path / "x.duckdb")} | fields
    return ComputeOptions(**given)


def parsed(step):
    """The namespace the CLI parses from a step's arguments."""
    return build_parser().parse_args(list(step))


def test_compute_then_select_with_the_default_run_name(tmp_path):
    opts = options(tmp_path, model="some/folder/tiny", candidates=3, loss_on="all")
    plan = jobs.plan_job(opts, tmp_path)
    assert [s[0] for s in plan.steps] == ["compute", "select"]
    assert plan.run == "paraphrased-tiny"
    compute, select = plan.steps
    back = from_namespace(ComputeOptions, parsed(compute))
    want = ComputeOptions(
        train=TRAIN, queries=QUERIES, db=opts.db, model="some/folder/tiny", candidates=3,
        loss_on="all", run="paraphrased-tiny", no_progress=True,
    )  # fmt: skip
    assert back == want
    assert list(select) == ["select", "--db", opts.db, "--run", "paraphrased-tiny"]
    assert plan.label == "paraphrased-tiny: some/folder/tiny on train.jsonl / paraphrased.jsonl"


def test_paraphrase_then_generate_feed_the_compute(tmp_path):
    opts = options(tmp_path, queries="", run="r")
    plan = jobs.plan_job(opts, tmp_path, paraphrase=SETTINGS, generate=True)
    para, gen, compute, _ = plan.steps
    assert [s[0] for s in plan.steps] == ["paraphrase", "generate", "compute", "select"]
    p, g, c = parsed(para), parsed(gen), parsed(compute)
    assert (p.train, p.out) == (TRAIN, str(tmp_path / "paraphrased.jsonl"))
    assert (p.endpoint, p.model, p.no_progress) == (SETTINGS["endpoint"], "served", True)
    assert (g.queries, g.out) == (p.out, str(tmp_path / "generated.jsonl"))
    assert c.queries == g.out and c.run == "r"
    assert plan.label == "r: smollm2 on train.jsonl / paraphrased by served"


def test_the_generate_step_uses_the_computes_model_adapter_and_system_prompt(
    tmp_path, tiny_model_dir
):
    """The model-generated set is the completions of the model the run computes with."""
    from tests.helpers import save_lora_adapter

    adapter = str(save_lora_adapter(tiny_model_dir, tmp_path / "adapter"))
    opts = options(
        tmp_path, model=str(tiny_model_dir), adapter=adapter, system_prompt="none", run="r"
    )
    gen, compute, _ = jobs.plan_job(opts, tmp_path, generate=True).steps
    g, c = parsed(gen), parsed(compute)
    assert (g.model, g.adapter, g.system_prompt) == (str(tiny_model_dir), adapter, "none")
    assert (c.model, c.adapter, c.system_prompt) == (g.model, g.adapter, g.system_prompt)


@pytest.mark.parametrize(
    "fields, paraphrase, message",
    [
        ({"queries": ""}, None, "choose a training set and a query set"),
        ({"queries": ""}, SETTINGS | {"model": ""}, "name the endpoint's model"),
        ({"queries": str(DEMO / "paraphrased.jsonl")}, None, "has no original in the training"),
        ({"project": "nope:1"}, None, "--project"),
    ],
)
def test_a_plan_that_could_not_run_is_refused(tmp_path, fields, paraphrase, message):
    opts = options(tmp_path, **fields)
    with pytest.raises(GradLensError, match=message):
        jobs.plan_job(opts, tmp_path, paraphrase=paraphrase)


def test_built_query_sets_and_a_building_steps_progress(tmp_path):
    out = tmp_path / "paraphrased.jsonl"
    steps = [["paraphrase", "--out", str(out)], ["generate", "--out", str(tmp_path / "g")]]
    job = jobs.create_job(tmp_path / "x.duckdb", "r", steps + [["select"]], "label")
    assert job.built_query_sets() == []  # nothing written yet
    rows = [{"id": "a", "flag": "prompt: identical"}, {"id": "b"}, {"id": "c", "flag": ""}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (built,) = job.built_query_sets()
    assert (built.step, built.path, built.examples, built.flagged) == ("paraphrase", out, 3, 1)
    assert built.kind == "paraphrased"

    jobs._set_status(job.folder, state="running", step=0, pid=os.getpgrp(), returncode=None)
    job = jobs.load_job(job.folder)
    assert (job.step, job.running, job.step_progress()) == ("paraphrase", True, None)
    half = Progress("", "paraphrase", "", os.getpid(), "running", 2, 3, 0, 4.0, 2.0, 0.0)
    write_progress(half, progress_path(out))
    assert job.step_progress() == half
    jobs._set_status(job.folder, state="complete", step=3, pid=None, returncode=0)
    done = jobs.load_job(job.folder)
    assert (done.step_index, done.step, done.step_progress()) == (2, "select", None)
