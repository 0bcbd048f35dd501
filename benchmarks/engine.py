"""Engine vs the naive ``get_grads`` loop (1 + b passes per query), in one process.

Prints passes per query, wall time (model load included) and peak RSS for both, their ratio,
and the physical floor: unique examples x the measured time of one plain forward+backward.

    python benchmarks/engine.py                       # the 16-example set, naive + engine
    python benchmarks/engine.py --set demo --no-naive # the full demo: engine vs floor
    python benchmarks/engine.py --no-naive --project sjlt:0.01   # + projection overhead
    python benchmarks/engine.py --no-naive --batching            # + batch 4 vs batch 1
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from gradlens.candidates import bm25_candidates
from gradlens.compute import compute
from gradlens.data import IGNORE_INDEX, load_examples, tokenize_all
from gradlens.engine import naive_pair_dots
from gradlens.models import discover_components, load_model
from gradlens.store import Store

REPO = Path(__file__).resolve().parents[1]
SETS = {
    "small": (REPO / "data/demo/small/train.jsonl", REPO / "data/demo/small/paraphrased.jsonl"),
    "demo": (REPO / "data/demo/train.jsonl", REPO / "data/demo/paraphrased.jsonl"),
}


class PeakRSS:
    """Samples this process's resident set size every 20 ms; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            self.peak = max(self.peak, rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_naive(model_spec, train, queries, b):
    t0 = time.perf_counter()
    model, tok = load_model(model_spec)
    components = discover_components(model)
    cands = bm25_candidates(train, queries, b)
    train_tok = {t.example.id: t for t in tokenize_all(tok, train)}
    query_tok = {t.example.id: t for t in tokenize_all(tok, queries)}
    out, passes = {}, 0
    for qid, group in cands.groupby("query_id", sort=False):
        cids = list(group.sort_values("rank")["candidate_id"])
        dots, _, _ = naive_pair_dots(
            model, components, query_tok[qid], [train_tok[c] for c in cids]
        )
        passes += 1 + len(cids)
        for cid, row in zip(cids, dots):
            out[(qid, cid)] = row
    return time.perf_counter() - t0, passes, out


def run_engine(model_spec, train_path, queries_path, b, device, project=None):
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        t0 = time.perf_counter()
        summary = compute(
            model_spec,
            str(train_path),
            str(queries_path),
            str(db),
            candidates=b,
            device=device,
            progress=False,
        )
        wall = time.perf_counter() - t0
        with Store(db, read_only=True) as s:
            frame = s.frame("dots", summary.run_id, "exact")
    k = frame["component_idx"].max() + 1
    out = {}
    for (qid, cid), g in frame.groupby(["query_id", "candidate_id"]):
        row = np.zeros(k)
        row[g["component_idx"].to_numpy()] = g["dot"].to_numpy()
        out[(qid, cid)] = row
    return wall, summary, out


def batching_seconds(model_spec, examples, n=8, batch=4):
    """Engine time for n examples one at a time vs in right-padded batches of ``batch``."""
    from gradlens.engine import GradientEngine

    model, tok = load_model(model_spec)
    toks = tokenize_all(tok, examples[:n])
    with GradientEngine(model, discover_components(model)) as engine:
        engine.compute(toks[:1])  # warm-up
        t0 = time.perf_counter()
        for t in toks:
            engine.compute([t])
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            engine.compute(toks[i : i + batch])
        batched = time.perf_counter() - t0
    return single, batched


def fwd_bwd_seconds(model_spec, examples, sample=12):
    """Mean wall time of one plain forward+backward (weights' .grad computed) per example."""
    model, tok = load_model(model_spec)
    toks = tokenize_all(tok, examples[:sample])
    times = []
    for t in toks:
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logits = model(input_ids=t.input_ids[None], use_cache=False).logits[:, :-1]
        labels = t.labels[None, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )
        loss.backward()
        times.append(time.perf_counter() - t0)
    return float(np.mean(times[1:])), float(np.mean([t.n_tokens for t in toks]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="small")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--project", help="also time a run with these projections")
    parser.add_argument("--batching", action="store_true", help="also time batch 4 vs 1")
    args = parser.parse_args()
    train_path, queries_path = SETS[args.set]
    train, queries = load_examples(train_path), load_examples(queries_path)
    load_model(args.model)  # convert/cache once so neither side pays the one-time conversion

    with PeakRSS() as rss_engine:
        eng_wall, summary, eng_dots = run_engine(
            args.model, train_path, queries_path, args.candidates, args.device
        )
    floor_one, mean_tokens = fwd_bwd_seconds(args.model, train + queries)
    floor = summary.examples * floor_one
    rows = [
        ("engine", summary.passes / len(queries), eng_wall, rss_engine.peak),
    ]
    if not args.no_naive:
        with PeakRSS() as rss_naive:
            naive_wall, naive_passes, naive_dots = run_naive(
                args.model, train, queries, args.candidates
            )
        rows.insert(0, ("naive loop", naive_passes / len(queries), naive_wall, rss_naive.peak))
        worst = max(
            np.max(np.abs(eng_dots[k] - v) / (np.abs(v).max() + 1e-30))
            for k, v in naive_dots.items()
        )
    print(
        f"## engine benchmark: set={args.set} ({len(queries)} queries, {len(train)} train, "
        f"b={args.candidates}), model={args.model}, device={args.device}"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print()
    print("| method | passes/query | wall s (incl. load) | peak RSS GB |")
    print("|---|---|---|---|")
    for name, ppq, wall, peak in rows:
        print(f"| {name} | {ppq:.2f} | {wall:.1f} | {peak / 1e9:.2f} |")
    print()
    print(
        f"unique examples: {summary.examples}; engine passes: {summary.passes}; "
        f"evictions: {summary.evictions}"
    )
    print(
        f"one plain fwd+bwd: {floor_one:.3f} s (mean {mean_tokens:.0f} tokens); "
        f"floor = {summary.examples} x {floor_one:.3f} = {floor:.1f} s; "
        f"engine / floor = {eng_wall / floor:.2f}"
    )
    if args.project:
        proj_wall, proj_summary, _ = run_engine(
            args.model, train_path, queries_path, args.candidates, args.device, args.project
        )
        print(
            f"with --project {args.project}: {proj_wall:.1f} s vs {eng_wall:.1f} s exact only: "
            f"+{100 * (proj_wall / eng_wall - 1):.0f} % (passes {proj_summary.passes})"
        )
    if args.batching:
        single, batched = batching_seconds(args.model, train)
        print(
            f"engine on 8 examples: batch 1 {single:.2f} s, batch 4 {batched:.2f} s "
            f"(batch 4 / batch 1 = {batched / single:.2f})"
        )
    if not args.no_naive:
        print(
            f"speedup engine vs naive: {naive_wall / eng_wall:.2f}x; "
            f"max relative dot difference: {worst:.1e}"
        )


if __name__ == "__main__":
    main()
