"""Benchmark: many users on one dashboard server, driven through Streamlit's own websocket
protocol (``/_stcore/stream``, binary protobuf BackMsg / ForwardMsg) by clients that do not
render: N sessions in this one Python process (asyncio), so the server, not a browser, sets the
latency. The same users, actions and pace as benchmarks/many_users.py (which drives headless
Chromium): half of them press "Step forward" on the greedy page, the other half open the next
full-gradient failure in the failure page's "Query to inspect" box, each about once a second.

An action is one BackMsg ``rerun_script`` carrying the widget's new state (the button's trigger,
or the selectbox's value; the other widgets keep their server-side values, as for any widget a
client does not report), timed from sending it to the server's ``script_finished``. The reply is
checked: the run finished successfully, no exception element, and the change is in the returned
deltas (the sidebar's "**Subset**: n+1 of" after a step, the heading "Query <id>" after opening
a failure). An error is a failed check, a run not finished within --action-timeout, or a closed
websocket.

    python benchmarks/many_users_ws.py [--users 2,4,8] [--seconds 60] [--single 20]
    python benchmarks/many_users_ws.py --soak-minutes 10 [--soak-users 8]

First one user alone does --single actions of each kind (the single-user figure), then, for each
count in --users, that many users act together for --seconds. Targets: no error; median ≤ 2 ×
the single-user median; p95 ≤ 1 s. The soak has --soak-users users act for --soak-minutes while
the server's RSS is sampled every --rss-every seconds; target: no error and RSS (its peak)
growing ≤ 10 % from the 2-minute mark on. Each setting prints one JSON line (prefix ``JSON ``)
and a readable summary. --data paper (the default when the paper's files are there) serves the
same run as many_users.py; --data demo the shipped demo's model-generated run (124 queries × 5
candidates × 211 components, ~100 full-gradient failures). With --strict the exit code is 1 when
a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ClientState_pb2 import ClientState  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402
from streamlit.proto.WidgetStates_pb2 import WidgetState  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.typing import Subprotocol  # noqa: E402

from benchmarks.many_users import (  # noqa: E402
    KINDS,
    TARGET_P95_S,
    TARGET_RATIO,
    Log,
    User,
    _proc_table,
    build_db,
    cpu_seconds,
    paper_dir,
    pct,
    summary,
)
from gradlens.figures.textdiff import escape_markdown  # noqa: E402
from tests.e2e.conftest import streamlit_server  # noqa: E402

CACHE = REPO / "out" / "bench" / "many_users"
DEMO_RUNS = REPO / "data" / "demo" / "runs"
RUNS = {"paper": "paraphrased", "demo": "model-generated"}
PATHS = {"greedy": "greedy", "failure": "failures"}
DONE = ForwardMsg.FINISHED_SUCCESSFULLY
RERUN = ForwardMsg.FINISHED_EARLY_FOR_RERUN
TARGET_RSS_GROWTH = 0.10
SOAK_FROM_S = 120.0


class CheckError(RuntimeError):
    """The server's reply does not show what the action should have changed."""


