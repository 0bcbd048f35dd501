"""torchrun scale-out: 2 CPU ranks (gloo) produce the single-process result in one run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from gradlens.store import Store
from tests.conftest import DEMO, REPO


def _dots(db):
    with Store(db, read_only=True) as s:
        run_id, status = s.con.execute("SELECT run_id, status FROM runs").fetchone()
        assert status == "complete"
        frame = s.frame("dots", run_id, "exact").sort_values(
            ["query_id", "candidate_id", "component_idx"]
        )
        norms = s.frame("norms", run_id, "exact")
    return frame.reset_index(drop=True), norms


def test_torchrun_two_cpu_ranks_equal_single_process(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    queries = tmp_path / "queries.jsonl"
    train.write_text("".join((DEMO / "train.jsonl").read_text().splitlines(True)[:10]))
    queries.write_text("".join((DEMO / "paraphrased.jsonl").read_text().splitlines(True)[:6]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = [
        "compute",
        "--model",
        str(tiny_model_dir),
        "--train",
        str(train),
        "--queries",
        str(queries),
        "--candidates",
        "3",
        "--no-progress",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "gradlens", *args, "--db", str(tmp_path / "one.duckdb")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "gradlens",
            *args,
            "--db",
            str(tmp_path / "two.duckdb"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert multi.stdout.count("passes=") == 1  # only rank 0 reports
    one, one_norms = _dots(tmp_path / "one.duckdb")
    two, two_norms = _dots(tmp_path / "two.duckdb")
    assert one[["query_id", "candidate_id", "component_idx"]].equals(
        two[["query_id", "candidate_id", "component_idx"]]
    )
    np.testing.assert_allclose(two["dot"], one["dot"], rtol=1e-6, atol=1e-10)
    assert len(two_norms) == len(one_norms)  # every example's norms written exactly once
