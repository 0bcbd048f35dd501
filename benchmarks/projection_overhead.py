"""What ``--project sjlt:0.01`` adds to the compute job's time, measured two ways in one process.

1. Whole jobs, alternating A/B/A/B/.../A (``--rounds`` projected jobs, each between two exact
   ones): each projected job is set against the mean of its two neighbours, which brackets the
   drift of this shared box; the median over rounds is reported.
2. Inside the engine, interleaved: the same examples alternately without and with the
   projection (one engine; its ``projections`` toggled), after a warm-up call that draws every
   component's hash table. The added seconds per example are set against the exact job's
   seconds per unique example from part 1.

    python benchmarks/projection_overhead.py                    # 16-example set, sjlt:0.01
    python benchmarks/projection_overhead.py --set demo --no-jobs --examples 24
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gradlens.data.examples import load_examples, tokenize_all
from gradlens.engine.capture import GradientEngine
from gradlens.engine.job import compute
from gradlens.engine.projection import build_projections, parse_project_spec
from gradlens.models.loading import discover_components, load_model

REPO = Path(__file__).resolve().parents[1]
SETS = {
    "small": (REPO / "data/demo/small/train.jsonl", REPO / "data/demo/small/paraphrased.jsonl"),
    "demo": (REPO / "data/demo/train.jsonl", REPO / "data/demo/paraphrased.jsonl"),
}


def job_seconds(model, train, queries, project):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = compute(
            model,
            str(train),
            str(queries),
            str(Path(tmp) / "b.duckdb"),
            project=project,
            progress=False,
        )
        return time.perf_counter() - t0, summary


def interleaved(model_spec, train, queries, project, n):
    model, tok = load_model(model_spec)
    components = discover_components(model)
    half = n // 2
    picked = [pool[i * len(pool) // half] for pool in (train, queries) for i in range(half)]
    toks = tokenize_all(tok, picked)
    sets = build_projections(parse_project_spec(project), components, 0, model)
    with GradientEngine(model, components, projections=sets) as engine:
        t0 = time.perf_counter()
        engine.compute(toks[:1])  # draws every component's hash table
        first = time.perf_counter() - t0
        plain, projected = [], []
        for t in toks:
            for store, projections in ((plain, []), (projected, sets)):
                engine.projections = projections
                t0 = time.perf_counter()
                engine.compute([t])
                store.append(time.perf_counter() - t0)
    return first, np.array(plain), np.array(projected)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), default="small")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--project", default="sjlt:0.01")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--no-jobs", action="store_true", help="skip the whole jobs")
    ap.add_argument("--rounds", type=int, default=3, help="projected jobs in the A/B/.../A run")
    ap.add_argument("--job-seconds-per-example", type=float, help="exact job s per example")
    args = ap.parse_args()
    train_path, queries_path = SETS[args.set]
    load_model(args.model)  # convert/cache once
    per_example = args.job_seconds_per_example
    print(f"## projection overhead: set={args.set}, --project {args.project}")
    if not args.no_jobs:
        exact_walls, ratios = [], []
        a, summary = job_seconds(args.model, train_path, queries_path, None)
        exact_walls.append(a)
        for r in range(args.rounds):
            b, _ = job_seconds(args.model, train_path, queries_path, args.project)
            a_next, _ = job_seconds(args.model, train_path, queries_path, None)
            exact_walls.append(a_next)
            ratios.append(b / ((a + a_next) / 2))
            print(
                f"round {r + 1}: exact {a:.1f} s, with projection {b:.1f} s, exact {a_next:.1f} s"
                f" -> +{100 * (ratios[-1] - 1):.0f} %"
            )
            a = a_next
        per_example = float(np.mean(exact_walls)) / summary.examples
        print(
            f"whole jobs ({summary.examples} unique examples, model load included): median "
            f"+{100 * (np.median(ratios) - 1):.0f} % over {len(ratios)} rounds "
            f"(range +{100 * (min(ratios) - 1):.0f} to +{100 * (max(ratios) - 1):.0f} %); "
            f"{per_example:.2f} s per example exact"
        )
    first, plain, projected = interleaved(
        args.model,
        load_examples(train_path),
        load_examples(queries_path),
        args.project,
        args.examples,
    )
    added = projected - plain
    print(
        f"inside the engine, {len(plain)} examples interleaved: exact {plain.mean():.3f} s, "
        f"with projection {projected.mean():.3f} s per example; added {added.mean():.3f} s "
        f"(median {np.median(added):.3f}); first call (hash tables drawn) {first:.2f} s"
    )
    if per_example:
        print(
            f"added per example / exact job per example = {added.mean():.3f} / "
            f"{per_example:.2f} = +{100 * added.mean() / per_example:.0f} %"
        )


if __name__ == "__main__":
    main()
