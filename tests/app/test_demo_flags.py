"""The overview on the shipped demo (what `make demo` restores) under Streamlit's AppTest: its
runs carry the headline `gradlens select` stored, and the page's flag "not distinguishable from
selection on noise" follows those stored numbers (a stored null moved above or below a row moves
the row between the two boxes: the page reads the rows, it does not recompute them)."""

from __future__ import annotations

import shutil

import pytest

from dashboard import common
from gradlens.cli import main
from gradlens.runs import read as queries
from gradlens.selection import GREEDY_PEAK, headline_row, headline_rows, indistinguishable
from gradlens.store.database import Store
from tests.conftest import DEMO, REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

RUN = "model-generated"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    assert main(["import", "--db", str(db), "--from", str(DEMO / "runs" / RUN)]) == 0
    return db


def overview(db, monkeypatch) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["run"] = RUN
    at.run()
    assert not at.exception, at.exception
    return at


def boxes(at: AppTest) -> tuple[str, str]:
    """The text of the warning box (rows not distinguishable from noise) and of the info boxes."""
    return " ".join(w.value for w in at.warning), " ".join(i.value for i in at.info)


def test_shipped_demo_flags_its_in_sample_rows_from_the_stored_numbers(demo_db, monkeypatch):
    head = queries.stored_headline(demo_db, RUN)
    assert head is not None, "the shipped demo must carry select's headline (re-export it)"
    selected = [r for r in headline_rows(head) if r.in_sample]
    assert {r.id for r in selected} == {"best_single", "greedy_peak"}
    at = overview(demo_db, monkeypatch)
    warning, info = boxes(at)
    for row in selected:
        line = f"**{row.metric}** {row.accuracy:.4f} is "
        if indistinguishable(row):
            assert line + f"at or below its null's 95th percentile, {row.null_hi:.4f}" in warning
        else:
            assert line + f"above its null's 95th percentile, {row.null_hi:.4f}" in info
        held = headline_row(head, row.heldout_id)
        assert f"Held out: **{held.metric}** {held.accuracy:.4f}" in warning + info
    # on the demo, selection finds as much in noise as in the data: both rows are flagged
    assert all(indistinguishable(r) for r in selected)
    assert "Not distinguishable from selection on noise" in warning


def test_the_flag_moves_with_the_stored_null(demo_db, tmp_path, monkeypatch):
    db = tmp_path / "moved.duckdb"
    shutil.copy(demo_db, db)
    run_id = queries.run_info(db, RUN).run_id
    peak = headline_row(queries.stored_headline(db, RUN), GREEDY_PEAK)
    with Store(db) as store:
        store.con.execute(
            "UPDATE headline SET null_hi = ? WHERE run_id = ? AND id = ?",
            [peak.accuracy - 0.01, run_id, GREEDY_PEAK],
        )
    common.refresh()
    warning, info = boxes(overview(db, monkeypatch))
    assert f"**{peak.metric}** {peak.accuracy:.4f} is above" in info
    assert peak.metric not in warning and "best single component (in-sample)" in warning
