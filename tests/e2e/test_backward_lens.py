"""The Backward lens page in a real browser on the bundled SmolLM2: the Fig. 4 tab shows the
shipped demo result before anything runs; Run shows the shift beside the logit lens; Step takes
the prefilled one-step edit and shows the target's probability before and after. No exception
anywhere."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import assert_no_exception, page_text, shot, visit, wait_idle

pytestmark = pytest.mark.e2e


def test_backward_lens_page(page, base_url):
    visit(page, base_url, "/backward-lens")
    page.get_by_role("tab", name="Over many prompts").click()
    wait_idle(page)
    text = page_text(page)
    assert "demo prompts (SmolLM2, shipped)" in text and "rank(grad FF1) = n" in text, text[:2000]
    shot(page, "lens-backward-fig4")

    page.get_by_role("tab", name="One prompt").click()
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page, timeout_ms=600_000)  # the first lens page also loads SmolLM2
    assert_no_exception(page)
    text = page_text(page)
    assert "The shift at the last prompt position" in text, text[:2000]
    assert "most towards the output embedding of ' Paris'" in text, text[:2000]

    page.get_by_role("button", name="Step", exact=True).click()
    wait_idle(page, timeout_ms=300_000)
    try:
        assert_no_exception(page)
        text = page_text(page)
        assert "p(' Paris')" in text and "rank of the target" in text, text[-3000:]
        assert "The model is put back afterwards" in text
    finally:
        shot(page, "lens-backward-edit")
