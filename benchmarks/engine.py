"""Engine vs the naive ``get_grads`` loop (1 + b passes per query), in one process.

Prints passes per query, wall time (model load included) and peak RSS for both, their ratio,
and the physical floor: unique examples x the time of one plain forward+backward, sampled by
probes on a second model copy during the engine run (see ``FloorProbe``).

    python benchmarks/engine.py --no-floor            # the 16-example set, naive + engine
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
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from gradlens.data.candidates import bm25_candidates
from gradlens.data.examples import IGNORE_INDEX, load_examples, tokenize_all
from gradlens.engine.job import compute
from gradlens.engine.reference import naive_pair_dots
from gradlens.models.loading import discover_components, load_model
from gradlens.store.database import Store

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
    from gradlens.engine.capture import GradientEngine

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


def _plain_fwd_bwd(model, t) -> float:
    """Wall time of one plain forward+backward of ``t`` (weights' .grad computed)."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    logits = model(input_ids=t.input_ids[None], use_cache=False).logits[:, :-1]
    labels = t.labels[None, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
    loss.backward()
    return time.perf_counter() - t0


def _spread(train, queries, sample):
    """``sample`` examples spread evenly over the training set and the queries (half each)."""
    half = sample // 2
    return [pool[i * len(pool) // half] for pool in (train, queries) for i in range(half)]


class FloorProbe:
    """Samples the floor DURING the engine run: every ``every`` engine passes, one plain
    forward+backward of the next example of a spread sample on a second copy of the model.

    This box's speed drifts by tens of percent over minutes (a fresh process measured one
    fwd+bwd at 1.25 s and at 1.94 s within the hour), so a floor measured before or after
    a ten-minute run is not comparable with it; probes taken in between are. Probe time is
    subtracted from the engine's wall time.
    """

    def __init__(self, model_spec, train, queries, every=8, sample=32):
        self.model, tok = load_model(model_spec)
        self.toks = tokenize_all(tok, _spread(train, queries, sample))
        self.every = every
        self.times: list[float] = []
        self.seconds = 0.0  # probe wall time, including bookkeeping
        self._next = 0

    def probe(self) -> None:
        t0 = time.perf_counter()
        self.times.append(_plain_fwd_bwd(self.model, self.toks[self._next % len(self.toks)]))
        self._next += 1
        self.model.zero_grad(set_to_none=True)
        self.seconds += time.perf_counter() - t0

    def __enter__(self) -> FloorProbe:
        from gradlens.engine.capture import GradientEngine

        self._orig = orig = GradientEngine.compute
        probe, every = self, self.every

        def compute(engine, batch):
            out = orig(engine, batch)
            if engine.passes % every < len(batch):
                probe.probe()
            return out

        GradientEngine.compute = compute
        self.probe()  # warm-up, not counted
        self.times.clear()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        from gradlens.engine.capture import GradientEngine

        GradientEngine.compute = self._orig

    @property
    def mean(self) -> float:
        return float(np.mean(self.times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), default="small")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floor probes (their second model copy would count in the peak RSS)",
    )
    parser.add_argument("--project", help="also time a run with these projections")
    parser.add_argument("--batching", action="store_true", help="also time batch 4 vs 1")
    args = parser.parse_args()
    train_path, queries_path = SETS[args.set]
    train, queries = load_examples(train_path), load_examples(queries_path)
    load_model(args.model)  # convert/cache once so neither side pays the one-time conversion

    probe = FloorProbe(args.model, train, queries) if not args.no_floor else nullcontext()
    with probe, PeakRSS() as rss_engine:
        eng_wall, summary, eng_dots = run_engine(
            args.model, train_path, queries_path, args.candidates, args.device
        )
    if not args.no_floor:
        eng_wall -= probe.seconds  # the probes ran inside the engine's timed window
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
    if not args.no_floor:
        floor_one = probe.mean
        floor = summary.examples * floor_one
        mean_tokens = float(np.mean([t.n_tokens for t in probe.toks]))
        print(
            f"one plain fwd+bwd, {len(probe.times)} probes during the run: {floor_one:.3f} s "
            f"(min {min(probe.times):.3f}, max {max(probe.times):.3f}; mean {mean_tokens:.0f} "
            f"tokens; probe time {probe.seconds:.1f} s excluded from the engine's wall); "
            f"floor = {summary.examples} x {floor_one:.3f} = {floor:.1f} s; "
            f"engine / floor = {eng_wall / floor:.2f}"
        )
    if args.project:
        proj_probe = FloorProbe(args.model, train, queries) if not args.no_floor else nullcontext()
        with proj_probe:
            proj_wall, proj_summary, _ = run_engine(
                args.model, train_path, queries_path, args.candidates, args.device, args.project
            )
        line = (
            f"with --project {args.project}: {proj_wall:.1f} s vs {eng_wall:.1f} s exact only "
            f"(passes {proj_summary.passes})"
        )
        if args.no_floor:
            line += f": +{100 * (proj_wall / eng_wall - 1):.0f} %"
        else:
            # each job against the floor sampled during it: the ratio of ratios cancels drift
            proj_wall -= proj_probe.seconds
            proj_ratio = proj_wall / (proj_summary.examples * proj_probe.mean)
            exact_ratio = eng_wall / floor
            line += (
                f"; probe time excluded: {proj_wall:.1f} s, floor per pass "
                f"{proj_probe.mean:.3f} s during it, job / floor {proj_ratio:.2f} against "
                f"{exact_ratio:.2f} exact only -> drift-corrected overhead "
                f"+{100 * (proj_ratio / exact_ratio - 1):.0f} %"
            )
        print(line)
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
