"""Benchmark: many users on one dashboard server. 8 concurrent browser sessions (contexts of one
headless Chromium) against ``streamlit run app.py`` on 127.0.0.1, on a run of the paper's size
(988 queries × 5 candidates × 113 components: the paper's paraphrased setting imported from
../shared/paper or $GRADLENS_PAPER_DIR and ``gradlens select``ed).

Every user repeats one action about once a second: half of them click "Step forward" on the
greedy page, the other half open the next failure in the failure page's "Query to inspect" box
(the full gradient's failures, in turn). An action's time runs from the click to the page being
idle again: the change shown (the sidebar's subset count, or the query's heading), the script
finished, no stale element left and every chart drawn. An error is an exception box on the page,
an action that does not finish within --action-timeout, or any browser error.

First one user alone does --single actions of each kind (the single-user figure), then --users
users act together for --seconds. Targets: no error; median ≤ 2 × the single-user median; 95th
percentile ≤ 1 s. Also reported, to tell the server's share from the browser's: "server", the
seconds from the click that makes the server rerun to its script-finished message reaching the
browser (seen by the Playwright driver, before the page draws anything), and the CPU seconds of
the server process and of the browser (all Chromium processes and the Playwright driver) in each
phase. On a small machine the browser, which runs on the same cores, dominates.

    python benchmarks/many_users.py [--users 8] [--seconds 60] [--single 20]

The database is built once into out/bench/many_users/ and reused while the paper's files are
unchanged (--rebuild forces it). With --strict the exit code is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from tests.e2e.conftest import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    EXCEPTION,
    HEIGHT,
    WIDTH,
    browser_problem,
    streamlit_server,
)

RUN = "paraphrased"
CACHE = REPO / "out" / "bench" / "many_users"
PAGE_TIMEOUT_MS = 180_000
KINDS = ("greedy", "failure")
SIDEBAR = "[data-testid='stSidebar']"
POLL_MS = 20
#: The app is connected and its script finished, no element is stale or a lazy placeholder,
#: every Plotly chart has drawn its SVG (what tests/e2e/conftest.py's wait_idle waits for, in
#: one predicate) and, when w = [selector, text] is given, an element matching the selector
#: shows the text.
IDLE = """(w) => {
    const app = document.querySelector("[data-testid='stApp']");
    if (!app || app.dataset.testConnectionState !== "CONNECTED"
        || app.dataset.testScriptState !== "notRunning") return false;
    if (document.querySelector("[data-stale='true'], [data-testid='stSkeleton']")) return false;
    for (const c of document.querySelectorAll("[data-testid='stPlotlyChart']")) {
        if (!c.querySelector("svg.main-svg")) return false;
    }
    return w.length === 0
        || Array.from(document.querySelectorAll(w[0])).some(e => e.textContent.includes(w[1]));
}"""
TARGET_RATIO = 2.0
TARGET_P95_S = 1.0


def paper_dir() -> Path:
    env = os.environ.get("GRADLENS_PAPER_DIR")
    return Path(env) if env else REPO.parent / "shared" / "paper"


# -- the database -------------------------------------------------------------------------------
def build_db(rebuild: bool = False) -> Path:
    """The paper's paraphrased run, imported and selected; rebuilt only when the paper's files
    changed (their sizes and mtimes are recorded beside the database)."""
    from gradlens.cli import main as cli

    d = paper_dir()
    files = [d / "dots.parquet", d / "norms.parquet", d / "n_params.json"]
    stamp = {str(f): [f.stat().st_size, f.stat().st_mtime] for f in files}
    CACHE.mkdir(parents=True, exist_ok=True)
    db, stamp_path = CACHE / "paper.duckdb", CACHE / "paper.stamp.json"
    if not rebuild and db.is_file() and stamp_path.is_file():
        if json.loads(stamp_path.read_text()) == stamp:
            return db
    db.unlink(missing_ok=True)
    args = ["import", "--db", str(db), "--run", RUN, "--dots", str(files[0])]
    args += ["--norms", str(files[1]), "--n-params", str(files[2]), "--filter", f"setting={RUN}"]
    assert cli(args) == 0, "gradlens import failed"
    assert cli(["select", "--db", str(db), "--run", RUN]) == 0, "gradlens select failed"
    stamp_path.write_text(json.dumps(stamp))
    return db


# -- CPU seconds of the server and of the browser (descendants of this process) ------------------
def _proc_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (ppid, CPU seconds, command line) for every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, cmd)
    return out


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of the streamlit server and of everything else this process started
    (the Playwright driver and Chromium); a process that exited is no longer counted."""
    table = _proc_table()
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {"server": 0.0, "browser": 0.0}
    for child in children.get(me, []):
        kind = "server" if "streamlit" in table[child][2] else "browser"
        stack = [child]
        while stack:
            pid = stack.pop()
            out[kind] += table[pid][1]
            stack.extend(children.get(pid, []))
    return out


