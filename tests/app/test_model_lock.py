"""The model loaded for the lenses is shared by every session of the server (one
``st.cache_resource`` entry) and must never be used by two sessions at once: hooks and autograd
state live on the model object.

The test runs the three lens pages (backward lens, input embeddings, pair inspector) as
concurrent sessions (one AppTest per thread, each with its own inputs so that no result comes
from ``st.cache_data``) on one tiny Llama, through the real code path: ``run_on_model`` → the
page's ``compute`` → ``with holding(_lm):`` → the gradlens lens function. Forward hooks on the
shared model record each pass's thread and enter/exit times; no two intervals of different threads
may overlap.

So that a missing lock is caught every time rather than when the scheduler happens to
interleave, the first forward pass to enter the model waits (at most ``RENDEZVOUS_S``) until
every session has *arrived*: either it asked for the model's lock (it is then queued behind the
pass, which proceeds) or it entered the model itself (no lock: the passes now overlap). The lock
is observed through a thin wrapper that only counts ``acquire`` calls and delegates to the
model's own lock, so a lock that does not exclude (removed, or replaced by a no-op) still fails.
Verified by deleting ``with holding(_lm):`` in any one of views/backward_lens.py,
views/input_embeddings.py or views/pairs.py, and by a ``LoadedModel.lock`` that never blocks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from tests.conftest import REPO

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

#: The longest the first pass waits for the other sessions to arrive (only reached when a
#: session never asks for the lock nor enters the model, e.g. it failed early).
RENDEZVOUS_S = 30.0


@dataclass
class Pass:
    thread: int
    enter: float
    exit: float = float("nan")


class Probe:
    """Forward hooks that record every pass over the model, and the rendezvous."""

    def __init__(self, sessions: int) -> None:
        self.sessions = sessions
        self.passes: list[Pass] = []
        self.arrived: set[int] = set()
        self.inside = 0
        self.waited = False
        self.cond = threading.Condition()
        self._open: dict[int, Pass] = {}

    def arrive(self) -> None:
        with self.cond:
            self.arrived.add(threading.get_ident())
            self.cond.notify_all()

    def pre_hook(self, module, args, kwargs=None):
        me = threading.get_ident()  # the session's script thread
        with self.cond:
            self.arrived.add(me)
            self.inside += 1
            p = Pass(me, time.perf_counter())
            self.passes.append(p)
            self._open[me] = p
            self.cond.notify_all()
            if not self.waited:  # the very first pass holds the door until all have arrived
                self.waited = True
                self.cond.wait_for(lambda: len(self.arrived) >= self.sessions, RENDEZVOUS_S)

    def post_hook(self, module, args, output):
        with self.cond:
            self._open.pop(threading.get_ident()).exit = time.perf_counter()
            self.inside -= 1


class CountingLock:
    """Delegates to the model's own lock; counts who asks for it (observation only)."""

    def __init__(self, lock, probe: Probe) -> None:
        self._lock, self._probe = lock, probe

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._probe.arrive()
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def overlaps(passes: list[Pass]) -> list[tuple[Pass, Pass]]:
    """Pairs of passes of different threads whose [enter, exit] intervals intersect."""
    ordered = sorted(passes, key=lambda p: p.enter)
    return [
        (a, b)
        for i, a in enumerate(ordered)
        for b in ordered[i + 1 :]
        if a.thread != b.thread and b.enter < a.exit
    ]


def session(page: str, key: str, inputs: tuple, spec: str) -> AppTest:
    """A session on ``page`` with ``spec`` chosen and ``inputs`` as if Run had been pressed (its
    next run computes). The first runs are sequential: AppTest resolves a page's url_path only
    after a run, and switching pages is not safe from several threads."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["model_spec"] = spec
    at.run()
    at.switch_page(page).run()
    at.session_state[key] = (spec, *inputs)
    return at


def test_lens_sessions_never_use_the_shared_model_at_once(tmp_path, tiny_model_dir, monkeypatch):
    from dashboard.models import _load

    monkeypatch.setenv("GRADLENS_DB", str(tmp_path / "none.duckdb"))  # lens pages need no run
    st.cache_data.clear()  # earlier tests may have computed these very inputs on this model
    spec = str(tiny_model_dir)
    # Every lens page, the backward lens twice; each session has inputs no other has, so each
    # computes (the pages' st.cache_data is keyed by the inputs).
    pages = [
        ("views/backward_lens.py", "bl_inputs", ("Lionel Messi plays for", " Paris", 3, False)),
        ("views/backward_lens.py", "bl_inputs", ("The cat sat on the", " mat", 3, False)),
        (
            "views/input_embeddings.py",
            "ieb_inputs",  # the default experiment: random sentences
            ("The animal that says neigh is a", 2, 2, "adam", 0.05, 0),
        ),
        (
            "views/pairs.py",
            "pair_inputs",
            (
                ("I like to eat", " pizza"),
                ("I like to eat", " pizza."),
                "response",
                "mean",
                True,
                False,
            ),
        ),
    ]
    lm = _load(spec, False)  # the server's one model (the sessions get this very object)
    probe = Probe(len(pages))
    handles = [
        lm.model.register_forward_pre_hook(probe.pre_hook, with_kwargs=True),
        lm.model.register_forward_hook(probe.post_hook),
    ]
    monkeypatch.setattr(lm, "lock", CountingLock(lm.lock, probe))
    try:
        apps = [session(page, key, inputs, spec) for page, key, inputs in pages]
        errors: list[str] = []
        start = threading.Barrier(len(apps))

        def drive(at: AppTest) -> None:
            start.wait()
            try:
                at.run()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [
            threading.Thread(target=drive, args=(at,), name=f"session-{i}")
            for i, at in enumerate(apps)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for h in handles:
            h.remove()
    clash = overlaps(probe.passes)
    assert not clash, f"{len(clash)} pairs of sessions' passes overlap, e.g. {clash[0]}"
    assert not errors, errors
    for at in apps:
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        assert at.metric, "the page shows no result"
    assert len({p.thread for p in probe.passes}) == len(pages), "every session used the model"
