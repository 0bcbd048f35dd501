"""``gradlens compute`` on ``datasets``-library inputs, tiny Llama: a ``save_to_disk`` folder and an
Arrow file with other column names, mapped with ``--columns``, give exactly the run id and the
dots of the same examples as JSONL; ``hf:`` reads a dataset put in a temporary ``datasets`` cache
through ``load_dataset`` with the network off (ids from the row index, stated in the config)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from gradlens.cli import main
from gradlens.store.database import Store
from tests.conftest import DEMO
from tests.unit.test_dataset_inputs import arrow_file, put_in_cache, save

RENAMED = {"id": "uid", "prompt": "instruction", "response": "output"}
COLUMNS = ",".join(f"{field}={column}" for field, column in RENAMED.items())


@pytest.fixture(scope="module")
def rows():
    """8 demo training examples and the paraphrases of 4 of them (as in test_compute)."""

    def read(name, pick):
        lines = (DEMO / name).read_text(encoding="utf-8").splitlines()[pick]
        return [json.loads(line) for line in lines]

    return read("train.jsonl", slice(8)), read("paraphrased.jsonl", slice(0, 8, 2))


def jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def renamed(records):
    return [{RENAMED[k]: v for k, v in r.items() if k in RENAMED} for r in records]


def compute(model_dir, train, queries, db, *extra) -> tuple[str, pd.DataFrame, dict]:
    """Run the CLI; returns (run id, the run's dots sorted, its stored config)."""
    args = ["compute", "--model", str(model_dir), "--train", str(train), "--queries"]
    args += [str(queries), "--db", str(db), "--candidates", "3", "--no-progress", *extra]
    assert main(args) == 0
    with Store(db, read_only=True) as store:
        run_id, config = store.con.execute("SELECT run_id, config FROM runs").fetchone()
        dots = store.frame("dots", run_id, "exact")
    keys = ["query_id", "candidate_id", "component_idx"]
    dots = dots.sort_values(keys).reset_index(drop=True)
    return run_id, dots, json.loads(config) if isinstance(config, str) else config


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model_dir, rows):
    root = tmp_path_factory.mktemp("jsonl")
    train, queries = rows
    return compute(
        tiny_model_dir,
        jsonl(root / "t.jsonl", train),
        jsonl(root / "q.jsonl", queries),
        root / "j.duckdb",
    )


def test_folder_and_arrow_file_give_the_jsonl_run(tmp_path, tiny_model_dir, rows, baseline):
    train, queries = rows
    folder = save(renamed(train), tmp_path / "train_ds")
    arrow = arrow_file(renamed(queries), tmp_path)
    run_id, dots, config = compute(
        tiny_model_dir, folder, arrow, tmp_path / "d.duckdb", "--columns", COLUMNS
    )
    assert run_id == baseline[0]
    pd.testing.assert_frame_equal(dots, baseline[1], check_exact=True)
    assert config["train_path"] == str(folder) and config["queries_path"] == str(arrow)
    assert (
        config["train_columns"]
        == config["query_columns"]
        == "id=uid,prompt=instruction,response=output"
    )
    assert "train_columns" not in baseline[2]


def test_hf_reads_the_local_cache_with_the_network_off(tmp_path, tiny_model_dir, rows, monkeypatch):
    """Training rows without ids get str(row index); the queries name them with integer ids."""
    train, queries = rows
    index = {r["id"]: i for i, r in enumerate(train)}
    as_rows = [{"question": r["prompt"], "answer": r["response"]} for r in train]
    as_queries = [
        {"question": q["prompt"], "answer": q["response"], "orig": index[q["id"]]} for q in queries
    ]
    cache = tmp_path / "hf-cache"
    put_in_cache(cache, "gradlens-test/tiny", {"train": as_rows, "test": as_queries})
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = compute(
        tiny_model_dir,
        "hf:gradlens-test/tiny",
        "hf:gradlens-test/tiny::test",
        tmp_path / "hf.duckdb",
        "--columns",
        "prompt=question,response=answer",
        "--query-columns",
        "id=orig",
    )
    # the same examples as JSONL with the row indexes as ids
    ids = {r["id"]: str(i) for i, r in enumerate(train)}
    want = compute(
        tiny_model_dir,
        jsonl(tmp_path / "t.jsonl", [{**r, "id": ids[r["id"]]} for r in train]),
        jsonl(tmp_path / "q.jsonl", [{**q, "id": ids[q["id"]]} for q in queries]),
        tmp_path / "j.duckdb",
    )
    assert got[0] == want[0]
    pd.testing.assert_frame_equal(got[1], want[1], check_exact=True)
    assert got[2]["train_ids"] == "str(row index)" and "train_ids" not in want[2]
    assert got[2]["query_columns"] == "id=orig,prompt=question,response=answer"


def test_a_query_set_without_ids_is_refused(tmp_path, tiny_model_dir, rows, capsys):
    train, queries = rows
    folder = save(renamed(train), tmp_path / "train_ds")
    no_ids = save(
        [{k: v for k, v in r.items() if k != "uid"} for r in renamed(queries)], tmp_path / "q"
    )
    args = ["compute", "--model", str(tiny_model_dir), "--train", str(folder), "--queries"]
    args += [str(no_ids), "--db", str(tmp_path / "x.duckdb"), "--columns", COLUMNS]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{no_ids}: missing column 'uid' (columns: " in err[0], err
    assert not (tmp_path / "x.duckdb").exists()