# -- one user -----------------------------------------------------------------------------------
@dataclass
class Log:
    """Per kind: seconds from click to idle (``times``) and from the click that triggers the
    rerun to the server's script-finished message (``server``); and the errors."""

    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    server: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list[str] = field(default_factory=list)


async def wait_idle(page, timeout_ms: int, shows: tuple[str, str] | None = None) -> None:
    """Wait until the page is idle and, with ``shows``, an element matching ``shows[0]`` has
    the text ``shows[1]``. One predicate polled every POLL_MS (not on every animation frame:
    eight pages polling at 60 Hz would load the CPU the server needs)."""
    await page.wait_for_function(IDLE, arg=list(shows or ()), polling=POLL_MS, timeout=timeout_ms)


class User:
    """One browser context on one page, doing one kind of action."""

    def __init__(self, name: str, kind: str, context, base: str, timeout_s: float) -> None:
        self.name, self.kind, self.context, self.base = name, kind, context, base
        self.timeout_ms = int(timeout_s * 1000)
        self.page = None
        self.queries: list[str] = []
        self.turn = 0
        self.steps = 0
        self.finished: list[float] = []  # when each script-finished message arrived

    def _on_websocket(self, ws) -> None:
        ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload) -> None:
        """Timestamps the server's "script finished" messages, as the browser receives them
        (seen by the Playwright driver, before the page renders anything)."""
        if isinstance(payload, str):
            return
        try:
            msg = ForwardMsg.FromString(payload)
        except Exception:  # noqa: BLE001 - not a ForwardMsg: not ours to time
            return
        if msg.WhichOneof("type") == "script_finished":
            self.finished.append(time.perf_counter())

    def server_seconds(self, since: float) -> float | None:
        """Seconds from ``since`` to the first script-finished message after it."""
        later = [t for t in self.finished if t > since]
        return min(later) - since if later else None

    async def open(self) -> None:
        self.page = await self.context.new_page()
        self.page.on("websocket", self._on_websocket)
        path = "greedy" if self.kind == "greedy" else "failures"
        await self.page.goto(f"{self.base}/{path}?run={RUN}", timeout=PAGE_TIMEOUT_MS)
        await wait_idle(self.page, PAGE_TIMEOUT_MS)
        await self.check()
        if self.kind == "failure":
            await self._box().click()
            self.queries = [
                t.strip() for t in await self.page.get_by_role("option").all_inner_texts()
            ]
            self.queries = [q for q in self.queries if q and not q.startswith("(")]
            await self.page.keyboard.press("Escape")
            if not self.queries:
                raise RuntimeError("the failure page lists no failure")
            random.shuffle(self.queries)

    def _box(self):
        return self.page.locator("[data-testid='stSelectbox']").filter(has_text="Query to inspect")

    async def check(self) -> None:
        boxes = self.page.locator(EXCEPTION)
        if await boxes.count():
            raise RuntimeError("exception box: " + (await boxes.first.inner_text())[:300])

    async def act(self) -> tuple[float, float | None]:
        """One action: seconds from the click to idle, and from the click that makes the
        server rerun to its script-finished message."""
        page, timeout = self.page, self.timeout_ms
        if self.kind == "greedy":
            if self.steps >= 100:  # keep clear of the end (113 components): start over
                await page.get_by_role("button", name="Reset", exact=True).click()
                await wait_idle(page, timeout, (SIDEBAR, "Subset: 0 of"))
                self.steps = 0
            t0 = trigger = time.perf_counter()
            await page.get_by_role("button", name="Step forward", exact=True).click()
            await wait_idle(page, timeout, (SIDEBAR, f"Subset: {self.steps + 1} of"))
            self.steps += 1
        else:
            query = self.queries[self.turn % len(self.queries)]
            self.turn += 1
            t0 = time.perf_counter()
            await self._box().click()
            option = page.get_by_role("option", name=query, exact=True)
            await option.wait_for(timeout=timeout)
            trigger = time.perf_counter()
            await option.click()
            await wait_idle(page, timeout, ("h3", f"Query {query}"))
        seconds = time.perf_counter() - t0
        await self.check()
        server = self.server_seconds(trigger)
        self.finished = [t for t in self.finished if t > trigger]
        return seconds, server

    async def loop(self, log: Log, until: float | None, count: int | None, pace_s: float) -> None:
        """Act every ``pace_s`` seconds (an action that takes longer delays the next) until
        ``until`` (monotonic) or ``count`` actions."""
        done = 0
        await asyncio.sleep(random.uniform(0, pace_s))  # users out of step with each other
        while (until is None or time.monotonic() < until) and (count is None or done < count):
            start = time.monotonic()
            try:
                seconds, server = await self.act()
                log.times[self.kind].append(seconds)
                if server is not None:
                    log.server[self.kind].append(server)
            except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                log.errors.append(f"{self.name}: {type(exc).__name__}: {str(exc)[:300]}")
                await self.recover()
            done += 1
            await asyncio.sleep(max(0.0, pace_s - (time.monotonic() - start)))

    async def recover(self) -> None:
        """After an error: reload the page (the session's state is in the URL)."""
        try:
            await self.page.reload(timeout=PAGE_TIMEOUT_MS)
            await wait_idle(self.page, PAGE_TIMEOUT_MS)
            if self.kind == "greedy":
                text = await self.page.locator("[data-testid='stSidebar']").inner_text()
                marker = text.split("Subset:")[1].split("of")[0] if "Subset:" in text else "0"
                self.steps = int(marker.strip())
        except Exception:  # noqa: BLE001 - the next action reports it
            pass


