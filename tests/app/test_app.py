"""The dashboard under Streamlit's AppTest, on a real DuckDB run (imported long tables)."""

from __future__ import annotations

import pytest

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


def test_app_shows_headline_and_heatmap(db, monkeypatch):
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.selectbox[0].value == "syn"
    labels = [m.label for m in at.metric]
    assert "full gradient" in labels and "best single component" in labels
    assert len(at.get("plotly_chart")) == 1


def test_app_without_database_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLENS_DB", str(tmp_path / "none.duckdb"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert "make demo" in at.info[0].value
