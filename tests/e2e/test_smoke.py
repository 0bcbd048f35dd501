"""The dashboard in a real browser (headless Debian Chromium against a real `streamlit run`):
every page loads without an exception and shows what it should; the greedy stepper steps; a
failure opens; a reloaded copied URL shows the same view."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import assert_no_exception, page_text, shot, visit, wait_idle

pytestmark = pytest.mark.e2e

# (URL path, screenshot name, texts the page must show)
PAGES = [
    ("/", "overview", ["Overview", "syn", "full gradient", "greedy peak (in-sample)"]),
    ("/greedy", "greedy", ["Greedy selection", "Step forward", "accuracy"]),
    ("/heatmaps", "heatmaps", ["Layer heatmaps"]),
    ("/failures", "failures", ["Failure cases", "queries not retrieved"]),
    ("/project", "project", ["Select vs project", "Cost"]),
    ("/runs", "runs", ["Runs", "Every run in the database"]),
]


@pytest.mark.parametrize(("path", "name", "expected"), PAGES, ids=[p[1] for p in PAGES])
def test_page_loads(open_page, page, path, name, expected):
    try:
        text = open_page(path)
    finally:  # also when the page shows an exception: the PNG is the first thing to look at
        shot(page, f"smoke-{name}")
    missing = [t for t in expected if t not in text]
    assert not missing, f"{path}: missing {missing} in the page text:\n{text[:2000]}"


def click(page, label: str) -> None:
    page.get_by_role("button", name=label, exact=True).click()
    wait_idle(page)
    assert_no_exception(page)


def test_step_greedy_open_a_failure_and_reload_the_url(open_page, page):
    open_page("/greedy")
    click(page, "Step forward")
    click(page, "Step forward")
    assert "Subset: 2 of" in page_text(page)
    url = page.url
    assert "subset=" in url, url
    shot(page, "flow-greedy-two-steps")
    # open a failure of the current subset (full gradient when the subset is empty)
    open_page("/failures?" + url.split("?", 1)[1])
    page.locator("[data-testid='stSelectbox']").filter(has_text="Query to inspect").click()
    page.get_by_role("option").nth(1).click()
    wait_idle(page)
    assert_no_exception(page)
    assert "Which components vote" in page_text(page)
    copied = page.url
    assert "query=" in copied, copied
    shot(page, "flow-failure")
    # a fresh tab on the copied URL reopens the same run, subset and query
    other = page.context.new_page()
    other.goto(copied)
    wait_idle(other)
    assert_no_exception(other)
    text = page_text(other)
    assert "Subset: 2 of" in text and "Which components vote" in text
    other.close()


def test_every_page_serves_the_shipped_demo(page, app_server, tmp_path_factory):
    """What `make demo` serves: the shipped demo runs restored, every page, no exception."""
    from gradlens.cli import main
    from tests.conftest import DEMO

    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    for run in ("paraphrased", "model-generated"):
        assert main(["import", "--db", str(db), "--from", str(DEMO / "runs" / run)]) == 0
    base = app_server(db)
    # the overview's flag, read on the page, follows the numbers select stored with the demo
    from gradlens.runs.read import stored_headline
    from gradlens.selection import headline_rows, indistinguishable

    text = visit(page, base, "/?run=model-generated")
    for row in headline_rows(stored_headline(db, "model-generated")):
        if row.in_sample:
            verdict = "at or below" if indistinguishable(row) else "above"
            want = f"{row.metric} {row.accuracy:.4f} is {verdict} its null's 95th percentile, "
            assert want + f"{row.null_hi:.4f}" in text, text[:3000]
    assert "Not distinguishable from selection on noise" in text
    shot(page, "demo-overview-flag")
    view = "run=model-generated&subset=162,43,2,33"
    for path, expected in (
        ("/", "0.9919"),  # the paraphrased full gradient, as `gradlens select` prints it
        (f"/greedy?{view}", "Greedy selection"),
        ("/heatmaps", "model-generated"),
        (f"/failures?{view}&query=demo_053", "Which components vote"),
        ("/project", "Select vs project"),
        ("/runs", "Runs"),
        ("/model", "Model"),
        ("/compute", "Compute"),
    ):
        text = visit(page, base, path)
        assert expected in text, (path, text[:1000])
