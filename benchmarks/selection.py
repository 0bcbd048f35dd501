"""Benchmark: vectorised greedy selection vs a straightforward per-candidate loop.

Shapes: the paper's (K=113 components, N=988 queries, b=5; its released data when
../shared/paper or $GRADLENS_PAPER_DIR is present, else random data of those shapes) and
SmolLM2-sized (K=211, N=1000, b=5, random). The naive greedy recomputes each candidate subset's
accuracy from scratch, summing the subset's components in a Python loop; a full run would take
minutes, so it runs a few steps and the total is extrapolated from a fitted per-evaluation cost
t(m) = a + c·m (m = subset size), summed over all K(K+1)/2 evaluations.

    python benchmarks/selection.py [--repeat 3] [--naive-steps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradlens import selection as sel  # noqa: E402
from gradlens.store.importer import read_long_tables  # noqa: E402

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def paper_arrays() -> Arrays | None:
    env = os.environ.get("GRADLENS_PAPER_DIR")
    d = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "paper"
    if not (d / "dots.parquet").exists():
        return None
    t = read_long_tables(
        d / "dots.parquet",
        d / "norms.parquet",
        d / "n_params.json",
        filters={"setting": "model_generated"},
    )
    ra = t.to_arrays()
    return ra.dots, ra.query_sq, ra.cand_sq, ra.target


def random_arrays(n: int, b: int, k: int, seed: int = 0) -> Arrays:
    rng = np.random.default_rng(seed)
    qsq = rng.gamma(2.0, 1.0, size=(n, k))
    csq = rng.gamma(2.0, 1.0, size=(n, b, k))
    dots = rng.normal(size=(n, b, k)) * np.sqrt(qsq[:, None, :] * csq)
    target = rng.integers(0, b, size=n)
    dots[np.arange(n), target] += 0.3 * np.sqrt(qsq * csq[np.arange(n), target])
    return dots, qsq, csq, target


def naive_accuracy(dots, qsq, csq, target, subset) -> float:
    """Accuracy of one subset from scratch: a Python loop over its components."""
    n, b, _ = dots.shape
    num = np.zeros((n, b))
    qs = np.zeros(n)
    cs = np.zeros((n, b))
    for c in subset:
        num += dots[:, :, c]
        qs += qsq[:, c]
        cs += csq[:, :, c]
    cos = num / (np.sqrt(qs[:, None] * cs) + sel.EPS)
    return float(sel.correct(cos, target).mean())


def naive_greedy(dots, qsq, csq, target, steps: int) -> list[int]:
    chosen: list[int] = []
    for _ in range(steps):
        best, best_acc = -1, -1.0
        for c in range(dots.shape[2]):
            if c in chosen:
                continue
            acc = naive_accuracy(dots, qsq, csq, target, [*chosen, c])
            if acc > best_acc:
                best, best_acc = c, acc
        chosen.append(best)
    return chosen


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def naive_estimate(arrays: Arrays, steps: int) -> tuple[float, float, list[int]]:
    """(seconds for `steps` naive steps, extrapolated seconds for a full run, chosen order)."""
    dots, qsq, csq, target = arrays
    k = dots.shape[2]
    t0 = time.perf_counter()
    chosen = naive_greedy(dots, qsq, csq, target, steps)
    measured = time.perf_counter() - t0
    # per-evaluation cost at subset sizes 1 and K, then sum over all K(K+1)/2 evaluations
    t1, _ = best_of(lambda: naive_accuracy(dots, qsq, csq, target, [0]), 20)
    tk, _ = best_of(lambda: naive_accuracy(dots, qsq, csq, target, list(range(k))), 3)
    c = (tk - t1) / max(1, k - 1)
    a = t1 - c
    total = sum((k - s) * (a + c * (s + 1)) for s in range(k))
    return measured, total, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive-steps", type=int, default=3)
    args = ap.parse_args()

    paper = paper_arrays()
    cases = [
        (
            "paper data (model_generated)" if paper else "random, paper shapes",
            paper or random_arrays(988, 5, 113),
        ),
        ("random, SmolLM2 shapes", random_arrays(1000, 5, 211, seed=1)),
    ]
    rows = []
    for label, arrays in cases:
        dots, qsq, csq, target = arrays
        n, b, k = dots.shape
        fast, steps = best_of(lambda a=arrays: sel.greedy_select(*a), args.repeat)
        measured, naive_total, chosen = naive_estimate(arrays, args.naive_steps)
        assert chosen == [s.component_idx for s in steps[: len(chosen)]], "naive and fast differ"
        kf, _ = best_of(lambda a=arrays: sel.kfold_greedy(*a, folds=5), 1)
        peak = max(s.accuracy for s in steps)
        rows.append((label, k, n, b, fast, kf, measured, naive_total, naive_total / fast, peak))

    print(f"CPU threads available: {os.cpu_count()}; numpy {np.__version__}\n")
    print(
        "| data | K | N | b | greedy (s) | 5-fold held-out (s) | naive, "
        f"{args.naive_steps} steps (s) | naive full (s, extrapolated) | speed-up | peak acc |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, k, n, b, fast, kf, measured, naive_total, ratio, peak in rows:
        print(
            f"| {label} | {k} | {n} | {b} | {fast:.3f} | {kf:.2f} | {measured:.2f} | "
            f"{naive_total:.0f} | {ratio:.0f}x | {peak:.4f} |"
        )


if __name__ == "__main__":
    main()
