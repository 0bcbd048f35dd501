"""The paper's random projection without caching, timed on the demo as ``compute`` times it
(``gradlens.engine.costs.measure_uncached``: 3 queries, 1 + b fresh passes each, densified and
projected), set against a stored run's cost table: for the shipped demo runs, computed before
``compute`` timed this, the row is otherwise "not measured".

    python benchmarks/uncached_projection.py --db data/demo.duckdb --run model-generated
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gradlens.data.candidates import bm25_candidates
from gradlens.data.examples import load_examples, tokenize_all
from gradlens.engine.costs import measure_uncached
from gradlens.engine.projection import build_projections, parse_projections
from gradlens.models.loading import discover_components, load_model
from gradlens.runs import read

REPO = Path(__file__).resolve().parents[1]
QUERIES = {"paraphrased": "paraphrased.jsonl", "model-generated": "generated.jsonl"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--run", default="model-generated", choices=list(QUERIES))
    ap.add_argument("--project", default="sjlt:0.01")
    args = ap.parse_args()
    info = read.run_info(args.db, args.run)
    train = load_examples(REPO / "data/demo/train.jsonl")
    queries = load_examples(REPO / "data/demo" / QUERIES[args.run])
    net, tok = load_model("smollm2")
    components = discover_components(net)
    cands = bm25_candidates(train, queries, info.config.get("candidates", 5), "prompt")
    query_cands = {
        q: list(g.sort_values("rank")["candidate_id"])
        for q, g in cands.groupby("query_id", sort=False)
    }
    sets = build_projections(parse_projections(args.project), components, 0, net)
    by_id = {t.example.id: t for t in tokenize_all(tok, train)}
    q_by_id = {t.example.id: t for t in tokenize_all(tok, queries)}
    u = measure_uncached(net, components, sets, q_by_id, by_id, query_cands, "mean")
    measured = u["pass_seconds"] + u["densify_seconds"] + u["project_seconds"][args.project]
    per_query = measured / u["queries"]
    print(
        f"{u['queries']} queries, {u['examples']} fresh passes: passes {u['pass_seconds']:.2f} s, "
        f"densify {u['densify_seconds']:.2f} s, project {u['project_seconds'][args.project]:.2f} s"
    )
    print(
        f"without caching, extrapolated to {info.n_queries} queries: "
        f"{per_query * info.n_queries:.0f} s"
    )
    costs = read.costs(args.db, args.run).set_index("step")
    pre = costs.loc["dot-product precomputation", "seconds"]
    cached = costs.loc[f"random projection {args.project}, with caching", "seconds"]
    print(f"stored: precomputation {pre:.0f} s, projection with caching {cached:.0f} s")


if __name__ == "__main__":
    main()
