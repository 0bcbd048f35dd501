"""Computing from the browser (real `streamlit run`, headless Chromium): start a job on the
Compute page, hold it (SIGSTOP to its process group, so nothing races), visit every other page
while it runs (no exception, no lock error), see the progress advance, cancel, resume, and find
the finished run in the run picker with the dots the CLI computes for the same inputs."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from gradlens import jobs
from gradlens.engine.job import compute
from gradlens.store.database import Store
from tests.conftest import DEMO
from tests.e2e.conftest import assert_no_exception, page_text, shot, visit, wait_idle
from tests.helpers import synthetic_selected_db

pytestmark = pytest.mark.e2e

OTHER_PAGES = ["/", "/greedy", "/heatmaps", "/failures", "/project", "/runs", "/model"]


def wait_for(predicate, what: str, timeout_s: float = 120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def pick(page, label: str, option: str) -> None:
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def dots_of(db, run_name):
    with Store(db, read_only=True) as s:
        run_id = s.resolve(run_name)["run_id"]
        frame = s.frame("dots", run_id, "exact")
        sq = s.frame("norms", run_id, "exact")
    frame = frame.sort_values(["query_id", "candidate_id", "component_idx"])
    return frame.reset_index(drop=True), sq


def test_compute_from_the_browser_while_every_page_works(
    page, app_server, tmp_path_factory, tiny_model_dir
):
    tmp = tmp_path_factory.mktemp("compute-flow")
    db = synthetic_selected_db(tmp, "flow.duckdb")
    base = app_server(db)
    train, queries = DEMO / "small" / "train.jsonl", DEMO / "small" / "paraphrased.jsonl"

    visit(page, base, "/compute")
    box = page.get_by_role  # Streamlit labels help buttons too: pick inputs by role

    box("textbox", name="Model", exact=True).fill(str(tiny_model_dir))
    pick(page, "Training set", "a path on the server")
    pick(page, "Query set", "a path on the server")
    box("textbox", name="Training set: path (.jsonl, .csv or .parquet)").fill(str(train))
    box("textbox", name="Query set: path (.jsonl, .csv or .parquet)").fill(str(queries))
    box("textbox", name="Run name", exact=True).fill("from-browser")
    box("spinbutton", name="Candidates b").fill("3")
    box("spinbutton", name="Candidates b").press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Start job").click()
    wait_idle(page)
    assert_no_exception(page)
    job = wait_for(lambda: jobs.list_jobs(db), "the job to be registered")[0]
    pid = wait_for(lambda: jobs.load_job(job.folder).status.pid, "the runner to start")
    # hold the job while it computes: its progress file says it has started querying
    wait_for(lambda: (p := jobs.load_job(job.folder).progress()) and p.done >= 1, "progress")
    os.killpg(pid, signal.SIGSTOP)
    try:
        held = jobs.load_job(job.folder).progress()
        assert held is not None and held.done < held.total
        for path in OTHER_PAGES:  # every page serves while the job holds its work file
            text = visit(page, base, path)
            assert "lock" not in text.lower(), (path, text[:500])
        visit(page, base, "/compute")
        assert f"{held.done} / {held.total} queries" in page_text(page)
        shot(page, "flow-compute-held")
        # cancel: SIGINT reaches the stopped group once it continues; the run stays resumable
        page.get_by_role("button", name="Cancel").click()
    finally:
        os.killpg(pid, signal.SIGCONT)
    wait_for(lambda: jobs.load_job(job.folder).state == "cancelled", "the job to stop")
    stopped = jobs.load_job(job.folder).progress()
    assert stopped is not None and stopped.state == "interrupted" and stopped.done < stopped.total
    visit(page, base, "/compute")
    page.get_by_role("button", name="Resume").click()
    wait_for(lambda: jobs.load_job(job.folder).state == "complete", "the job to finish", 240)
    # the fragment notices the completion and redraws the app: the run is in the picker
    page.get_by_text("complete: the run is in every page's run picker").wait_for(timeout=30_000)
    visit(page, base, "/runs")
    wait_idle(page)
    picker = page.locator("[data-testid='stSidebar'] [data-testid='stSelectbox']").first
    listbox = page.get_by_role("listbox")
    for _ in range(3):  # a click during the page's first reruns may only focus the box
        picker.locator("input").click()
        with contextlib.suppress(PlaywrightTimeout):
            listbox.wait_for(timeout=3_000)
            break
    assert page.get_by_role("option", name="from-browser", exact=True).count() == 1
    page.keyboard.press("Escape")
    shot(page, "flow-compute-done")
    # the same dots as the CLI computes for the same inputs
    cli_db = tmp / "cli.duckdb"
    compute(str(tiny_model_dir), str(train), str(queries), str(cli_db), candidates=3,
            progress=False, run="cli")  # fmt: skip
    got, norms = dots_of(db, "from-browser")
    want, _ = dots_of(cli_db, "cli")
    assert got[["query_id", "candidate_id", "component_idx"]].equals(
        want[["query_id", "candidate_id", "component_idx"]]
    )
    sq = norms.set_index(["split", "example_id", "component_idx"])["sqnorm"]
    qsq = sq.loc[list(zip(["query"] * len(got), got["query_id"], got["component_idx"]))]
    csq = sq.loc[list(zip(["train"] * len(got), got["candidate_id"], got["component_idx"]))]
    scale = np.sqrt(qsq.to_numpy() * csq.to_numpy()) + 1e-30
    assert (np.abs(got["dot"].to_numpy() - want["dot"].to_numpy()) / scale).max() <= 1e-6
