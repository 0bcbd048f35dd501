"""The Input embeddings and Pair inspector pages in a real browser on the bundled SmolLM2: each
runs its prefilled example (the Run button) and shows what it should, with no exception. The
Input embeddings page runs both experiments: the batch of random sentences (16 × 100 steps,
minutes on a busy CPU) and one text."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import assert_no_exception, page_text, shot, visit, wait_idle

pytestmark = pytest.mark.e2e

#: The batch experiment's 100 steps on a CPU shared with other jobs; the first lens page of a
#: server also loads SmolLM2.
RUN_MS = 1_500_000


def run(page) -> str:
    page.get_by_role("button", name="Run", exact=True).click()
    wait_idle(page, timeout_ms=RUN_MS)
    assert_no_exception(page)
    return page_text(page)


def test_pair_inspector_shows_the_token_matrix(page, base_url):
    visit(page, base_url, "/pairs")
    try:
        text = run(page)
        assert "Token matrix" in text, text[:2000]
        assert "A's ' pizza' = B's ' pizza': identical gradients" in text, text[:3000]
        assert "never changes a pair's cosine" in text
        assert "Per target token" in text and "Per component" in text
    finally:
        shot(page, "lens-pairs")


def test_input_embeddings_runs_both_experiments(page, base_url):
    visit(page, base_url, "/input-embeddings")
    try:
        text = run(page)
        for expected in (
            "mean KL after 100 steps",
            "median distance travelled",
            "vocabulary distance",
            "Adam's first step",
        ):
            assert expected in text, text[:3000]
    finally:
        shot(page, "lens-input-embeddings-batch")
    page.get_by_text("One text", exact=True).click()
    wait_idle(page)
    try:
        text = run(page)
        assert "Optimising the input embeddings (Adam)" in text, text[:3000]
        assert "loss after 20 steps" in text and "largest distance travelled" in text
    finally:
        shot(page, "lens-input-embeddings-text")
