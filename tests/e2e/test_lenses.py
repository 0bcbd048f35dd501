"""The three lens pages in a real browser on the bundled SmolLM2: each runs its prefilled worked
example (the Run button) and shows its result with no exception."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import assert_no_exception, page_text, shot, visit, wait_idle

pytestmark = pytest.mark.e2e

# (URL path, screenshot, text that only the result shows)
LENS_PAGES = [
    ("/backward-lens", "lens-backward", "rank of the first mlp matrix"),
    ("/input-embeddings", "lens-input-embeddings", "distance"),
    ("/pairs", "lens-pairs", "cosine"),
]


@pytest.mark.parametrize(("path", "name", "result"), LENS_PAGES, ids=[p[1] for p in LENS_PAGES])
def test_lens_page_runs_its_worked_example(page, base_url, path, name, result):
    visit(page, base_url, path)
    before = page_text(page)
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page, timeout_ms=600_000)  # the first page also loads SmolLM2 (once per server)
    try:
        assert_no_exception(page)
        text = page_text(page)
        assert result in text.lower() and text != before, text[:1500]
    finally:
        shot(page, name)
