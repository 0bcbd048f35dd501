"""The websocket client of benchmarks/many_users_ws.py against the real server on the shipped
demo run: a greedy step and an opened failure, each checked in the server's reply, a wrong
expectation caught, and a short two-user phase reported without error. No browser."""

from __future__ import annotations

import asyncio
import json
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.many_users_ws import RUNS, CheckError, WsUser, phase, record
from gradlens.cli import main
from tests.conftest import DEMO

RUN = RUNS["demo"]
TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def ws_base(app_server, tmp_path_factory) -> str:
    db = tmp_path_factory.mktemp("ws") / "demo.duckdb"
    assert main(["import", "--db", str(db), "--from", str(DEMO / "runs" / RUN)]) == 0
    return app_server(db)


async def one_of_each(base: str) -> None:
    greedy = WsUser("greedy", "greedy", base, RUN, TIMEOUT_S)
    failure = WsUser("failure", "failure", base, RUN, TIMEOUT_S)
    try:
        await greedy.open()
        assert greedy.steps == 0
        seconds, _ = await greedy.act()
        assert greedy.steps == 1 and 0 < seconds < TIMEOUT_S
        assert "subset=" in greedy.session.query  # the server moved the view into the URL
        await failure.open()
        first = failure.queries[0]
        seconds, _ = await failure.act()
        assert 0 < seconds < TIMEOUT_S
        assert f"query={first}" in failure.session.query
        greedy.steps = 5  # the page shows 2 after the next step, not 6
        with pytest.raises(CheckError, match="subset of 2, not 6"):
            await greedy.act()
    finally:
        await greedy.close()
        await failure.close()


def run_apart(coroutine):
    """``asyncio.run`` in a thread of its own: Playwright's sync API (the other e2e tests'
    session-wide browser) keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def test_a_step_and_a_failure_are_checked_in_the_reply(ws_base):
    run_apart(one_of_each(ws_base))


def test_a_short_phase_reports_every_action(ws_base):
    args = Namespace(action_timeout=TIMEOUT_S, pace=0.1)
    kinds = ["greedy", "failure"]
    setting = run_apart(phase(ws_base, RUN, kinds, args, 2, 0.0, "test"))
    rec = json.loads(json.dumps(record(setting, setting.log, {"client": "ws"})))
    assert rec["errors"] == 0, rec["error_samples"]
    assert rec["actions"] == 4 and rec["greedy"]["n"] == 2 and rec["failure"]["n"] == 2
    assert rec["ratio"] == 1.0 and rec["server_cpu_s"] > 0
