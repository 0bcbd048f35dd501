"""The Attribute page under AppTest on a tiny Llama's indexed run: a query of the run and a typed
demo query (its model loaded from the run's config) each show k rows and the original's rank,
with no exception and no error box; the subset choices rank on what they name; a row opens
the Pair inspector; a run without an index says what to run."""

from __future__ import annotations

import pytest

from gradlens.data.examples import load_examples
from gradlens.engine.job import compute
from tests.conftest import DEMO, REPO

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

TRAIN = DEMO / "small" / "train.jsonl"
QUERIES = DEMO / "small" / "paraphrased.jsonl"


@pytest.fixture(scope="module")
def indexed_db(tmp_path_factory, tiny_model_dir):
    db = tmp_path_factory.mktemp("attr") / "a.duckdb"
    compute(str(tiny_model_dir), str(TRAIN), str(QUERIES), str(db), run="small", candidates=3,
            index="sjlt:d16", progress=False)  # fmt: skip
    return db


def attribute_page(db, monkeypatch) -> AppTest:
    monkeypatch.setenv("GRADLENS_DB", str(db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.switch_page("views/attribute.py")
    return at.run()


def shown(at: AppTest):
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (table,) = at.dataframe
    return table.value, {m.label: m.value for m in at.metric}


def test_a_query_of_the_run_shows_k_rows_and_its_originals_rank(indexed_db, monkeypatch):
    at = attribute_page(indexed_db, monkeypatch)
    table, metrics = shown(at)
    assert len(table) == 10 and list(table["rank"]) == list(range(1, 11))
    assert metrics["original's rank (cosine)"].endswith("of 16")
    assert table["cosine"].is_monotonic_decreasing
    at.slider(key="attr_k").set_value(4).run()
    table, _ = shown(at)
    assert len(table) == 4
    for kind in ("single", "greedy", "full"):
        at.radio(key="attr_subset").set_value(kind).run()
        table, metrics = shown(at)
        assert len(table) == 4 and "original's rank (cosine)" in metrics


def test_a_typed_demo_query_shows_k_rows_and_its_originals_rank(indexed_db, monkeypatch):
    q = load_examples(QUERIES)[6]
    at = attribute_page(indexed_db, monkeypatch)
    at.radio(key="attr_mode").set_value(True).run()
    assert any("press **Rank**" in i.value for i in at.info)
    at.text_area(key="attr_prompt").set_value(q.prompt)
    at.text_area(key="attr_response").set_value(q.response)
    at.slider(key="attr_k").set_value(5)
    at.button(key="attr_rank").click().run()
    table, metrics = shown(at)
    assert len(table) == 5
    rank = int(metrics["original's rank (cosine)"].split()[0])
    assert 1 <= rank <= 16 and any(q.id in c.value for c in at.caption)
    # the same text as the stored query ranks the same training examples
    at.radio(key="attr_mode").set_value(False).run()
    at.selectbox(key="attr_query").set_value(q.id).run()
    stored, stored_metrics = shown(at)
    assert list(stored["example_id"]) == list(table["example_id"])
    assert stored_metrics["original's rank (cosine)"] == metrics["original's rank (cosine)"]


def test_a_row_opens_the_pair_inspector(indexed_db, monkeypatch):
    at = attribute_page(indexed_db, monkeypatch)
    first = shown(at)[0]["example_id"].iloc[0]
    at.button(key="attr_pair_1").click().run()
    assert not at.exception
    editors = [at.text_area(key=f"pair_{s}_prompt").value for s in "ab"]
    query = load_examples(QUERIES)[0]
    train = {ex.id: ex for ex in load_examples(TRAIN)}
    assert editors == [query.prompt, train[first].prompt]


def test_a_run_without_an_index_says_what_to_run(tmp_path, tiny_model_dir, monkeypatch):
    db = tmp_path / "plain.duckdb"
    compute(str(tiny_model_dir), str(TRAIN), str(QUERIES), str(db), run="plain", candidates=2,
            progress=False)  # fmt: skip
    at = attribute_page(db, monkeypatch)
    assert not at.exception and not at.error
    (info,) = [i.value for i in at.info]
    assert "has no gradient index" in info and "--index sjlt:d64" in info


def test_overview_and_greedy_page_show_the_full_set_rows(indexed_db, monkeypatch):
    from gradlens.cli import main
    from gradlens.runs.rank import full_set_curve, stored_full_set

    args = ["select", "--db", str(indexed_db), "--run", "small", "--folds", "2"]
    assert main([*args, "--null-draws", "3", "--full-set-greedy"]) == 0
    monkeypatch.setenv("GRADLENS_DB", str(indexed_db))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300).run()
    assert not at.exception and not at.error
    assert any("**Both views**" in m.value for m in at.markdown)
    both = at.dataframe[-1].value.set_index("subset")
    rows = stored_full_set(str(indexed_db), "small")[1].set_index("id")
    assert (
        both.loc["full gradient", "recall@1, all N"]
        == f"{rows.loc['all_n:full:recall@1'].accuracy:.4f}"
    )
    assert both.loc["BM25", "MRR, all N"] == f"{rows.loc['all_n:bm25:MRR'].accuracy:.4f}"
    at.switch_page("views/greedy.py").run()
    objective = at.radio(key="greedy_objective")
    assert "recall@1 (all N)" in objective.options
    objective.set_value("recall@1 (all N)").run()
    assert not at.exception and not at.error
    at.button(key="greedy_fs_peak").click().run()
    curve = full_set_curve(str(indexed_db), "small")
    peak = int(curve["accuracy"].to_numpy().argmax()) + 1
    assert at.session_state["gl_view"].subset == tuple(curve["component_idx"].iloc[:peak])
