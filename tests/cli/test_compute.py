"""The compute job end to end on a tiny Llama: every stored number against brute force,
resume after an interruption, eviction under a tiny memory budget, no-op reruns, export."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from gradlens.cli import main
from gradlens.data.examples import load_examples, tokenize_all
from gradlens.engine import job as compute_module
from gradlens.engine.job import compute
from gradlens.models.loading import discover_components, load_model
from gradlens.store.database import Store
from gradlens.store.workfile import running_jobs, work_dir
from tests.conftest import DEMO
from tests.helpers import assert_db_matches_brute_force, brute_force_tables


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """8 demo training examples and the paraphrases of 4 of them."""
    root = tmp_path_factory.mktemp("data")
    train_lines = (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    para_lines = (DEMO / "paraphrased.jsonl").read_text(encoding="utf-8").splitlines()[:8:2]
    (root / "train.jsonl").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (root / "queries.jsonl").write_text("\n".join(para_lines) + "\n", encoding="utf-8")
    return root / "train.jsonl", root / "queries.jsonl"


def run(model_dir, train, queries, db, **kw):
    return compute(
        str(model_dir), str(train), str(queries), str(db), candidates=3, progress=False, **kw
    )


def dots_frame(db, method="exact"):
    with Store(db, read_only=True) as s:
        run_id = s.con.execute("SELECT run_id FROM runs").fetchone()[0]
        return (
            s.frame("dots", run_id, method)
            .sort_values(["query_id", "candidate_id", "component_idx"])
            .reset_index(drop=True)
        )


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_model_dir, small_data):
    db = tmp_path_factory.mktemp("clean") / "clean.duckdb"
    summary = run(tiny_model_dir, *small_data, db)
    return db, summary


def test_stored_numbers_equal_brute_force(clean_run, tiny_model_dir, small_data):
    db, summary = clean_run
    train, queries = small_data
    model, tok = load_model(str(tiny_model_dir))
    components = discover_components(model)
    toks = {
        "train": tokenize_all(tok, load_examples(train)),
        "query": tokenize_all(tok, load_examples(queries)),
    }
    grads = brute_force_tables(model, components, toks)
    with Store(db, read_only=True) as store:
        run_id = summary.run_id
        assert store.run(run_id)["status"] == "complete"
        n_dots = len(store.frame("dots", run_id, "exact"))
        assert n_dots == summary.pairs * len(components)
        checked = assert_db_matches_brute_force(store, run_id, grads)
    assert checked >= n_dots


def test_summary_and_one_pass_per_unique_example(clean_run):
    db, summary = clean_run
    assert summary.passes == summary.examples  # the floor: one pass per unique example
    assert summary.pairs == 4 * 3
    line = summary.line()
    for field in ("examples=", "pairs=12", "components=15", f"passes={summary.passes}", "db="):
        assert field in line
    con = duckdb.connect(str(db), read_only=True)
    cand = con.execute("SELECT query_id, candidate_id FROM candidates").df()
    con.close()
    assert (cand.groupby("query_id")["candidate_id"].apply(list).apply(len) == 3).all()
    assert all(q in list(g) for q, g in cand.groupby("query_id")["candidate_id"])


def test_rerun_is_a_noop(clean_run, tiny_model_dir, small_data):
    db, summary = clean_run
    again = run(tiny_model_dir, *small_data, db)
    assert again.already_complete and again.passes == 0
    assert "already complete" in again.line()


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt, duckdb.InterruptException], ids=["python", "duckdb"]
)
def test_interrupted_run_resumes(
    tmp_path, tiny_model_dir, small_data, clean_run, monkeypatch, interrupt
):
    """Ctrl-C raises KeyboardInterrupt, or DuckDB's InterruptException when it lands mid-write:
    either way the job records "interrupted" and resumes."""
    db = tmp_path / "resume.duckdb"
    calls = {"n": 0}
    original = compute_module._write_query

    def flaky(*args, **kw):
        if calls["n"] == 2:
            raise interrupt
        calls["n"] += 1
        return original(*args, **kw)

    monkeypatch.setattr(compute_module, "_write_query", flaky)
    with pytest.raises(interrupt):
        run(tiny_model_dir, *small_data, db)
    monkeypatch.setattr(compute_module, "_write_query", original)
    # the database was never written: the half run lives in the job's own work file
    assert not db.exists()
    (work,) = work_dir(db).glob("*.duckdb")
    with Store(work, read_only=True) as s:
        row = s.con.execute("SELECT run_id, status FROM runs").fetchone()
        assert row[1] == "running"  # a half-written run never looks complete
        assert len(s.done_queries(row[0])) == 2
    (progress,) = running_jobs(db)
    assert (progress.state, progress.done, progress.total) == ("interrupted", 2, 4)
    resumed = run(tiny_model_dir, *small_data, db)
    assert not work.exists() and running_jobs(db) == []  # published, work files removed
    assert not resumed.already_complete
    clean = dots_frame(clean_run[0])
    got = dots_frame(db)
    pd.testing.assert_frame_equal(got[clean.columns[:-1]], clean[clean.columns[:-1]])
    np.testing.assert_allclose(got["dot"], clean["dot"], rtol=1e-6, atol=1e-9)
    with Store(db, read_only=True) as s:
        norms = s.frame("norms", resumed.run_id)
        assert not norms.duplicated(["method", "split", "example_id", "component_idx"]).any()
        assert s.run(resumed.run_id)["status"] == "complete"


def test_tiny_memory_budget_evicts_and_recomputes(tmp_path, tiny_model_dir, small_data, clean_run):
    db = tmp_path / "evict.duckdb"
    summary = run(tiny_model_dir, *small_data, db, max_memory=1)
    assert summary.evictions > 0
    assert summary.passes > summary.examples  # evicted examples were computed again
    clean = dots_frame(clean_run[0])
    np.testing.assert_allclose(dots_frame(db)["dot"], clean["dot"], rtol=1e-6, atol=1e-9)


def test_cli_runs_and_export(clean_run, tmp_path, capsys):
    db, summary = clean_run
    assert main(["runs", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert summary.run_name in out and "complete" in out
    assert main(["export", "--db", str(db), "--run", summary.run_name, "--out", str(tmp_path)]) == 0
    exported = pd.read_parquet(tmp_path / "dots.parquet")
    assert len(exported) == summary.pairs * 15
    runs = pd.read_parquet(tmp_path / "runs.parquet")
    assert json.loads(runs["config"][0])["candidates"] == 3


def test_projection_rows_are_stored(tmp_path, tiny_model_dir, small_data, clean_run):
    db = tmp_path / "proj.duckdb"
    summary = run(tiny_model_dir, *small_data, db, project="sjlt:0.5,kron:0.5")
    with Store(db, read_only=True) as s:
        assert sorted(s.methods(summary.run_id)) == ["exact", "kron:0.5", "sjlt:0.5"]
        exact = s.frame("norms", summary.run_id, "exact").sort_values(
            ["split", "example_id", "component_idx"]
        )
        for method in ("sjlt:0.5", "kron:0.5"):
            proj = s.frame("norms", summary.run_id, method).sort_values(
                ["split", "example_id", "component_idx"]
            )
            # projections preserve squared norms in expectation: total over all rows within 20 %
            ratio = proj["sqnorm"].sum() / exact["sqnorm"].sum()
            assert 0.8 < ratio < 1.2, method
            dots = s.frame("dots", summary.run_id, method)
            assert len(dots) == summary.pairs * summary.components


def test_bf16_forward_backward_stays_close_to_float32(tmp_path, tiny_model_dir, small_data):
    """--dtype bf16 runs the model in bfloat16 (dots still accumulate in float32/64)."""
    fp32 = tmp_path / "fp32.duckdb"
    bf16 = tmp_path / "bf16.duckdb"
    run(tiny_model_dir, *small_data, fp32)
    summary = run(tiny_model_dir, *small_data, bf16, dtype="bf16")
    assert summary.passes == summary.examples
    a, b = dots_frame(fp32), dots_frame(bf16)
    assert a[["query_id", "candidate_id", "component_idx"]].equals(
        b[["query_id", "candidate_id", "component_idx"]]
    )
    assert np.isfinite(b["dot"]).all()
    cos = np.dot(a["dot"], b["dot"]) / (np.linalg.norm(a["dot"]) * np.linalg.norm(b["dot"]))
    assert cos > 0.98


def test_device_auto_resolves_without_gpu():
    import torch

    from gradlens.errors import GradLensError
    from gradlens.models.loading import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(GradLensError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(GradLensError, match="unknown device"):
        resolve_device("tpu")


def test_the_database_is_readable_while_a_job_runs_and_a_second_job_refuses(
    tmp_path, tiny_model_dir, small_data, clean_run, monkeypatch
):
    """While a job computes, readers open the database (and the job never holds it); a second
    job on the same run stops with a clear message; the first one then publishes its run."""
    from gradlens.errors import GradLensError
    from gradlens.runs import read as queries
    from tests.helpers import synthetic_selected_db

    db = synthetic_selected_db(tmp_path, "shared.duckdb")  # a database with another run in it
    seen = {}
    original = compute_module._write_query

    def during(*args, **kw):
        if not seen:
            seen["runs"] = list(queries.list_runs(db)["name"])  # a reader, mid-job
            with pytest.raises(GradLensError, match="already being computed"):
                run(tiny_model_dir, *small_data, db)
        return original(*args, **kw)

    monkeypatch.setattr(compute_module, "_write_query", during)
    summary = run(tiny_model_dir, *small_data, db)
    assert seen["runs"] == ["syn"]  # the new run appears only when complete
    assert sorted(queries.list_runs(db)["name"]) == sorted(["syn", summary.run_name])
    np.testing.assert_allclose(
        dots_frame_of(db, summary.run_id)["dot"], dots_frame(clean_run[0])["dot"], rtol=1e-6
    )


def dots_frame_of(db, run_id):
    with Store(db, read_only=True) as s:
        return (
            s.frame("dots", run_id, "exact")
            .sort_values(["query_id", "candidate_id", "component_idx"])
            .reset_index(drop=True)
        )