# -- one session over the websocket -------------------------------------------------------------
class Session:
    """One Streamlit session: sends ``rerun_script`` BackMsgs and keeps what the last script run
    sent (its elements by delta path), the page's script hash and the URL's query string, as a
    browser tab would, without rendering anything."""

    def __init__(self, base: str, page: str, query_string: str, timeout_s: float) -> None:
        self.url = "ws" + base.removeprefix("http") + "/_stcore/stream"
        self.page, self.query, self.timeout_s = page, query_string, timeout_s
        self.page_hash = ""
        self.elements: dict[tuple[int, ...], object] = {}
        self.ws = None
        self._done: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None

    async def connect(self) -> None:
        self.ws = await connect(
            self.url,
            subprotocols=[Subprotocol("streamlit")],
            max_size=None,
            open_timeout=self.timeout_s,
        )
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                if isinstance(data, bytes):
                    self._on(ForwardMsg.FromString(data))
        except ConnectionClosed:
            pass
        finally:
            self._finish(exc=ConnectionError("the websocket closed"))

    def _finish(self, status: int | None = None, exc: Exception | None = None) -> None:
        if self._done is not None and not self._done.done():
            if exc is not None:
                self._done.set_exception(exc)
            else:
                self._done.set_result(status)

    def _on(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self.elements[tuple(msg.metadata.delta_path)] = msg.delta.new_element
        elif kind == "navigation":
            self.page_hash = msg.navigation.page_script_hash
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "script_finished" and msg.script_finished != RERUN:
            self._finish(status=msg.script_finished)
        elif kind == "ref_hash":  # we report no cached message, so none may be referred to
            self._finish(exc=CheckError(f"unexpected cached-message reference {msg.ref_hash}"))

    async def rerun(self, *widgets: WidgetState) -> float:
        """One script run with these widget states; seconds from sending the BackMsg to the
        server's ``script_finished``. Raises when the run did not finish successfully or its
        page shows an exception."""
        back = BackMsg()
        back.rerun_script.CopyFrom(
            ClientState(
                query_string=self.query,
                page_script_hash=self.page_hash,
                page_name="" if self.page_hash else self.page,
            )
        )
        back.rerun_script.widget_states.widgets.extend(widgets)
        self.elements = {}
        self._done = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        await self.ws.send(back.SerializeToString())
        try:
            status = await asyncio.wait_for(self._done, self.timeout_s)
        except TimeoutError:
            raise TimeoutError(f"no script_finished within {self.timeout_s:g} s") from None
        seconds = time.perf_counter() - t0
        if status != DONE:
            raise CheckError(f"script finished with status {status}")
        for el in self.elements.values():
            if el.WhichOneof("type") == "exception":
                raise CheckError(f"exception: {el.exception.type}: {el.exception.message[:300]}")
        return seconds

    def find(self, kind: str, label: str):
        """The element proto of type ``kind`` (e.g. "button") with this label, or raise."""
        for el in self.elements.values():
            if el.WhichOneof("type") == kind and getattr(el, kind).label == label:
                return getattr(el, kind)
        raise CheckError(f"no {kind} {label!r} on the page")

    def texts(self, kind: str) -> list[str]:
        """The bodies of the elements of type ``kind`` ("markdown", "heading", ...)."""
        return [
            getattr(e, kind).body for e in self.elements.values() if e.WhichOneof("type") == kind
        ]


def trigger(element) -> WidgetState:
    return WidgetState(id=element.id, trigger_value=True)


# -- one user -----------------------------------------------------------------------------------
class WsUser(User):
    """One session doing one kind of action; ``loop`` (pacing, errors) is many_users.User's."""

    def __init__(self, name: str, kind: str, base: str, run: str, timeout_s: float) -> None:
        super().__init__(name, kind, None, base, timeout_s)
        self.run, self.timeout_s = run, timeout_s
        self.session: Session | None = None

    async def open(self) -> None:
        self.session = Session(self.base, PATHS[self.kind], f"run={self.run}", self.timeout_s)
        await self.session.connect()
        await self.session.rerun()
        self.steps = self.subset_size()
        if self.kind == "failure":
            box = self.session.find("selectbox", "Query to inspect")
            self.queries = [q for q in box.options if not q.startswith("(")]
            if len(self.queries) < 2:
                raise RuntimeError(f"the failure page lists {len(self.queries)} failures (< 2)")
            random.shuffle(self.queries)

    def subset_size(self) -> int:
        """The subset size the sidebar shows ("**Subset**: n of k components")."""
        for body in self.session.texts("markdown"):
            if body.startswith("**Subset**:"):
                return int(body.split(":", 1)[1].split("of")[0])
        raise CheckError("no subset line in the sidebar")

    async def step(self, button: str, want: int) -> float:
        seconds = await self.session.rerun(trigger(self.session.find("button", button)))
        got = self.subset_size()
        if got != want:
            raise CheckError(f"{button}: the sidebar shows a subset of {got}, not {want}")
        self.steps = got
        return seconds

    async def act(self) -> tuple[float, None]:
        """One action, checked in the reply; the server's seconds (and no browser figure)."""
        if self.kind == "greedy":
            if self.steps >= 100:  # keep clear of the end, as many_users.py does: start over
                await self.step("Reset", 0)
            return await self.step("Step forward", self.steps + 1), None
        box = self.session.find("selectbox", "Query to inspect")
        query = self.queries[self.turn % len(self.queries)]
        self.turn += 1
        seconds = await self.session.rerun(WidgetState(id=box.id, string_value=query))
        want = f"Query {escape_markdown(query)}"
        if want not in self.session.texts("heading"):
            raise CheckError(f"no heading {want!r} after opening {query!r}")
        return seconds, None

    async def recover(self) -> None:
        """After an error: a fresh session (a browser would reload the page), so that no reply
        to the failed action can be taken for the next one's."""
        try:
            await self.session.close()
            await self.open()
        except Exception:  # noqa: BLE001 - the next action reports it
            pass

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


# -- settings -----------------------------------------------------------------------------------
@dataclass
class Setting:
    """What one setting measured: the log, wall seconds, CPU seconds of the server and of this
    client process, and the server's RSS samples (seconds from the start, MiB)."""

    label: str
    users: int
    log: Log
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    rss: list[tuple[float, float]] = field(default_factory=list)


def server_pid() -> int | None:
    """The streamlit server: the child of this process whose command line names streamlit."""
    me = os.getpid()
    for pid, (ppid, _, cmd) in _proc_table().items():
        if ppid == me and "streamlit" in cmd:
            return pid
    return None


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sample_rss(out: list[tuple[float, float]], every_s: float, t0: float) -> None:
    pid = server_pid()
    if pid is None:
        raise RuntimeError("no streamlit server among this process's children")
    while True:
        out.append((time.monotonic() - t0, rss_mib(pid)))
        await asyncio.sleep(every_s)


async def phase(
    base: str,
    run: str,
    kinds: list[str],
    args,
    count: int | None,
    seconds: float,
    label: str,
    rss_every: float | None = None,
) -> Setting:
    """Open one session per user, one untimed action each (it fills the caches), then let them
    act together for ``count`` actions each or ``seconds``."""
    setting = Setting(label, len(kinds), Log())
    users = [WsUser(f"user{i}-{k}", k, base, run, args.action_timeout) for i, k in enumerate(kinds)]
    try:
        await asyncio.gather(*(u.open() for u in users))
        for u in users:
            try:
                await u.act()
            except Exception as exc:  # noqa: BLE001 - counted like any other action's
                setting.log.errors.append(f"{u.name} (first action): {type(exc).__name__}: {exc}")
                await u.recover()
        cpu0, client0, t0 = cpu_seconds()["server"], time.process_time(), time.monotonic()
        sampler = None
        if rss_every:
            sampler = asyncio.create_task(sample_rss(setting.rss, rss_every, t0))
        until = None if count is not None else t0 + seconds
        await asyncio.gather(*(u.loop(setting.log, until, count, args.pace) for u in users))
        setting.wall = time.monotonic() - t0
        if sampler is not None:
            setting.rss.append((setting.wall, rss_mib(server_pid())))
            sampler.cancel()
        setting.cpu = {
            "server": cpu_seconds()["server"] - cpu0,
            "client": time.process_time() - client0,
        }
    finally:
        await asyncio.gather(*(u.close() for u in users), return_exceptions=True)
    return setting


# -- reports ------------------------------------------------------------------------------------
def ms(x: float) -> float:
    return round(x * 1e3, 1)


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median_ms": ms(statistics.median(values)),
        "p95_ms": ms(pct(values, 95)),
        "max_ms": ms(max(values)),
    }


