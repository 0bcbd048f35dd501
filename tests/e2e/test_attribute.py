"""The Attribute page in a real browser on a tiny Llama's indexed run: a typed demo query (the
run's model loads on first use) shows k rows and the original's rank, with no exception and no
error box; a query of the run shows its ranking without the model."""

from __future__ import annotations

import pytest

from gradlens.data.examples import load_examples
from tests.conftest import DEMO
from tests.e2e.conftest import assert_no_exception, page_text, shot, visit, wait_idle

pytestmark = pytest.mark.e2e

TRAIN = DEMO / "small" / "train.jsonl"
QUERIES = DEMO / "small" / "paraphrased.jsonl"
ERROR_BOX = "[data-testid='stAlertContentError']"
ROW = "[data-testid='stExpander'] summary"


@pytest.fixture(scope="module")
def indexed_url(tmp_path_factory, tiny_model_dir, app_server) -> str:
    from gradlens.engine.job import compute

    db = tmp_path_factory.mktemp("e2e-attr") / "attr.duckdb"
    compute(str(tiny_model_dir), str(TRAIN), str(QUERIES), str(db), run="small", candidates=3,
            index="sjlt:d16", progress=False)  # fmt: skip
    return app_server(db)


def rows(page) -> list[str]:
    """The result rows' expander labels ("#1 demo_004: cosine 0.1815"), in page order."""
    labels = [s.inner_text().strip().splitlines()[-1] for s in page.locator(ROW).all()]
    return [label for label in labels if label.startswith("#")]


def test_a_typed_demo_query_shows_k_rows_and_the_originals_rank(page, indexed_url):
    q = load_examples(QUERIES)[3]
    text = visit(page, indexed_url, "/attribute")
    try:
        assert "Attribute" in text and "original's rank (cosine)" in text
        assert len(rows(page)) == 10  # a query of the run: the default top 10
        page.get_by_text("type a prompt", exact=True).click()
        wait_idle(page)
        page.get_by_role("textbox", name="Prompt").fill(q.prompt)
        page.get_by_role("textbox", name="Response").fill(q.response)
        page.get_by_role("button", name="Rank", exact=True).click()
        wait_idle(page, timeout_ms=600_000)  # the run's model loads on the first typed query
        assert_no_exception(page)
        assert page.locator(ERROR_BOX).count() == 0
        text = page_text(page)
        assert "Typed query" in text and "original's rank (cosine)" in text, text[:2000]
        assert f"original: {q.id} (query prompt)" in text
        found = rows(page)
        assert len(found) == 10 and all(r.startswith(f"#{i + 1} ") for i, r in enumerate(found))
    finally:
        shot(page, "attribute-typed")
