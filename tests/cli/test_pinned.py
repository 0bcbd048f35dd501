"""Behaviour pin: the run id and a checksum of the dots that the compute job produced for a tiny
model and data set before the read-side restructuring (issue 9). Any change to these literals
needs a migration note in the README (stored run ids would no longer match their configs).

The run id is a hash of weights, data and options, so it is pinned exactly. Dot products are
float sums whose last bits depend on the CPU's kernels, so the checksum is compared at a
tolerance scaled to the largest value: per (query, candidate) pair, the full-gradient dot
Σ_c dot_c and the index-weighted Σ_c (c + 1)·dot_c (a reordering or mislabelled component
changes it)."""

from __future__ import annotations

import shutil

import numpy as np

from gradlens.engine.job import compute
from gradlens.store.database import Store
from tests.conftest import DEMO

PINNED_RUN_ID = "2e3eaf25925e28e3"
PINNED = {
    ("demo_001", "demo_001"): (0.7543902360489962, 1.021066399887189),
    ("demo_001", "demo_003"): (0.11696394205220757, 0.23071382095123238),
    ("demo_001", "demo_004"): (0.027465611163309395, 0.0651181798767847),
    ("demo_004", "demo_001"): (0.012858463546763104, 0.04866434723964987),
    ("demo_004", "demo_002"): (0.051216828800268864, 0.11208706689479969),
    ("demo_004", "demo_004"): (0.26023607480069294, 0.43971943545078496),
}


def test_run_id_and_dots_checksum_are_unchanged(tiny_model_dir, tmp_path, monkeypatch):
    # the --model spec is part of the run key: use the same relative spelling every time
    shutil.copytree(tiny_model_dir, tmp_path / "tiny-llama")
    monkeypatch.chdir(tmp_path)
    train = tmp_path / "train.jsonl"
    queries = tmp_path / "queries.jsonl"
    train.write_text(
        "\n".join((DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines()[:6]) + "\n"
    )
    queries.write_text(
        "\n".join((DEMO / "paraphrased.jsonl").read_text(encoding="utf-8").splitlines()[:6:3])
        + "\n"
    )
    db = tmp_path / "pin.duckdb"
    summary = compute("tiny-llama", str(train), str(queries), str(db), candidates=3, progress=False)
    with Store(db, read_only=True) as store:
        dots = store.frame("dots", summary.run_id, "exact")
    dots["weighted"] = dots["dot"] * (dots["component_idx"] + 1)
    got = dots.groupby(["query_id", "candidate_id"])[["dot", "weighted"]].sum().sort_index()
    assert summary.run_id == PINNED_RUN_ID
    assert list(got.index) == list(PINNED)
    want = np.array(list(PINNED.values()))
    # float32 round-off is relative to the gradient norms, not to each (possibly cancelling) sum
    np.testing.assert_allclose(got.to_numpy(), want, rtol=0, atol=1e-6 * np.abs(want).max())
