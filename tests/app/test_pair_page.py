"""The Pair inspector under AppTest, without a model: the worked example fills the editors; a
pair sent by the failure page (``dashboard.state.send_pair``) replaces it once, with the run's
loss settings, the per-token split off and a line naming where the pair comes from."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


def pair_page(tmp_path, monkeypatch, sent=None) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(tmp_path / "none.duckdb"))  # the lens needs no run
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("views/pairs.py")
    if sent is not None:
        at.session_state["pair_sent"] = sent  # what dashboard.state.send_pair stores
    return at.run()


def editors(at: AppTest) -> list[str]:
    return [at.text_area(key=f"pair_{s}_{p}").value for s in "ab" for p in ("prompt", "response")]


def test_the_worked_example_waits_for_run(tmp_path, monkeypatch):
    at = pair_page(tmp_path, monkeypatch)
    assert not at.exception
    assert editors(at) == ["I like to eat", " pizza", "I like to eat", " pizza."]
    assert at.checkbox(key="pair_per_token").value is True
    assert any("Press **Run**" in i.value for i in at.info)
    assert not [t for t in at.text if "sent from the failure page" in t.value]


def test_a_sent_pair_fills_the_editors_once(tmp_path, monkeypatch):
    from dashboard.state import PairText, SentPair

    a = PairText("query q7", "What is 2+2?", "4")
    b = PairText("retrieved e3", "What is 3+3?", "6")
    sent = SentPair(a, b, loss_on="all", reduction="sum", model="some/other-model")
    at = pair_page(tmp_path, monkeypatch, sent)
    assert not at.exception
    assert editors(at) == ["What is 2+2?", "4", "What is 3+3?", "6"]
    assert at.radio(key="pair_loss_on").value == "all"
    assert at.radio(key="pair_reduction").value == "sum"
    assert at.checkbox(key="pair_per_token").value is False
    (note,) = [t.value for t in at.text if "sent from the failure page" in t.value]
    assert "A = query q7, B = retrieved e3" in note and "some/other-model" in note
    assert "pair_sent" not in at.session_state  # taken once
    at.run()
    assert not at.exception
    assert editors(at) == ["What is 2+2?", "4", "What is 3+3?", "6"]


def test_run_shows_the_token_matrix_and_its_reading(tmp_path, tiny_model_dir, monkeypatch):
    """Run on a tiny Llama: the reading of the token matrix (as ``token_reading`` writes it),
    its heatmap and the note on the reduction; a response past 32 loss tokens is one error
    line that says to shorten it."""
    from dashboard.models import _load
    from gradlens.data.examples import Example
    from gradlens.lenses.pairs import compare_pair, token_reading

    monkeypatch.setenv("GRADLENS_DB", str(tmp_path / "none.duckdb"))
    spec = str(tiny_model_dir)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["model_spec"] = spec
    at.run()
    at.switch_page("views/pairs.py").run()
    a, b = ("I like to eat", " pizza"), ("I like to eat", " pizza.")
    at.session_state["pair_inputs"] = (spec, a, b, "response", "mean", True, True)
    at.run()
    assert not at.exception and not at.error
    lm = _load(spec, False)
    cmp = compare_pair(lm.model, lm.tokenizer, Example("A", *a), Example("B", *b))
    reading = token_reading(cmp)
    shown = [i.value.replace("\\", "") for i in at.info]
    assert reading in shown, shown
    assert any("never changes a pair's cosine" in c.value for c in at.caption)
    long = ("Count", " " + " ".join(str(i) for i in range(40)))
    at.session_state["pair_inputs"] = (spec, a, long, "response", "mean", True, True)
    at.run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert "loss-bearing tokens" in error and "shorten its response" in error
