"""Fault injection: kill the process at a named point, to test that every writer survives it.

``GRADLENS_FAULT=POINT[:N][:int]`` makes the N-th time (default the first) this process reaches
``fault_point(POINT)`` its end: ``os.kill(os.getpid(), SIGKILL)``, an abrupt death with no
cleanup, no ``finally`` block and no DuckDB rollback, as a power cut or the OOM killer would
leave it. With ``:int`` the point sends SIGINT instead (what Ctrl-C does), so the command takes
its interrupted path. Several specs may be given, separated by commas. Unset, a point costs one
dictionary lookup. Counts are per process (under torchrun, every rank counts for itself).

Points (the state a kill leaves behind; rerunning the same command must end with exactly the
rows of an uninterrupted run, ``tests/cli/test_kill.py``):

==========================  ======================================================================
``compute.model``           the model is loaded; nothing of the run is written yet
``compute.bm25``            BM25 candidates are chosen; nothing of the run is written yet
``compute.setup``           inside the transaction that writes the run's components, examples and
                            candidates into the work file (after the components)
``compute.query``           inside a query, its gradients computed and its rows not yet written
                            (N = the N-th query this process computes)
``compute.write``           inside a query's write transaction, between its dots and its norms and
                            progress row (N = the N-th query this process writes)
``compute.complete``        the work file's run is marked complete; nothing published yet
``compute.publish``         inside the transaction that publishes the run into the database,
                            after the N-th table (``runs`` first) is copied
``compute.published``       the run is published; the job's work and progress files remain
``index.write``             inside the write of the N-th index row this process writes: its vectors
                            and norms are in the work folder, the row is not yet marked written
``index.finalized``         every index row is written and each method's folder described
                            (digests); nothing moved into place
``index.moved``             the finished index folders are in ``X.index/<run_id>/``; the database
                            does not describe them yet
``index.record``            inside the transaction that describes an index in the database, after
                            its files' rows (the publish of a run, or a published run's own)
``generate.model``          the model is loaded; nothing generated yet
``generate.line``           the N-th completion is appended (and flushed) to ``OUT.partial``
``generate.out``            every completion is written to a temporary file beside OUT, which
                            is not yet renamed into place
``import.write``            inside the transaction that imports long tables, after the dots
``restore.write``           inside the transaction of ``import --from``, after the N-th table
``select.computed``         the headline and curves are computed; nothing written yet
``select.write``            inside the transaction that replaces the run's curves, after the old
                            ones are deleted
==========================  ======================================================================
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["ENV", "POINTS", "fault_point"]

#: The environment variable naming the fault.
ENV = "GRADLENS_FAULT"
#: Every point placed in the code (a spec naming another one is an error, not a silent no-op).
POINTS = frozenset(
    {
        "compute.model",
        "compute.bm25",
        "compute.setup",
        "compute.query",
        "compute.write",
        "compute.complete",
        "compute.publish",
        "compute.published",
        "index.write",
        "index.finalized",
        "index.moved",
        "index.record",
        "generate.model",
        "generate.line",
        "generate.out",
        "import.write",
        "restore.write",
        "select.computed",
        "select.write",
    }
)

_reached: Counter[str] = Counter()


def _parse(spec: str) -> dict[str, tuple[int, signal.Signals]]:
    """``"compute.write:3,select.write:1:int"`` -> {point: (N, signal)}; ValueError if odd."""
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, *rest = item.split(":")
        sig = signal.SIGKILL
        if rest and rest[-1] == "int":
            sig = signal.SIGINT
            rest = rest[:-1]
        if name not in POINTS or len(rest) > 1 or (rest and not rest[0].isdigit()):
            raise ValueError(
                f"{ENV}={spec!r}: expected POINT[:N][:int] with POINT one of "
                f"{', '.join(sorted(POINTS))}"
            )
        out[name] = (int(rest[0]) if rest else 1, sig)
    return out


def fault_point(name: str) -> None:
    """Die here (SIGKILL, or SIGINT with ``:int``) when ``GRADLENS_FAULT`` names this point and
    this is the N-th time the process reaches it; otherwise do nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    if name not in POINTS:
        raise ValueError(f"fault point {name!r} is not in gradlens.faults.POINTS")
    faults = _parse(spec)
    if name not in faults:
        return
    _reached[name] += 1
    nth, sig = faults[name]
    if _reached[name] != nth:
        return
    if sig == signal.SIGINT:
        signal.raise_signal(sig)  # the handler runs here: KeyboardInterrupt, as on Ctrl-C
        return
    os.kill(os.getpid(), sig)
