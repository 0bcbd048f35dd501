"""Lenses on single gradients, timed on the bundled SmolLM2-135M-Instruct (CPU by default).

- backward lens of "Lionel Messi plays for" → " Paris" (one forward + one backward pass, the
  logit lens of 30 layers × n positions twice, 30 float32 ``matrix_rank``);
- input-embedding gradients of "The animal that says neigh is a" toward the target prompt
  "The animal that says bark is a" (KL), then 20 Adam steps on the input embeddings.

Model load is timed apart. Each workload runs once cold (the first autograd pass of the
process) and then ``--repeat`` times; the median of the warm runs is the figure. The load
average is printed too: the machine is shared, and with 2 cores a busy neighbour doubles
everything.

    python benchmarks/lenses.py [--repeat 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from gradlens.lenses.backward import backward_lens
from gradlens.lenses.embedding import input_gradients, optimize_inputs
from gradlens.models.loading import load_model

LENS = ("Lionel Messi plays for", " Paris")
TEXT = "The animal that says neigh is a"
TARGET_PROMPT = "The animal that says bark is a"
STEPS = 20
TARGET_S = 10.0


def timed(fn, repeat: int) -> tuple[float, list[float], object]:
    """(cold seconds, warm seconds, last result)."""
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        warm.append(time.perf_counter() - t0)
    return cold, warm, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="warm runs per workload")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    t0 = time.perf_counter()
    model, tok = load_model("smollm2", device=args.device)
    load_s = time.perf_counter() - t0
    print(f"model load: {load_s:.2f} s")

    def lens():
        return backward_lens(model, tok, *LENS)

    def embeddings():
        grads = input_gradients(model, tok, TEXT, target_prompt=TARGET_PROMPT)
        opt = optimize_inputs(model, tok, TEXT, TARGET_PROMPT, steps=STEPS, target_kind="prompt")
        return grads, opt

    rows = []
    for name, fn in (
        ("backward lens", lens),
        (f"input gradients + {STEPS} Adam steps", embeddings),
    ):
        cold, warm, out = timed(fn, args.repeat)
        med = statistics.median(warm) if warm else cold
        rows.append((name, cold, warm, med))
        ok = "✓" if med <= TARGET_S else "✗"
        print(
            f"{name}: median {med:.2f} s over {len(warm)} warm runs "
            f"({', '.join(f'{w:.2f}' for w in warm)}); cold {cold:.2f} s; target ≤ "
            f"{TARGET_S:.0f} s {ok}"
        )
        if name == "backward lens":
            b = out
            print(f"  tokens {list(b.tokens)}, n = {b.n_tokens}, loss {b.loss:.4f}")
            print(f"  ff1_rank per layer (up gradient {b.ff1_shape[0]}×{b.ff1_shape[1]}):")
            print(f"    {b.ff1_rank.tolist()}")
            print(f"  rank of ' Paris' at the last position: {b.target_rank[:, -1].tolist()}")
            print(f"  last layer, last position: promoted {list(b.vjp_top[-1][-1])}")
        else:
            g, o = out
            print(
                f"  KL {g.loss:.4f}; ‖∂L/∂e‖ per token {[round(float(x), 3) for x in g.grad_norm]}"
            )
            print(f"  nearest to −∂L/∂e at ' neigh': {list(g.nearest[4])}")
            print(f"  loss per step {[round(float(x), 4) for x in o.loss]}")
            print(
                f"  distance after {STEPS} steps {[round(float(x), 3) for x in o.distance[-1]]}, "
                f"typical vocabulary distance {o.typical_distance:.3f}"
            )
            print(f"  nearest tokens after {STEPS} steps {list(o.nearest[-1])}")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
