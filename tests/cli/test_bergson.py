"""`gradlens import --bergson-train/--bergson-queries` and `gradlens export --modules` through
the CLI, on stores written in bergson's layout (``tests.unit.test_bergson.stores``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradlens.cli import main
from tests.unit.test_bergson import MODULES, TRAIN, stores


def _import(tmp_path, train, queries) -> list[str]:
    db = str(tmp_path / "x.duckdb")
    return ["import", "--db", db, "--bergson-train", str(train), "--bergson-queries", str(queries)]


def test_import_and_export_modules(tmp_path, capsys):
    train, queries, *_ = stores(tmp_path)
    db = str(tmp_path / "x.duckdb")
    args = _import(tmp_path, train, queries) + ["--run", "berg", "--candidates", "2"]
    assert main(args) == 0
    assert "run=berg imported queries=3 candidates=2 components=5" in capsys.readouterr().out
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    export = ["export", "--db", db, "--run", "berg", "--modules"]
    assert main([*export, "--subset", "L1.down,L0.q"]) == 0
    assert capsys.readouterr().out.split() == [
        "layers.1.mlp.down_proj",
        "layers.0.self_attn.q_proj",
    ]
    assert main([*export, "--greedy", "3"]) == 0
    out = capsys.readouterr().out.split()
    assert len(out) == 3 and set(out) <= set(MODULES)
    every = _import(tmp_path, train, queries) + ["--run", "all", "--all-pairs"]
    assert main(every) == 0
    assert f"candidates={len(TRAIN)}" in capsys.readouterr().out


def test_projected_run_ranks_stored_queries_only(tmp_path, capsys):
    """A projected store's vectors become the run's index: a stored query ranks against all N
    (cosines from the store's arrays); free text and select are refused in one line."""
    train, queries, g_train, g_query = stores(tmp_path, projection_dim=2)
    db = str(tmp_path / "x.duckdb")
    assert main(_import(tmp_path, train, queries) + ["--run", "p"]) == 0
    capsys.readouterr()
    assert main(["rank", "--db", db, "--run", "p", "--query-id", "a", "--top", "6", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == len(TRAIN)
    q = np.concatenate([g_query[m][1] for m in MODULES])  # query "a" is the second row
    for r in results:
        row = [ex[0] for ex in TRAIN].index(r["example_id"])
        t = np.concatenate([g_train[m][row] for m in MODULES]).astype(np.float32)
        want = q.astype(np.float32) @ t / np.sqrt((q.astype(np.float32) ** 2).sum() * (t**2).sum())
        assert r["cosine"] == pytest.approx(float(want), abs=1e-6)
    free = ["rank", "--db", db, "--run", "p", "--prompt", "bread?", "--response", "yes"]
    assert main(free) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "imported from bergson" in err
    assert main(["select", "--db", db, "--run", "p"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bergson:p2 dots only" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--run", "r", "--candidates", "2", "--all-pairs"], "exclude each other"),
        (["--candidates", "2"], "needs --run NAME"),
        (["--run", "r", "--dots", "d.parquet"], "a bergson import takes no --dots"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, extra, message):
    train, queries, *_ = stores(tmp_path)
    assert main(_import(tmp_path, train, queries) + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_bad_stores_and_export_options_exit_2(tmp_path, capsys):
    train, queries, *_ = stores(tmp_path)
    (queries / "gradients.bin").write_bytes(b"short")
    assert main(_import(tmp_path, train, queries) + ["--run", "r"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "queries/gradients.bin: 5 bytes" in err
    db = str(tmp_path / "x.duckdb")
    assert main(["import", "--db", db, "--run", "r", "--candidates", "3"]) == 2
    assert "go with --bergson-train" in capsys.readouterr().err
    assert main(["export", "--db", db, "--run", "r", "--modules"]) == 2
    assert "either --subset NAMES or --greedy K" in capsys.readouterr().err
