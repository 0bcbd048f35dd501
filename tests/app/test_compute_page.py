"""The Compute page under AppTest: the CLI's one-line validation messages before anything starts
(no job is created for bad input), and a valid job registered and started."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from gradlens import jobs
from gradlens.files import Progress, progress_path, write_progress
from tests.conftest import DEMO, REPO
from tests.helpers import synthetic_selected_db

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


def compute_page(db, monkeypatch) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("views/compute.py")
    return at.run()


def use_paths(at: AppTest, train: str, queries: str) -> None:
    at.selectbox(key="compute_train_pick").set_value("a path on the server").run()
    at.selectbox(key="compute_queries_pick").set_value("a path on the server").run()
    at.text_input(key="compute_train_path").set_value(train)
    at.text_input(key="compute_queries_path").set_value(queries)


def submit(at: AppTest) -> AppTest:
    return at.button(key="compute_start").click().run()


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "a", "prompt": "x"}', "response"),  # a missing field, named with its line
        ("not json", "bad.jsonl:1: broken JSON"),
    ],
)
def test_bad_files_get_the_clis_message_and_no_job(tmp_path, monkeypatch, line, message):
    db = synthetic_selected_db(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    at = compute_page(db, monkeypatch)
    assert not at.exception
    use_paths(at, str(bad), str(DEMO / "paraphrased.jsonl"))
    at = submit(at)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "bad.jsonl" in errors[0] and message in errors[0]
    assert "\n" not in errors[0]
    assert jobs.list_jobs(db) == []  # nothing half-made is left behind


def test_queries_without_originals_are_refused(tmp_path, monkeypatch):
    db = synthetic_selected_db(tmp_path)
    at = compute_page(db, monkeypatch)
    use_paths(at, str(DEMO / "small" / "train.jsonl"), str(DEMO / "paraphrased.jsonl"))
    at = submit(at)
    assert "has no original in the training set" in at.error[0].value


def test_a_valid_job_is_registered_and_runs(tmp_path, monkeypatch, tiny_model_dir):
    db = synthetic_selected_db(tmp_path)
    at = compute_page(db, monkeypatch)
    at.text_input(key="compute_model").set_value(str(tiny_model_dir))
    use_paths(at, str(DEMO / "small" / "train.jsonl"), str(DEMO / "small" / "paraphrased.jsonl"))
    at.text_input(key="compute_run").set_value("small-tiny")
    at.number_input(key="compute_candidates").set_value(3)
    at = submit(at)
    assert not at.exception and not at.error
    (job,) = jobs.list_jobs(db)
    assert [s[0] for s in job.spec.steps] == ["compute", "select"]
    deadline = time.time() + 180
    while jobs.load_job(job.folder).state not in ("complete", "failed") and time.time() < deadline:
        time.sleep(1)
    done = jobs.load_job(job.folder)
    assert done.state == "complete", done.log_tail()
    from gradlens.runs import read as queries

    assert "small-tiny" in set(queries.list_runs(db)["name"])


def test_the_adapter_and_index_fields_reach_the_compute_step(tmp_path, monkeypatch, tiny_model_dir):
    from tests.helpers import save_lora_adapter

    adapter = str(save_lora_adapter(tiny_model_dir, tmp_path / "adapter"))
    db = synthetic_selected_db(tmp_path)
    at = compute_page(db, monkeypatch)
    at.text_input(key="compute_model").set_value(str(tiny_model_dir))
    use_paths(at, str(DEMO / "small" / "train.jsonl"), str(DEMO / "small" / "paraphrased.jsonl"))
    at.text_input(key="compute_adapter").set_value(adapter)
    at.text_input(key="compute_index").set_value("sjlt:d8")
    monkeypatch.setattr(jobs, "start", lambda job: None)  # the plan is checked, not run
    at = submit(at)
    assert not at.exception and not at.error
    (job,) = jobs.list_jobs(db)
    compute = job.spec.steps[0]
    assert (arg(compute, "--adapter"), arg(compute, "--index")) == (adapter, "sjlt:d8")


def paraphrase_form(at: AppTest, key_env: str = "", endpoint: str = "http://127.0.0.1:8000/v1"):
    at.selectbox(key="compute_train_pick").set_value("small demo training set (16)").run()
    at.checkbox(key="compute_paraphrase").check().run()
    at.text_input(key="compute_pp_endpoint").set_value(endpoint)
    at.text_input(key="compute_pp_model").set_value("some-served-model")
    at.text_input(key="compute_pp_api_key_env").set_value(key_env)


def arg(step, flag: str) -> str:
    return step[list(step).index(flag) + 1]


def test_the_paraphrased_set_is_built_first_and_the_key_stays_in_the_environment(
    tmp_path, monkeypatch
):
    db = synthetic_selected_db(tmp_path)
    started = []
    monkeypatch.setattr(jobs, "start", started.append)  # registered, not run: no server here
    monkeypatch.setenv("GRADLENS_TEST_PP_KEY", "sk-never-stored-42")
    at = compute_page(db, monkeypatch)
    paraphrase_form(at, key_env="GRADLENS_TEST_PP_KEY")
    # the paraphrases are the query set: no query set to choose
    assert not [s for s in at.selectbox if s.key == "compute_queries_pick"]
    at.checkbox(key="compute_generate").check()
    at = submit(at)
    assert not at.exception and not at.error
    (job,) = jobs.list_jobs(db)
    assert len(started) == 1
    para, gen, comp, _ = job.spec.steps
    assert [s[0] for s in job.spec.steps] == ["paraphrase", "generate", "compute", "select"]
    assert arg(para, "--train") == "data/demo/small/train.jsonl"
    assert arg(para, "--api-key-env") == "GRADLENS_TEST_PP_KEY"
    assert arg(para, "--model") == "some-served-model"
    # paraphrase -> generate (the paraphrases' prompts) -> compute (the generated set), the
    # built sets kept in the job's folder, not in inputs/ (removed once the job succeeds)
    assert Path(arg(para, "--out")).parent == Path(arg(gen, "--out")).parent == job.folder
    assert arg(gen, "--queries") == arg(para, "--out")
    assert arg(comp, "--queries") == arg(gen, "--out")
    from gradlens.cli import build_parser

    build_parser().parse_args(list(para))  # the CLI takes the step as written
    stored = "".join(p.read_text() for p in job.folder.rglob("*") if p.is_file())
    assert "sk-never-stored-42" not in stored


@pytest.mark.parametrize(
    "key_env, endpoint, message",
    [
        (
            "GRADLENS_TEST_UNSET_KEY",
            "http://127.0.0.1:8000/v1",
            "GRADLENS_TEST_UNSET_KEY is not set",
        ),
        ("", "localhost:8000", "--endpoint: expected an http(s) URL"),
    ],
)
def test_a_paraphrase_step_that_could_not_run_is_refused(
    tmp_path, monkeypatch, key_env, endpoint, message
):
    monkeypatch.delenv("GRADLENS_TEST_UNSET_KEY", raising=False)
    db = synthetic_selected_db(tmp_path)
    at = compute_page(db, monkeypatch)
    paraphrase_form(at, key_env=key_env, endpoint=endpoint)
    at = submit(at)
    assert len(at.error) == 1 and message in at.error[0].value
    assert jobs.list_jobs(db) == []


def test_a_running_paraphrase_step_shows_its_progress(tmp_path, monkeypatch):
    """The steps before the compute report through their OUT.progress.json."""
    db = synthetic_selected_db(tmp_path)
    out = tmp_path / "paraphrased.jsonl"
    steps = [["paraphrase", "--train", "t.jsonl", "--out", str(out)], ["compute"], ["select"]]
    job = jobs.create_job(db, "r", steps, "r: a label")
    # running, with this process group standing in for the runner's (alive)
    jobs._set_status(job.folder, state="running", step=0, pid=os.getpgrp(), returncode=None)
    at = compute_page(db, monkeypatch)
    assert "paraphrase: starting" in [p.proto.text for p in at.get("progress")]
    half = Progress("", "paraphrase", "", os.getpid(), "running", 8, 16, 0, 10.0, 10.0, 0.0)
    write_progress(half, progress_path(out))
    at = compute_page(db, monkeypatch)
    assert not at.exception
    texts = [p.proto.text for p in at.get("progress")]
    assert any("paraphrase: 8 / 16 examples" in t and "ETA 10 s" in t for t in texts), texts


def test_a_built_query_set_can_be_downloaded_with_its_flag_count(tmp_path, monkeypatch):
    db = synthetic_selected_db(tmp_path)
    job = jobs.create_job(db, "r", [["paraphrase", "--out", "X"], ["select"]], "r: a label")
    out = job.folder / "paraphrased.jsonl"
    rows = [{"id": "a", "prompt": "p", "response": "r", "flag": "prompt: identical"}]
    rows += [{"id": "b", "prompt": "p2", "response": "r2"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    steps = [["paraphrase", "--out", str(out)], ["select"]]
    spec = json.loads((job.folder / "job.json").read_text()) | {"steps": steps}
    (job.folder / "job.json").write_text(json.dumps(spec))
    jobs._set_status(job.folder, state="complete", step=2, pid=None, returncode=0)
    at = compute_page(db, monkeypatch)
    assert not at.exception
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download the paraphrased query set (2 examples, 1 flagged)"]
