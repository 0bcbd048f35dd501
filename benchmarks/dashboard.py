"""Benchmark: the dashboard on a run of the paper's size (988 queries x 5 candidates x 113
components, both settings imported from ../shared/paper or $GRADLENS_PAPER_DIR).

- first render: seconds from starting ``streamlit run app.py`` to the overview page idle in
  headless Chromium, showing both settings' headline figures (cold caches: the server computes
  both headlines, incl. greedy and the 5-fold held-out estimate over 3 seeds);
- server time of a greedy step and of a hand edit (AppTest: one script run = what the server
  does per click), against the naive step (each remaining component's accuracy recomputed from
  scratch with ``selection.accuracy``, the way a page would without the stepper), in the same
  process;
- every page's server time on a warm cache (AppTest, median of --repeat runs).

    python benchmarks/dashboard.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gradlens.cli import main as cli  # noqa: E402
from gradlens.runs import read as queries  # noqa: E402
from gradlens.selection import accuracy  # noqa: E402

SETTINGS = ("paraphrased", "model_generated")
PAGES = ("overview", "greedy", "heatmaps", "failures", "project", "runs")


def paper_dir() -> Path:
    env = os.environ.get("GRADLENS_PAPER_DIR")
    return Path(env) if env else REPO.parent / "shared" / "paper"


def build_db(tmp: Path) -> Path:
    d = paper_dir()
    db = tmp / "paper.duckdb"
    for s in SETTINGS:
        args = ["import", "--db", str(db), "--run", s, "--dots", str(d / "dots.parquet")]
        args += ["--norms", str(d / "norms.parquet"), "--n-params", str(d / "n_params.json")]
        assert cli(args + ["--filter", f"setting={s}"]) == 0
        assert cli(["select", "--db", str(db), "--run", s]) == 0
    return db


def first_render(db: Path) -> tuple[float, str]:
    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import (
        assert_no_exception,
        launch_browser,
        new_page,
        page_text,
        streamlit_server,
        wait_idle,
    )

    t0 = time.perf_counter()
    with streamlit_server(db) as base, sync_playwright() as pw:
        browser = launch_browser(pw)
        page = new_page(browser)
        page.goto(base + "/", timeout=120_000)
        wait_idle(page, timeout_ms=120_000)
        assert_no_exception(page)
        seconds = time.perf_counter() - t0
        text = page_text(page)
        browser.close()
    return seconds, text


def app_test(db: Path, page: str | None = None):
    from streamlit.testing.v1 import AppTest

    os.environ["GRADLENS_DB"] = str(db)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.query_params["run"] = "model_generated"
    if page:
        at.switch_page(f"views/{page}.py")
    return at


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def naive_step(a, subset: list[int]) -> float:
    """The next greedy component without the stepper: every remaining component's accuracy
    from scratch."""
    t0 = time.perf_counter()
    rest = [c for c in range(a.shape[2]) if c not in subset]
    scores = [accuracy(*a.core, subset + [c], a.valid) for c in rest]
    subset.append(rest[int(np.argmax(scores))])
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    if not (paper_dir() / "dots.parquet").exists():
        print(f"paper reference data not found at {paper_dir()}; set GRADLENS_PAPER_DIR")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        db = build_db(Path(tmp))
        seconds, text = first_render(db)
        shown = [x for x in ("0.9929", "0.2176", "0.9980", "0.3634") if x in text]
        print(f"first render after server start: {seconds:.1f} s (shows {', '.join(shown)})")

        at = app_test(db, "greedy").run()
        steps, edits = [], []
        for _ in range(args.repeat):
            steps.append(timed(lambda: at.button(key="step_forward").click().run()))
        assert not at.exception, at.exception
        names = queries.load_arrays(db, "model_generated").names
        for i in range(args.repeat):
            picked = list(at.multiselect[0].value) + [names[-1 - i]]
            edits.append(timed(lambda p=picked: at.multiselect[0].set_value(p).run()))
        assert not at.exception, at.exception
        a = queries.load_arrays(db, "model_generated")
        subset: list[int] = []
        naive = [naive_step(a, subset) for _ in range(args.repeat)]
        from gradlens.selection import GreedyStepper

        stepper = GreedyStepper(*a.core, valid=a.valid)
        chosen: list[int] = []
        core = []
        for _ in range(args.repeat):
            core.append(timed(lambda: chosen.append(stepper.next_component(chosen))))
        assert chosen == subset, "the stepper and the naive loop chose different components"
        med_step, med_naive = statistics.median(steps), statistics.median(naive)
        med_core = statistics.median(core)
        print(
            f"greedy step (server, full script rerun): median {med_step * 1e3:.0f} ms, "
            f"max {max(steps) * 1e3:.0f} ms over {len(steps)}"
        )
        print(
            f"hand edit (server): median {statistics.median(edits) * 1e3:.0f} ms, "
            f"max {max(edits) * 1e3:.0f} ms"
        )
        print(
            f"choosing the next component: GreedyStepper median {med_core * 1e3:.1f} ms, naive "
            f"(each candidate's accuracy from scratch) {med_naive * 1e3:.1f} ms -> "
            f"{med_naive / med_core:.1f}x (same choices)"
        )
        for page in PAGES:
            at = app_test(db, page).run()  # warms this page's caches
            times = [timed(at.run) for _ in range(args.repeat)]
            assert not at.exception, (page, at.exception)
            print(
                f"page {page:<9} warm: median {statistics.median(times) * 1e3:.0f} ms, "
                f"max {max(times) * 1e3:.0f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
