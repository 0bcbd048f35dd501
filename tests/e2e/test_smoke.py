"""Smoke test in a real browser: every dashboard page loads without an exception and shows
what it should. Add a row to PAGES for each new page."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import shot

pytestmark = pytest.mark.e2e

# (URL path, screenshot name, texts the page must show)
PAGES = [
    ("/", "overview", ["GradLens", "Run syn", "full gradient", "best single component"]),
]


@pytest.mark.parametrize(("path", "name", "expected"), PAGES, ids=[p[1] for p in PAGES])
def test_page_loads(open_page, page, path, name, expected):
    try:
        text = open_page(path)
    finally:  # also when the page shows an exception: the PNG is the first thing to look at
        shot(page, f"smoke-{name}")
    missing = [t for t in expected if t not in text]
    assert not missing, f"{path}: missing {missing} in the page text:\n{text[:2000]}"


def test_overview_draws_heatmap(open_page, page):
    open_page("/")
    chart = page.locator("[data-testid='stPlotlyChart']")
    chart.first.wait_for(state="visible", timeout=30_000)
    assert chart.count() == 1
    # Plotly draws the heatmap into a real SVG/canvas with a non-empty size.
    box = chart.first.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 200, box
    assert page.locator("[data-testid='stMetric']").count() >= 2
