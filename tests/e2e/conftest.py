"""End-to-end fixtures: a real DuckDB run, the Streamlit app as a subprocess, headless Chromium.

The plain functions here (``streamlit_server``, ``launch_browser``, ``wait_idle``, ``visit``,
``shot``, ...) are also used by ``tests/e2e/screenshots.py``; the fixtures wrap them for pytest.

Requirements (nothing is skipped; a missing piece fails with how to install it):
Debian's Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the ``playwright``
package (``pip install -r requirements.txt``). ``playwright install`` is never needed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = REPO / "out" / "screenshots"
WIDTH = 1400
HEIGHT = 900
SERVER_TIMEOUT_S = 60.0
IDLE_TIMEOUT_MS = 90_000
SETTLE_MS = 500
APP_IDLE = (
    "[data-testid='stApp']"
    "[data-test-connection-state='CONNECTED']"
    "[data-test-script-state='notRunning']"
)
EXCEPTION = "[data-testid='stException']"
# No lazily loaded element is still a placeholder, and every Plotly chart has drawn its SVG.
PLOTS_DRAWN = """() => document.querySelectorAll("[data-testid='stSkeleton']").length === 0
    && Array.from(document.querySelectorAll("[data-testid='stPlotlyChart']"))
        .every(e => e.querySelector('svg.main-svg') !== null)"""
# Containers that scroll inside Streamlit's fixed-height layout (a plain full-page
# screenshot would stop at the viewport).
SCROLLERS = (
    "[data-testid='stMain']",
    "[data-testid='stAppViewContainer']",
    "[data-testid='stSidebarContent']",
)
MAX_SHOT_HEIGHT = 16_000


class E2EError(RuntimeError):
    """The app server or the browser did not come up, or the page shows an exception."""


# --------------------------------------------------------------------------- browser


def browser_problem() -> str | None:
    """One line saying how to install what is missing, or None when all is there."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"e2e: no Chromium at {CHROMIUM}; install it with "
            "`apt-get install -y chromium` (Debian's build; never `playwright install`)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "e2e: the playwright package is missing; `pip install -r requirements.txt`"
    return None


def launch_browser(playwright):
    """Headless Debian Chromium through Playwright's sync API."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
    )


def new_page(browser, width: int = WIDTH, height: int = HEIGHT):
    """A page in a fresh context (own cookies/storage) of the given viewport."""
    context = browser.new_context(viewport={"width": width, "height": height})
    return context.new_page()


# --------------------------------------------------------------------------- app server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(server log empty)"


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def streamlit_server(
    db_path: str | os.PathLike, port: int | None = None, timeout_s: float = SERVER_TIMEOUT_S
) -> Iterator[str]:
    """Run ``streamlit run app.py`` on ``db_path`` (env GRADLENS_DB) in its own process group;
    yield the base URL once /_stcore/health answers "ok"; kill the group on exit."""
    port = port or free_port()
    env = dict(os.environ, GRADLENS_DB=str(db_path), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="gradlens-e2e-") as tmp:
        log_path = Path(tmp) / "streamlit.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_healthy(proc, base, log_path, timeout_s)
            yield base
        finally:
            _kill_group(proc)


def _wait_healthy(proc: subprocess.Popen, base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise E2EError(
                f"streamlit exited with code {proc.returncode} before it was healthy; "
                f"its output:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                body = resp.read().decode(errors="replace").strip()
            if body == "ok":
                return
            last = f"answered {body!r}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise E2EError(
        f"streamlit at {base} not healthy after {timeout_s:.0f} s ({last}); "
        f"its output:\n{_tail(log_path)}"
    )


# --------------------------------------------------------------------------- database


def build_synthetic_db(tmp: str | os.PathLike, db: str | os.PathLike) -> Path:
    """A small real run: `gradlens import` of the synthetic long tables (run ``syn``), then
    `gradlens select` on it, exactly as the CLI tests do."""
    from gradlens.cli import main
    from tests.helpers import synthetic_import_args

    tmp, db = Path(tmp), Path(db)
    for args in (synthetic_import_args(tmp, db), ["select", "--db", str(db), "--run", "syn"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main(args)
        assert rc == 0, f"gradlens {args[0]} returned {rc}: {err.getvalue().strip()}"
    return db


# --------------------------------------------------------------------------- page helpers


def wait_idle(page, timeout_ms: int = IDLE_TIMEOUT_MS, settle_ms: int = SETTLE_MS) -> None:
    """Wait until the app is connected, its script has finished and nothing is stale."""
    page.wait_for_selector(APP_IDLE, timeout=timeout_ms)
    page.wait_for_function(
        "() => document.querySelectorAll(\"[data-stale='true']\").length === 0",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(settle_ms)
    # A rerun may have started during the settle; wait for it too.
    page.wait_for_selector(APP_IDLE, timeout=timeout_ms)
    # Plotly draws after the script ends (its JS chunk loads lazily in a fresh tab): wait until
    # every chart has its SVG, or its titles are not yet part of the page text.
    page.wait_for_function(PLOTS_DRAWN, timeout=timeout_ms)


def exception_texts(page) -> list[str]:
    return [e.inner_text().strip() for e in page.locator(EXCEPTION).all()]


def assert_no_exception(page) -> None:
    """Raise with the text of every exception box the app shows."""
    found = exception_texts(page)
    if found:
        joined = "\n---\n".join(found)
        raise AssertionError(f"{len(found)} exception(s) on {page.url}:\n{joined}")


def page_text(page) -> str:
    return page.locator("[data-testid='stApp']").inner_text()


def visit(page, base_url: str, path: str = "/", timeout_ms: int = IDLE_TIMEOUT_MS) -> str:
    """Open ``base_url + path``, wait until idle, fail on an app exception; return the text."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    wait_idle(page, timeout_ms=timeout_ms)
    assert_no_exception(page)
    return page_text(page)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip("/")).strip("_") or "root"


