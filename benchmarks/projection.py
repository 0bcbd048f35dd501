"""Benchmark: dense Gaussian vs SJLT (CountSketch) projection of 8 x 262,144 -> 4,096 on CPU.

SJLT "cold" includes drawing its hash table (first call); "warm" reuses the cached table, as the
engine does across batches. The Gaussian regenerates its blocks on every call (never stored).

    python benchmarks/projection.py [--repeat 3] [--gaussian-repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradlens.engine.projection import Projector  # noqa: E402


def timed(fn) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-in", type=int, default=262_144)
    ap.add_argument("--n-out", type=int, default=4_096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gaussian-repeat", type=int, default=1)
    args = ap.parse_args()

    x = torch.randn(args.batch, args.n_in, generator=torch.Generator().manual_seed(0))
    rows = []
    # numba loads (or first compiles) the CPU sketch kernel once per process: not a cost of
    # any projection, so it is timed and reported on its own
    jit, _ = timed(lambda: Projector(16, 4, "sjlt", seed=0).project(torch.ones(16)))
    sj = Projector(args.n_in, args.n_out, "sjlt", seed=1)
    cold, y_sjlt = timed(lambda: sj.project(x))
    warm = min(timed(lambda: sj.project(x))[0] for _ in range(args.repeat))
    sj4 = Projector(args.n_in, args.n_out, "sjlt", seed=1, s=4)
    sj4.project(x)
    warm4 = min(timed(lambda: sj4.project(x))[0] for _ in range(args.repeat))
    ga = Projector(args.n_in, args.n_out, "gaussian", seed=1)
    gauss, y_gauss = float("inf"), None
    for _ in range(args.gaussian_repeat):
        t, y_gauss = timed(lambda: ga.project(x))
        gauss = min(gauss, t)

    def norm_ratio(y: torch.Tensor) -> float:
        return float((y.square().sum(1) / x.square().sum(1)).mean())

    rows.append(("gaussian (dense, chunked)", gauss, norm_ratio(y_gauss)))
    rows.append(("sjlt s=1, cold (incl. hashing)", cold, norm_ratio(y_sjlt)))
    rows.append(("sjlt s=1, warm", warm, norm_ratio(y_sjlt)))
    rows.append(("sjlt s=4, warm", warm4, norm_ratio(sj4.project(x))))

    print(
        f"{args.batch} x {args.n_in:,} -> {args.n_out:,}, float32, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| method | time (s) | gaussian / this | mean ‖p‖²/‖x‖² |")
    print("|---|---|---|---|")
    for name, t, ratio in rows:
        print(f"| {name} | {t:.4f} | {gauss / t:.0f}x | {ratio:.3f} |")
    print(f"\nsketch kernel load/compile, once per process (before the rows above): {jit:.3f} s")


if __name__ == "__main__":
    main()
