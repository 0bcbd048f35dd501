"""The shipped demo (`data/demo/runs/paraphrased`, restored by `make demo` instead of computed) is
what the code computes: 2 demo queries recomputed with the bundled SmolLM2 (exact, ~1 minute on
CPU) give the shipped candidates and every shipped exact dot product to 1e-5 in cosine scale."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gradlens.engine.job import compute
from gradlens.store.database import Store
from tests.conftest import DEMO

SHIPPED = DEMO / "runs" / "paraphrased"
N_QUERIES = 2
TOL = 1e-5


def test_shipped_demo_matches_a_recomputation(tmp_path):
    if not (SHIPPED / "dots.parquet").exists():
        pytest.skip(f"shipped demo run not found at {SHIPPED} (make demo-compute writes it)")
    runs = pd.read_parquet(SHIPPED / "runs.parquet")
    assert list(runs["name"]) == ["paraphrased"] and runs["status"].iloc[0] == "complete"
    config = json.loads(runs["config"].iloc[0])

    lines = (DEMO / "paraphrased.jsonl").read_text(encoding="utf-8").splitlines()[:N_QUERIES]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "recomputed.duckdb"
    # the full training set, so that BM25 ranks the same candidates
    summary = compute("smollm2", DEMO / "train.jsonl", queries, db, progress=False)
    with Store(db, read_only=True) as s:
        got_cands = s.frame("candidates", summary.run_id)
        got_dots = s.frame("dots", summary.run_id, "exact")
        got_comps = s.frame("components", summary.run_id)
        got_config = json.loads(s.run(summary.run_id)["config"])
    qids = [json.loads(line)["id"] for line in lines]
    assert sorted(got_cands["query_id"].unique()) == sorted(qids)
    for key in ("model", "candidates", "bm25_on", "loss_on", "reduction", "dtype"):
        if key in config:
            assert got_config.get(key) == config[key], key

    comps = pd.read_parquet(SHIPPED / "components.parquet")
    cols = ["component_idx", "component", "n_params"]
    pd.testing.assert_frame_equal(
        got_comps[cols].sort_values("component_idx", ignore_index=True),
        comps[cols].sort_values("component_idx", ignore_index=True),
        check_dtype=False,
    )

    shipped_cands = pd.read_parquet(SHIPPED / "candidates.parquet")
    shipped_cands = shipped_cands[shipped_cands["query_id"].isin(qids)]
    order = ["query_id", "rank"]
    got_c = got_cands.sort_values(order, ignore_index=True)
    want_c = shipped_cands.sort_values(order, ignore_index=True)
    assert list(zip(got_c["query_id"], got_c["rank"], got_c["candidate_id"], strict=True)) == list(
        zip(want_c["query_id"], want_c["rank"], want_c["candidate_id"], strict=True)
    )
    np.testing.assert_allclose(got_c["bm25"], want_c["bm25"], rtol=1e-12)

    shipped = pd.read_parquet(
        SHIPPED / "dots.parquet", filters=[("method", "==", "exact"), ("query_id", "in", qids)]
    )
    norms = pd.read_parquet(SHIPPED / "norms.parquet", filters=[("method", "==", "exact")])
    keys = ["query_id", "candidate_id", "component_idx"]
    both = got_dots.merge(shipped, on=keys, how="outer", suffixes=("", "_shipped"))
    assert len(both) == len(got_dots) == len(shipped) == len(got_c) * len(comps)
    assert both["dot"].notna().all() and both["dot_shipped"].notna().all()
    sq = norms.set_index(["split", "example_id", "component_idx"])["sqnorm"]
    qsq = sq.loc["query"].reindex(pd.MultiIndex.from_frame(both[keys[::2]])).to_numpy()
    csq = sq.loc["train"].reindex(pd.MultiIndex.from_frame(both[keys[1:]])).to_numpy()
    assert np.isfinite(qsq).all() and np.isfinite(csq).all()
    err = np.abs(both["dot"].to_numpy() - both["dot_shipped"].to_numpy())
    err /= np.sqrt(qsq * csq) + 1e-30
    worst = int(np.argmax(err))
    assert err[worst] <= TOL, (
        f"worst error in cosine scale {err[worst]:.2e} at {both.iloc[worst][keys].to_dict()}"
    )