def _content_height(page) -> int:
    js = """(sels) => Math.max(document.documentElement.scrollHeight,
        ...sels.flatMap(s => Array.from(document.querySelectorAll(s))).map(e => e.scrollHeight))"""
    return int(page.evaluate(js, list(SCROLLERS)))


def shot(page, name: str, out_dir: str | os.PathLike = SCREENSHOTS, full_page: bool = True) -> Path:
    """Save a PNG ``<out_dir>/<name>.png``. Full page: the viewport is grown to the height of
    Streamlit's inner scroll containers first (at most MAX_SHOT_HEIGHT), then restored."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{slug(name)}.png"
    size = page.viewport_size
    if full_page and size:
        height = min(max(_content_height(page), size["height"]), MAX_SHOT_HEIGHT)
        if height != size["height"]:
            page.set_viewport_size({"width": size["width"], "height": height})
            page.wait_for_timeout(SETTLE_MS)
    try:
        page.screenshot(path=str(path), full_page=full_page)
    finally:
        if size and page.viewport_size != size:
            page.set_viewport_size(size)
    return path


# --------------------------------------------------------------------------- pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: real-browser end-to-end test (headless Chromium + streamlit server)"
    )


@pytest.fixture(scope="session")
def browser():
    problem = browser_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_browser(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh 1400 px wide page; its context is closed after the test."""
    p = new_page(browser)
    try:
        yield p
    finally:
        p.context.close()


@pytest.fixture(scope="session")
def synthetic_db(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("e2e-db")
    return build_synthetic_db(tmp, tmp / "e2e.duckdb")


@pytest.fixture(scope="session")
def app_server() -> Iterator[Callable[[str | os.PathLike], str]]:
    """Factory: ``app_server(db_path)`` starts the app on that database (once per path per
    session) and returns its base URL; every server is stopped at the end of the session."""
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}

        def start(db_path: str | os.PathLike) -> str:
            key = str(Path(db_path).resolve())
            if key not in urls:
                urls[key] = stack.enter_context(streamlit_server(db_path))
            return urls[key]

        yield start


@pytest.fixture(scope="session")
def base_url(app_server, synthetic_db) -> str:
    """The app serving the synthetic run."""
    return app_server(synthetic_db)


@pytest.fixture
def open_page(page, base_url) -> Callable[[str], str]:
    """``open_page(path)``: visit a URL path of the app, wait idle, assert no exception; returns
    the page text (the page itself is the ``page`` fixture)."""

    def go(path: str = "/") -> str:
        return visit(page, base_url, path)

    return go
