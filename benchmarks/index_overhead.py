"""What ``--index`` adds to a compute job: whole jobs on the 16-example set (data/demo/small),
alternating A/B/A/.../A in one process so that each indexed job is set against the mean of the
two plain jobs around it (which brackets the drift of a shared box); the median over rounds is
reported, with the load average before and after.

Two comparisons (the issue's):
- ``--index sjlt:d64`` against the same job without ``--index`` (target: at most +15 %);
- ``--project sjlt:0.01 --index sjlt:0.01`` against ``--project sjlt:0.01`` (the index reuses
  the projection the dots need; target: at most +5 %).

Every training example of the set is some query's original, so ``--index`` adds no pass
(checked: ``passes=`` is the same in both jobs of a pair). Each indexed job also prints the
seconds its projections took (the run's ``projection_seconds``): an index-only projection needs
each component's dense gradient, the matrix product that dominates what ``--index`` adds.

    python benchmarks/index_overhead.py                 # both comparisons, 3 rounds each
    python benchmarks/index_overhead.py --only project --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

from gradlens.engine.job import compute
from gradlens.models.loading import load_model

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "data/demo/small/train.jsonl"
QUERIES = REPO / "data/demo/small/paraphrased.jsonl"
#: name -> (options of the plain job, options of the indexed job)
COMPARISONS = {
    "index": ({}, {"index": "sjlt:d64"}),
    "project": ({"project": "sjlt:0.01"}, {"project": "sjlt:0.01", "index": "sjlt:0.01"}),
}


def job(model: str, options: dict) -> tuple[float, int, dict]:
    """Wall seconds, passes and the run's ``projection_seconds`` (per method) of one compute job
    into a fresh database."""
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "b.duckdb")
        t0 = time.perf_counter()
        summary = compute(model, str(TRAIN), str(QUERIES), db, progress=False, **options)
        seconds = time.perf_counter() - t0
        with duckdb.connect(db, read_only=True) as con:
            (stats,) = con.execute("SELECT stats FROM runs").fetchone()
        return seconds, summary.passes, json.loads(stats).get("projection_seconds", {})


def compare(model: str, name: str, rounds: int) -> float:
    plain, indexed = COMPARISONS[name]
    load = os.getloadavg()
    a, passes, _ = job(model, plain)
    ratios = []
    for r in range(rounds):
        b, passes_b, projected = job(model, indexed)
        a_next, _, _ = job(model, plain)
        assert passes_b == passes, (passes_b, passes)  # no training example outside the pairs
        ratios.append(b / ((a + a_next) / 2))
        spent = ", ".join(f"{m} {s:.1f} s" for m, s in projected.items()) or "none"
        print(
            f"{name} round {r + 1}: plain {a:.1f} s, indexed {b:.1f} s (projecting: {spent}), "
            f"plain {a_next:.1f} s -> {100 * (ratios[-1] - 1):+.1f} %"
        )
        a = a_next
    print(
        f"{name}: median {100 * (np.median(ratios) - 1):+.1f} % over {rounds} rounds "
        f"(range {100 * (min(ratios) - 1):+.1f} to {100 * (max(ratios) - 1):+.1f} %); "
        f"load {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    return float(np.median(ratios))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=sorted(COMPARISONS), action="append")
    args = ap.parse_args()
    load_model(args.model)  # convert/cache once
    for name in args.only or list(COMPARISONS):
        compare(args.model, name, args.rounds)


if __name__ == "__main__":
    main()
