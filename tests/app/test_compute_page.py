"""The Compute page under AppTest: the CLI's one-line validation messages before anything starts
(no job is created for bad input), and a valid job registered and started."""

from __future__ import annotations

import time

import pytest

from gradlens import jobs
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
    at.number_input(key="compute_b").set_value(3)
    at = submit(at)
    assert not at.exception and not at.error
    (job,) = jobs.list_jobs(db)
    assert [s[0] for s in job.spec.steps] == ["compute", "select"]
    deadline = time.time() + 180
    while jobs.load_job(job.folder).state not in ("complete", "failed") and time.time() < deadline:
        time.sleep(1)
    done = jobs.load_job(job.folder)
    assert done.state == "complete", done.log_tail()
    from gradlens import queries

    assert "small-tiny" in set(queries.list_runs(db)["name"])
