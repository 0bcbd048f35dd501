"""``gradlens rank`` end to end on a tiny Llama with an index: a stored query's own text gives
that query's result, the ranking is a brute-force argsort of cosines rebuilt from the index's
vectors, BM25 scores are BM25Okapi's over all N, contributions add up to the cosine, and runs
without an index say what to run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from gradlens.cli import main
from gradlens.data.examples import load_examples
from gradlens.engine.job import compute
from gradlens.store.database import Store
from gradlens.store.index import open_index
from tests.conftest import DEMO
from tests.helpers import synthetic_import_args

METHODS = "sjlt:d16,exact:L1.q+L0.gate"


@pytest.fixture(scope="module")
def data():
    """The small demo set: 16 training examples and their 16 paraphrases."""
    return DEMO / "small" / "train.jsonl", DEMO / "small" / "paraphrased.jsonl"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model_dir, data):
    db = tmp_path_factory.mktemp("rank") / "r.duckdb"
    train, queries = data
    compute(str(tiny_model_dir), str(train), str(queries), str(db), run="small", candidates=3,
            index=METHODS, progress=False)  # fmt: skip
    return db


def rank_json(capsys, db, *args) -> dict:
    capsys.readouterr()
    assert main(["rank", "--db", str(db), "--run", "small", "--json", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object on one line
    return json.loads(out)


def brute_cosines(ix, query_vectors, subset_idx) -> np.ndarray:
    """cos [N] of the concatenated vectors of the subset's components (numpy on the matrices)."""
    pos = [ix.info.components.index(c) for c in subset_idx]
    q = np.concatenate([np.asarray(query_vectors[p], dtype=np.float64) for p in pos])
    t = np.concatenate([ix.matrix("train", c).astype(np.float64) for c in subset_idx], axis=1)
    return (t @ q) / (np.linalg.norm(t, axis=1) * np.linalg.norm(q) + 1e-12)


def test_a_stored_querys_own_text_gives_its_result(indexed, data, capsys):
    queries = load_examples(data[1])
    for q in queries[:2]:
        for method in ("sjlt:d16", "exact"):
            stored = rank_json(capsys, indexed, "--query-id", q.id, "--method", method)
            typed = rank_json(
                capsys, indexed, "--prompt", q.prompt, "--response", q.response, "--method", method
            )
            assert [r["example_id"] for r in typed["results"]] == [
                r["example_id"] for r in stored["results"]
            ]
            for a, b in zip(typed["results"], stored["results"], strict=True):
                assert a["cosine"] == pytest.approx(b["cosine"], abs=1e-6)
                assert a["bm25"] == b["bm25"]
            assert typed["original"]["example_id"] == stored["original"]["example_id"] == q.id
            assert typed["original"]["rank"] == stored["original"]["rank"]
            assert typed["subset"] == stored["subset"] and typed["method"] == stored["method"]


def test_results_are_an_argsort_of_brute_force_cosines_with_bm25_and_contributions(
    indexed, data, capsys
):
    train = load_examples(data[0])
    bm25 = BM25Okapi([ex.prompt.split() for ex in train])
    ids = np.array([ex.id for ex in train])
    with Store(indexed, read_only=True) as store:
        comps = store.frame("components", store.resolve("small")["run_id"])
    index_of = dict(zip(comps["component"], comps["component_idx"].astype(int)))
    for method, subset in (("sjlt:d16", None), ("sjlt:d16", "L1.q,embed"), ("exact", "L0.gate")):
        ix = open_index(
            str(indexed), "small", "exact:L1.q+L0.gate" if method == "exact" else method
        )
        for row, qid in enumerate(ix.query_ids[:4]):
            args = ["--query-id", qid, "--method", method, "--top", "16"]
            out = rank_json(capsys, indexed, *args, *(["--subset", subset] if subset else []))
            names = out["subset"]
            assert names == (subset.split(",") if subset else names)
            subset_idx = [index_of[n] for n in names]
            cos = brute_cosines(ix, ix.vectors("query", row), subset_idx)
            order = np.lexsort((np.arange(len(cos)), -cos))
            assert [r["example_id"] for r in out["results"]] == list(ids[order])
            scores = bm25.get_scores(load_examples(data[1])[row].prompt.split())
            for r in out["results"]:
                j = int(np.flatnonzero(ids == r["example_id"])[0])
                assert r["cosine"] == pytest.approx(cos[j], abs=1e-6)
                assert r["bm25"] == pytest.approx(scores[j], rel=1e-12)
                assert r["bm25_rank"] == 1 + int(np.sum(np.delete(scores, j) >= scores[j]))
                assert sum(r["contributions"].values()) == pytest.approx(r["cosine"], abs=1e-9)
                assert list(r["contributions"]) == names
            j = int(np.flatnonzero(ids == qid)[0])
            assert out["original"]["rank"] == 1 + int(np.sum(np.delete(cos, j) >= cos[j] - 1e-9))