# -- phases -------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return float("nan")
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]  # nearest rank


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:<24} no actions"
    return (
        f"{label:<24} n={len(values):<4} min {min(values) * 1e3:5.0f}  median "
        f"{statistics.median(values) * 1e3:5.0f}  p95 {pct(values, 95) * 1e3:5.0f}  max "
        f"{max(values) * 1e3:5.0f} ms"
    )


async def phase(browser, base: str, kinds: list[str], args, count: int | None) -> tuple:
    """Open one context per user, then let them act together; (Log, wall s, CPU s)."""
    log = Log()
    users = []
    for i, kind in enumerate(kinds):
        ctx = await browser.new_context(
            viewport={"width": args.width, "height": args.height}, reduced_motion=args.motion
        )
        users.append(User(f"user{i}-{kind}", kind, ctx, base, args.action_timeout))
    await asyncio.gather(*(u.open() for u in users))
    for u in users:  # one untimed action each: the first step or query fills the caches
        await u.act()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    until = None if count is not None else t0 + args.seconds
    await asyncio.gather(*(u.loop(log, until, count, args.pace) for u in users))
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds()
    for u in users:
        await u.context.close()
    return log, wall, {k: cpu1[k] - cpu0[k] for k in cpu0}


def report(label: str, log: Log, wall: float, cpu: dict[str, float]) -> list[float]:
    pooled = [t for k in KINDS for t in log.times[k]]
    print(f"## {label}: {wall:.0f} s, {len(pooled)} actions, {len(log.errors)} errors")
    for k in KINDS:
        if log.times[k]:
            print("  " + summary(k, log.times[k]))
            print("  " + summary(f"  {k}: server", log.server[k]))
    print("  " + summary("all", pooled))
    cores = os.cpu_count() or 1
    n = max(1, len(pooled))
    print(
        f"  CPU: server {cpu['server']:.1f} s, browser {cpu['browser']:.1f} s in {wall:.0f} s "
        f"({(cpu['server'] + cpu['browser']) / wall / cores:.0%} of {cores} cores); per action "
        f"server {cpu['server'] / n * 1e3:.0f} ms, browser {cpu['browser'] / n * 1e3:.0f} ms"
    )
    for e in log.errors[:10]:
        print("  error: " + e)
    return pooled


