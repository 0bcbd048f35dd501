"""Two users of one server never see each other's selection.

Each AppTest is its own session in this process, as each browser tab is a session in the
server's process: what could leak between them is module-level state (``dashboard.common`` is
imported once per process) and what ``st.cache_*`` shares. The first test interleaves two
sessions (greedy steps, objective, a failure opened) and checks after every move that the other
session, and one opened afterwards, still shows its own state. The second hammers the greedy
stepper that ``st.cache_resource`` shares between sessions from 8 threads at once and compares
every answer with the one computed alone.

Verified by removal: with the view kept in a module-level variable of ``dashboard.common``
instead of ``st.session_state`` the first test fails (session B shows A's subset); with
``common.stepper`` returning the bare ``GreedyStepper`` (no ``SharedStepper`` lock) the second
fails (its scorer's shared buffers mix the threads' sums).
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from dashboard import common
from gradlens.runs import read as queries
from gradlens.selection import GreedyStepper, failures, greedy_select
from tests.conftest import REPO
from tests.helpers import synthetic_selected_db

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return synthetic_selected_db(tmp_path_factory.mktemp("sessions"))


def open_session(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page(f"views/{page}.py")
    return at.run()


def shown(at: AppTest) -> dict:
    """What the session shows of its selection after a rerun: the sidebar's subset line, the
    URL (the view mirrored: subset, objective, query) and the page's own widgets."""
    at.run()
    assert not at.exception, at.exception
    line = next(m.value for m in at.sidebar.markdown if m.value.startswith("**Subset**"))
    url = dict(at.query_params)
    out = {
        "line": line,
        "subset": tuple(int(c) for c in url["subset"].split(",")) if "subset" in url else (),
        "objective": url.get("objective", "accuracy"),
        "query": url.get("query"),
    }
    for name, widgets, key in (
        ("picker", at.multiselect, "greedy_picker"),
        ("picked", at.selectbox, "fail_pick"),
    ):
        try:
            out[name] = widgets(key=key).value
        except KeyError:  # not on this page
            pass
    for chart in at.get("plotly_chart"):  # the greedy curve: its title and current-subset mark
        spec = json.loads(chart.proto.spec)
        for trace in spec["data"]:
            if trace.get("name") == "current subset":
                out["chart"] = spec["layout"]["title"]["text"]
                out["mark"] = trace["y"][0] if trace.get("visible", True) else None
    return out


def line(k: int, n: int) -> str:
    return f"**Subset**: {n} of {k} components"


def test_two_sessions_selections_never_leak(db, monkeypatch):
    monkeypatch.setenv("GRADLENS_DB", str(db))
    a = queries.load_arrays(db, "syn")
    k = a.shape[2]
    steps = greedy_select(*a.core, valid=a.valid)
    by_acc, acc = [s.component_idx for s in steps], [s.accuracy for s in steps]
    steps = greedy_select(*a.core, objective="fidelity", valid=a.valid)
    by_fid, fid = [s.component_idx for s in steps], [s.fidelity for s in steps]

    first, second = open_session("greedy"), open_session("greedy")  # both opened before any move
    first.button(key="step_forward").click().run()
    first.button(key="step_forward").click().run()
    assert shown(first)["subset"] == tuple(by_acc[:2])
    b = shown(second)
    assert b["subset"] == () and b["line"] == line(k, 0) and b["picker"] == []
    assert b["mark"] is None  # no current subset on its curve
    assert shown(open_session("greedy"))["subset"] == ()  # a session opened afterwards

    second.radio(key="greedy_objective").set_value("fidelity").run()
    second.button(key="step_forward").click().run()
    b = shown(second)
    assert b["subset"] == tuple(by_fid[:1]) and b["objective"] == "fidelity"
    assert b["line"] == line(k, 1) and b["picker"] == [a.names[by_fid[0]]]
    assert b["chart"] == "Greedy selection by fidelity" and b["mark"] == pytest.approx(fid[0])
    f = shown(first)
    assert f["subset"] == tuple(by_acc[:2]) and f["objective"] == "accuracy"
    assert f["line"] == line(k, 2) and f["picker"] == [a.names[c] for c in by_acc[:2]]
    assert f["chart"] == "Greedy selection by accuracy" and f["mark"] == pytest.approx(acc[1])

    # A opens a failure of the full gradient; B (and a new session) have no query open.
    first.button(key="reset").click().run()
    first.switch_page("views/failures.py").run()
    wrong = list(failures(a, list(range(k)))["query_id"])
    assert wrong, "the synthetic run has failures under the full gradient"
    first.selectbox(key="fail_pick").set_value(wrong[-1]).run()
    f = shown(first)
    assert f["query"] == wrong[-1] and f["picked"] == wrong[-1]
    second.switch_page("views/failures.py").run()
    b = shown(second)
    assert b["query"] is None and b["picked"] is None and b["subset"] == tuple(by_fid[:1])
    assert shown(open_session("failures"))["query"] is None
    second.switch_page("views/greedy.py").run()
    second.button(key="step_back").click().run()
    assert shown(second)["subset"] == () and shown(second)["objective"] == "fidelity"
    f = shown(first)
    assert f["query"] == wrong[-1] and f["subset"] == () and f["line"] == line(k, 0)


def random_arrays(n: int = 1000, b: int = 5, k: int = 48, seed: int = 0) -> SimpleNamespace:
    """What ``common.stepper`` reads from a run, random and large enough that numpy releases
    the GIL inside the scorer (so threads really interleave there)."""
    rng = np.random.default_rng(seed)
    dots = rng.normal(size=(n, b, k))
    query_sq = rng.gamma(2.0, 1.0, (n, k))
    cand_sq = rng.gamma(2.0, 1.0, (n, b, k))
    target = rng.integers(0, b, n)
    return SimpleNamespace(core=(dots, query_sq, cand_sq, target), valid=np.ones((n, b), bool))


def test_concurrent_sessions_share_the_greedy_stepper_safely(tmp_path, monkeypatch):
    fake = random_arrays()
    monkeypatch.setattr(common, "arrays", lambda *args: fake)
    key = (str(tmp_path / "fake.duckdb"), "fake", "exact", "accuracy", (0.0, 0))
    common.stepper.clear()
    try:
        shared = common.stepper(*key)
        assert common.stepper(*key) is shared  # what every session gets
        alone = GreedyStepper(*fake.core, valid=fake.valid)
        rng = np.random.default_rng(1)
        k = fake.core[0].shape[2]
        subsets = [[int(c) for c in rng.permutation(k)[: 1 + 3 * i]] for i in range(8)]
        want = [(alone.next_component(s), alone.subset_scores(s)) for s in subsets]
        wrong: list[tuple[int, object, object]] = []
        start = threading.Barrier(len(subsets))

        def session(i: int) -> None:
            start.wait()
            for _ in range(25):
                got = (shared.next_component(subsets[i]), shared.subset_scores(subsets[i]))
                if got != want[i]:
                    wrong.append((i, got, want[i]))

        threads = [threading.Thread(target=session, args=(i,)) for i in range(len(subsets))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        common.stepper.clear()
    assert not wrong, f"{len(wrong)} answers differ from the stepper's alone, e.g. {wrong[0]}"