def test_text_output_and_generate(indexed, capsys):
    capsys.readouterr()
    assert main(["rank", "--db", str(indexed), "--run", "small", "--query-id", "demo_003",
                 "--top", "3"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("query demo_003 of run 'small' against all 16 training examples")
    assert len(out) == 1 + 1 + 3 + 1 and out[-1].startswith("original demo_003 (query): rank ")
    got = rank_json(capsys, indexed, "--prompt", "What is 2+2?", "--generate",
                    "--max-new-tokens", "6", "--top", "2")  # fmt: skip
    assert got["query"]["generated"] is True and got["query"]["response"]
    assert got["original"] is None and len(got["results"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query-id", "nope"], "has no query 'nope'"),
        (["--query-id", "demo_003", "--subset", "L9.q"], "holds no component 'L9.q'"),
        (["--query-id", "demo_003", "--method", "gaussian:0.5"], "has no gaussian:0.5 index"),
        (["--prompt", "x"], "--prompt needs either --response TEXT or --generate"),
        (["--query-id", "demo_003", "--generate"], "go with --prompt"),
    ],
)
def test_bad_input_is_one_line(indexed, capsys, args, message):
    capsys.readouterr()
    assert main(["rank", "--db", str(indexed), "--run", "small", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_runs_without_an_index_say_what_to_run(tmp_path, tiny_model_dir, data, capsys):
    db = tmp_path / "plain.duckdb"
    compute(str(tiny_model_dir), str(data[0]), str(data[1]), str(db), run="plain", candidates=2,
            progress=False)  # fmt: skip
    capsys.readouterr()
    assert main(["rank", "--db", str(db), "--run", "plain", "--query-id", "demo_003"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no gradient index" in err
    assert "gradlens compute" in err and "--index sjlt:d64" in err and "--candidates 2" in err
    assert main(synthetic_import_args(tmp_path, db)) == 0
    capsys.readouterr()
    assert main(["rank", "--db", str(db), "--run", "syn", "--query-id", "q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "imported as dot products" in err


def test_select_adds_the_full_set_rows_and_greedy_by_full_set_recall(indexed, capsys, tmp_path):
    from gradlens.runs.rank import full_set_curve, full_set_inputs, stored_full_set
    from gradlens.runs.read import load_arrays, run_info
    from gradlens.selection.fullset import full_set_greedy, full_set_row_id, retrieval

    args = ["select", "--db", str(indexed), "--run", "small", "--folds", "2", "--null-draws", "3"]
    capsys.readouterr()
    assert main([*args, "--full-set-greedy", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["headline"]}
    method, stored = stored_full_set(str(indexed), "small")
    assert method == "sjlt:d16" and list(stored["id"]) == [
        i for i in rows if i.startswith("all_n:")
    ]
    assert all(("recall" in r["metric"] or "MRR" in r["metric"]) and "all N" in r["metric"]
               for i, r in rows.items() if i.startswith("all_n:"))  # fmt: skip
    x = full_set_inputs(str(indexed), run_info(str(indexed), "small").run_id,
                        load_arrays(str(indexed), "small"))  # fmt: skip
    full = retrieval(x.fs)
    assert rows[full_set_row_id("full", "recall@1")]["accuracy"] == full.recall(1)
    assert rows[full_set_row_id("full", "MRR")]["accuracy"] == pytest.approx(full.mrr, abs=1e-15)
    curve = full_set_curve(str(indexed), "small")
    steps = full_set_greedy(x.fs)
    assert list(curve["accuracy"]) == [s.accuracy for s in steps]
    peak = rows[full_set_row_id("full_set_greedy_peak", "recall@1")]
    assert peak["accuracy"] == max(s.accuracy for s in steps) and peak["null_hi"] is not None
    # without an index: no full-set rows, and --full-set-greedy says what to run
    plain = tmp_path / "plain.duckdb"
    assert main(synthetic_import_args(tmp_path, plain)) == 0
    capsys.readouterr()
    assert main(["select", "--db", str(plain), "--run", "syn", "--full-set-greedy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--full-set-greedy" in err and "imported" in err
