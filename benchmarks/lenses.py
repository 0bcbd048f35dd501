"""Lenses on single gradients, timed on the bundled SmolLM2-135M-Instruct (CPU by default).

- backward lens of "Lionel Messi plays for" → " Paris" (one forward + one backward pass, the
  logit lens of 30 layers × n positions twice, 30 float32 ``matrix_rank``);
- input-embedding gradients of "The animal that says neigh is a" toward the target prompt
  "The animal that says bark is a" (KL), then 20 Adam steps on the input embeddings;
- the blog's batch experiment: 16 random sentences (6–12 tokens drawn from the vocabulary's
  Gaussian) optimised toward the same target prompt, 100 Adam steps (``--batch-steps``); the
  time per step is printed too, and the load average before and after each run;
- the pair inspector on " pizza" vs " pizza." (chat template) with its token matrix, and on a
  32-token response against itself plus one token (the split's limit).

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

import numpy as np
import torch

from gradlens.data.examples import Example
from gradlens.lenses.backward import backward_lens
from gradlens.lenses.embedding import input_gradients, optimize_inputs
from gradlens.lenses.embedding_batch import optimize_batch
from gradlens.lenses.pairs import compare_pair, token_reading
from gradlens.models.loading import load_model

LENS = ("Lionel Messi plays for", " Paris")
TEXT = "The animal that says neigh is a"
TARGET_PROMPT = "The animal that says bark is a"
STEPS = 20
TARGET_S = 10.0
BATCH, BATCH_STEPS, BATCH_TARGET_S = 16, 100, 120.0
PIZZA = (Example("A", "I like to eat", " pizza"), Example("B", "I like to eat", " pizza."))
LONG = " a" * 30  # A: 30 tokens + the end of turn; B: one more ('.'), 32: the split's limit


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
    ap.add_argument("--batch-steps", type=int, default=BATCH_STEPS, help="steps of the batch")
    ap.add_argument("--only", choices=("lenses", "batch", "pairs"), help="one group of workloads")
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

    if args.only in (None, "batch"):
        batch_benchmark(model, tok, args.batch_steps, args.repeat)
    if args.only in (None, "pairs"):
        pair_benchmark(model, tok, args.repeat)
    if args.only not in (None, "lenses"):
        return
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


def batch_benchmark(model, tok, steps: int, repeat: int) -> None:
    """The batch experiment ``repeat`` times (each run timed alone, the load average beside)."""
    times = []
    for r in range(max(repeat, 1)):
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        out = optimize_batch(model, tok, TARGET_PROMPT, batch=BATCH, steps=steps)
        times.append(time.perf_counter() - t0)
        cpu = time.process_time() - c0
        # CPU seconds over the threads: the wall time of a quiet box where they all run
        print(
            f"batch run {r}: {times[-1]:.1f} s = {times[-1] / steps:.3f} s/step; process CPU "
            f"{cpu:.1f} s = {cpu / steps:.3f} s/step over {torch.get_num_threads()} threads "
            f"(load average {load:.2f} → {os.getloadavg()[0]:.2f})"
        )
    med = statistics.median(times)
    ok = "✓" if med * BATCH_STEPS / steps <= BATCH_TARGET_S else "✗"
    print(
        f"{BATCH} random sentences × {steps} Adam steps: median {med:.1f} s "
        f"({med / steps:.3f} s/step; target ≤ {BATCH_TARGET_S:.0f} s for {BATCH_STEPS}) {ok}"
    )
    moved = out.moves.distance
    print(f"  lengths {out.lengths.tolist()} ({int(out.lengths.sum())} tokens)")
    print(f"  mean KL {out.mean_kl[0]:.4f} → {out.mean_kl[-1]:.4f}; per 10 steps:")
    print(f"    {[round(float(x), 4) for x in out.mean_kl[:: max(steps // 10, 1)]]}")
    print(
        f"  distance travelled: median {np.median(moved):.3f} (range {moved.min():.3f}–"
        f"{moved.max():.3f}); between two vocabulary tokens: median {out.typical_distance:.3f}"
    )
    print(
        f"  first step: median {np.median(out.moves.first_step):.4f} "
        f"(lr·√d = {out.first_step_expected:.4f})"
    )
    same = np.mean(np.array(out.moves.start_cosine) == np.array(out.moves.end_cosine))
    print(f"  nearest token by cosine unchanged for {100 * same:.0f} % of the tokens")
    heading = out.moves.heading_cosine
    print(
        f"  heading cosine: median {np.nanmedian(heading):.3f} (range {np.nanmin(heading):.3f}–"
        f"{np.nanmax(heading):.3f}); cos(g, e): {np.nanmin(out.moves.grad_cosine):.3f} to "
        f"{np.nanmax(out.moves.grad_cosine):.3f}"
    )


def pair_benchmark(model, tok, repeat: int) -> None:
    """compare_pair with the token matrix: the pizza pair, and a 32-token response."""
    long = (Example("A", "Say a 30 times", LONG), Example("B", "Say a 30 times", LONG + "."))
    for name, (a, b) in (("pizza pair", PIZZA), ("32-token response", long)):
        c0 = time.process_time()
        cold, warm, cmp = timed(lambda a=a, b=b: compare_pair(model, tok, a, b), repeat)
        cpu = (time.process_time() - c0) / (1 + len(warm))
        med = statistics.median(warm) if warm else cold
        n = [len(d.tokens) for d in cmp.tokens]
        print(
            f"pair inspector, {name} ({n[0]} × {n[1]} loss tokens): median {med:.2f} s; "
            f"process CPU {cpu:.1f} s a run (load average {os.getloadavg()[0]:.2f})"
        )
        if name == "pizza pair":
            print(f"  cosine {cmp.cosine:.4f}; tokens {[d.tokens for d in cmp.tokens]}")
            print("  token matrix (rows A, columns B):")
            for row in cmp.token_cosines:
                print("    " + "  ".join(f"{v:+.3f}" for v in row))
            print(f"  {token_reading(cmp)}")


if __name__ == "__main__":
    main()
