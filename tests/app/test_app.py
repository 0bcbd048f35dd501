"""The dashboard under Streamlit's AppTest, on a real DuckDB run (imported long tables)."""

from __future__ import annotations

import pytest

from dashboard import common
from gradlens.cli import main
from tests.conftest import REPO
from tests.helpers import synthetic_import_args

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "app.duckdb"
    assert main(synthetic_import_args(tmp_path, path)) == 0
    return path


def test_app_opens_on_the_overview_and_reads_the_headline_select_stored(db, monkeypatch):
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="gl_run").value == "syn"
    # never selected: no headline is computed on the page, it says what to run
    assert not at.metric
    assert common.select_hint(str(db), "syn") in at.info[0].value
    assert main(["select", "--db", str(db), "--run", "syn", "--folds", "2"]) == 0
    common.refresh()  # what the version's 5 s time-to-live does on a server
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert labels == ["full gradient", "best single, held out", "greedy, held out"]
    assert at.dataframe[0].value["metric"].tolist()[:2] == [
        "full gradient",
        "best single component (in-sample)",
    ]


def test_app_without_database_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLENS_DB", str(tmp_path / "none.duckdb"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert "make demo" in at.info[0].value