async def bench(base: str, args) -> int:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(CHROMIUM_ARGS) + args.chromium_arg,
        )
        single = Log()
        for kind in KINDS:  # one user alone, one kind after the other
            log, wall, cpu = await phase(browser, base, [kind], args, args.single)
            report(f"1 user, {kind}", log, wall, cpu)
            single.times[kind] += log.times[kind]
            single.server[kind] += log.server[kind]
            single.errors += log.errors
        kinds = [KINDS[i % 2] for i in range(args.users)]
        many, wall, cpu = await phase(browser, base, kinds, args, None)
        pooled = report(f"{args.users} users", many, wall, cpu)
        await browser.close()

    one = [t for k in KINDS for t in single.times[k]]
    print("## figures (click to idle; server: click to the script-finished message)")
    print("  " + summary("1 user (all)", one))
    print("  " + summary(f"{args.users} users (all)", pooled))
    one_server = [t for k in KINDS for t in single.server[k]]
    many_server = [t for k in KINDS for t in many.server[k]]
    print("  " + summary("1 user, server", one_server))
    print("  " + summary(f"{args.users} users, server", many_server))
    if one_server and many_server:
        r = statistics.median(many_server) / statistics.median(one_server)
        print(f"  server: median ratio {r:.2f}, p95 {pct(many_server, 95) * 1e3:.0f} ms")
    ok = True
    for k in KINDS:
        if single.times[k] and many.times[k]:
            r = statistics.median(many.times[k]) / statistics.median(single.times[k])
            print(f"  median ratio {k}: {r:.2f}")
    ratio = statistics.median(pooled) / statistics.median(one) if pooled and one else float("inf")
    p95 = pct(pooled, 95)
    errors = len(single.errors) + len(many.errors)
    for name, passed, text in (
        ("errors", errors == 0, f"{errors} (target 0)"),
        ("median ratio", ratio <= TARGET_RATIO, f"{ratio:.2f} (target ≤ {TARGET_RATIO:g})"),
        ("p95", p95 <= TARGET_P95_S, f"{p95 * 1e3:.0f} ms (target ≤ {TARGET_P95_S * 1e3:.0f} ms)"),
    ):
        ok &= passed
        print(f"  {'PASS' if passed else 'FAIL'} {name}: {text}")
    return 0 if ok or not args.strict else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--height", type=int, default=HEIGHT)
    ap.add_argument("--motion", default="no-preference", choices=["no-preference", "reduce"])
    ap.add_argument("--chromium-arg", action="append", default=[], help="extra Chromium flag")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the many-user phase")
    ap.add_argument("--single", type=int, default=20, help="single-user actions of each kind")
    ap.add_argument("--pace", type=float, default=1.0, help="seconds between a user's actions")
    ap.add_argument("--action-timeout", type=float, default=20.0)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    if not (paper_dir() / "dots.parquet").exists():
        print(f"paper reference data not found at {paper_dir()}; set GRADLENS_PAPER_DIR")
        return 2
    problem = browser_problem()
    if problem:
        print(problem)
        return 2
    t0 = time.perf_counter()
    db = build_db(args.rebuild)
    print(f"# database {db} ready in {time.perf_counter() - t0:.1f} s")
    load = os.getloadavg()
    print(
        f"# {os.cpu_count()} CPU cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{args.users} users, {args.seconds:.0f} s, one action per {args.pace:g} s per user"
    )
    with streamlit_server(db) as base:
        return asyncio.run(bench(base, args))


if __name__ == "__main__":
    raise SystemExit(main())
