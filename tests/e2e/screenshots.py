"""Full-page screenshots of the dashboard in headless Chromium.

    python tests/e2e/screenshots.py --db DB --out DIR [--pages [NAME=]PATH ...] [--width 1400]

Starts ``streamlit run app.py`` on DB, visits each URL path (default "/"), waits until the app is
idle, fails on an exception shown by the app, and writes ``DIR/<path>.png`` (``root.png`` for
"/"; ``NAME=PATH`` names the file ``NAME.png``). Exit codes: 0 all pages saved, 1 a page
failed (the others are still saved), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.conftest import (  # noqa: E402
    HEIGHT,
    WIDTH,
    E2EError,
    browser_problem,
    launch_browser,
    new_page,
    shot,
    slug,
    streamlit_server,
    visit,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="DuckDB file the app reads (GRADLENS_DB)")
    ap.add_argument("--out", required=True, help="folder for the PNGs (created)")
    ap.add_argument("--pages", nargs="+", default=["/"], metavar="PATH", help="URL paths")
    ap.add_argument("--width", type=int, default=WIDTH, help="viewport width in px")
    args = ap.parse_args(argv)

    db = Path(args.db)
    if not db.is_file():
        print(f"screenshots: no database at {db}", file=sys.stderr)
        return 2
    problem = browser_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    failed = 0
    try:
        with streamlit_server(db) as base, sync_playwright() as pw:
            browser = launch_browser(pw)
            try:
                for spec in args.pages:
                    name, sep, path = spec.partition("=")
                    if not sep or not name.isidentifier():
                        name, path = None, spec
                    page = new_page(browser, width=args.width, height=HEIGHT)
                    try:
                        try:
                            visit(page, base, path)
                        except AssertionError as exc:  # the app shows an exception: keep a shot
                            failed += 1
                            print(f"screenshots: {path}: {exc}", file=sys.stderr)
                        png = shot(page, name or slug(path), out_dir=args.out)
                        print(png)
                    except Exception as exc:  # report it and go on with the others
                        failed += 1
                        print(f"screenshots: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    finally:
                        page.context.close()
            finally:
                browser.close()
    except E2EError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