def pooled(log: Log) -> list[float]:
    return [t for k in KINDS for t in log.times[k]]


def rss_growth(rss: list[tuple[float, float]]) -> dict:
    """The RSS at the first sample from SOAK_FROM_S on, the last and the peak after it, and
    the peak's growth over the first."""
    later = [(t, m) for t, m in rss if t >= SOAK_FROM_S]
    if not later:
        return {}
    base, peak = later[0][1], max(m for _, m in later)
    return {
        "rss_at_2min_mib": round(base, 1),
        "rss_last_mib": round(later[-1][1], 1),
        "rss_peak_mib": round(peak, 1),
        "rss_growth": round(peak / base - 1, 4),
    }


def record(s: Setting, single: Log | None, meta: dict) -> dict:
    """The setting as one JSON-able dict, with its targets checked."""
    times = pooled(s.log)
    out = {**meta, "setting": s.label, "users": s.users, "wall_s": round(s.wall, 1)}
    out |= {"actions": len(times), "errors": len(s.log.errors), **stats(times)}
    out |= {k: stats(s.log.times[k]) for k in KINDS if s.log.times[k]}
    n = max(1, len(times))
    out |= {f"{k}_cpu_s": round(v, 2) for k, v in s.cpu.items()}
    out |= {f"{k}_cpu_per_action_ms": ms(v / n) for k, v in s.cpu.items()}
    targets = {"errors": len(s.log.errors) == 0}
    if single and pooled(single) and times:
        one = pooled(single)
        out["single_median_ms"] = ms(statistics.median(one))
        out["ratio"] = round(statistics.median(times) / statistics.median(one), 2)
        for k in KINDS:  # the pooled median of two kinds of unequal cost is a fragile figure
            if single.times[k] and s.log.times[k]:
                r = statistics.median(s.log.times[k]) / statistics.median(single.times[k])
                out[f"ratio_{k}"] = round(r, 2)
        targets["ratio"] = out["ratio"] <= TARGET_RATIO
        targets["p95"] = pct(times, 95) <= TARGET_P95_S
    if s.rss:
        out["rss_mib"] = [[round(t), round(m, 1)] for t, m in s.rss]
        out |= rss_growth(s.rss)
        targets["rss"] = out.get("rss_growth", float("inf")) <= TARGET_RSS_GROWTH
    out["targets"] = targets
    out["error_samples"] = s.log.errors[:10]
    return out


def show(rec: dict, s: Setting) -> None:
    """One JSON line, then the readable summary."""
    print("JSON " + json.dumps(rec), flush=True)
    print(
        f"## {rec['setting']}: {rec['wall_s']:.0f} s, {rec['actions']} actions, "
        f"{rec['errors']} errors (seconds from the BackMsg to script_finished)"
    )
    for k in KINDS:
        if s.log.times[k]:
            print("  " + summary(k, s.log.times[k]))
    print("  " + summary("all", pooled(s.log)))
    if s.cpu:
        print(
            f"  CPU: server {rec['server_cpu_s']:.1f} s ({rec['server_cpu_per_action_ms']:.0f} "
            f"ms per action), client {rec['client_cpu_s']:.1f} s in {rec['wall_s']:.0f} s"
        )
    if "ratio" in rec:
        kinds = ", ".join(f"{k} {rec[f'ratio_{k}']:.2f}" for k in KINDS if f"ratio_{k}" in rec)
        print(
            f"  median ratio to one user alone ({rec['single_median_ms']:.0f} ms): "
            f"{rec['ratio']:.2f} (per kind: {kinds}); p95 {rec['p95_ms']:.0f} ms"
        )
    if "rss_growth" in rec:
        print(
            f"  server RSS: {rec['rss_at_2min_mib']:.0f} MiB at {SOAK_FROM_S:.0f} s, peak after "
            f"{rec['rss_peak_mib']:.0f}, last {rec['rss_last_mib']:.0f} MiB: growth "
            f"{rec['rss_growth']:+.1%} (target ≤ {TARGET_RSS_GROWTH:.0%})"
        )
    for name, ok in rec["targets"].items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")
    for e in rec["error_samples"]:
        print("  error: " + e)


# -- the benchmark ------------------------------------------------------------------------------
def database(data: str, rebuild: bool) -> Path:
    """The paper's run (many_users.py's database) or the shipped demo's runs, restored with
    ``gradlens import`` (a no-op when the database already holds them from the same files)."""
    if data == "paper":
        return build_db(rebuild)
    from gradlens.cli import main as cli

    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / "demo.duckdb"
    assert cli(["import", "--db", str(db), "--from", str(DEMO_RUNS / RUNS["demo"])]) == 0
    return db


def mixed(users: int) -> list[str]:
    return [KINDS[i % 2] for i in range(users)]


async def bench(base: str, run: str, args, meta: dict) -> bool:
    """Every setting in turn; True when every target is met."""
    ok = True

    def done(s: Setting, single: Log | None) -> None:
        nonlocal ok
        rec = record(s, single, meta)
        show(rec, s)
        ok &= all(rec["targets"].values())

    if args.soak_minutes:
        n, minutes = args.soak_users, args.soak_minutes
        label = f"soak, {n} users, {minutes:g} min"
        done(
            await phase(base, run, mixed(n), args, None, minutes * 60, label, args.rss_every), None
        )
        return ok
    alone = Setting("1 user alone (both kinds)", 1, Log(), cpu={"server": 0.0, "client": 0.0})
    for kind in KINDS:  # one user alone, one kind after the other
        s = await phase(base, run, [kind], args, args.single, 0.0, f"1 user, {kind}")
        done(s, None)
        alone.log.times[kind] += s.log.times[kind]
        alone.log.errors += s.log.errors
        alone.wall += s.wall
        alone.cpu = {k: alone.cpu[k] + s.cpu.get(k, 0.0) for k in alone.cpu}
    done(alone, None)
    for n in args.users:
        done(
            await phase(base, run, mixed(n), args, None, args.seconds, f"{n} users"),
            alone.log,
        )
    return ok


def user_counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    has_paper = (paper_dir() / "dots.parquet").exists()
    ap.add_argument("--data", choices=sorted(RUNS), default="paper" if has_paper else "demo")
    ap.add_argument("--users", type=user_counts, default=[2, 4, 8], help="e.g. 2,4,8")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each many-user phase")
    ap.add_argument("--single", type=int, default=20, help="single-user actions of each kind")
    ap.add_argument("--pace", type=float, default=1.0, help="seconds between a user's actions")
    ap.add_argument("--action-timeout", type=float, default=20.0)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="run the soak instead")
    ap.add_argument("--soak-users", type=int, default=8)
    ap.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the paper's database")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    if args.data == "paper" and not has_paper:
        print(f"paper reference data not found at {paper_dir()}; set GRADLENS_PAPER_DIR")
        return 2
    t0 = time.perf_counter()
    db, run = database(args.data, args.rebuild), RUNS[args.data]
    print(f"# database {db} (run {run}) ready in {time.perf_counter() - t0:.1f} s")
    load = os.getloadavg()
    print(
        f"# {os.cpu_count()} CPU cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"websocket clients, one action per {args.pace:g} s per user"
    )
    meta = {"client": "ws", "data": args.data, "run": run, "load_avg_1m": round(load[0], 2)}
    with streamlit_server(db) as base:
        ok = asyncio.run(bench(base, run, args, meta))
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    raise SystemExit(main())
