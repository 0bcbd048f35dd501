"""The backward lens's parts on the bundled SmolLM2-135M-Instruct (CPU), each fast path beside its
baseline in the same process, alternating, so that the ratio survives a busy machine:

- the FF1 ranks of "Lionel Messi plays for" → " Paris" (30 layers): ``torch.linalg.matrix_rank``
  of each 1536 × 576 float32 gradient (autograd's) against ``factored_rank`` from the n-row
  factors (both give the same ranks; checked);
- the whole lens (one forward + one backward, the logit lens of −δ, δ and x, the shift), the
  one-step edit (layer 29's FF2, lr 0.1), and ``lens_ranks`` per prompt over the first
  ``--prompts`` demo prompts.

    python benchmarks/backward_lens.py [--repeat 3] [--threads N] [--prompts 16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from gradlens.lenses.backward import backward_lens, lens_mlps, mlp_pass, target_loss, token_ids
from gradlens.lenses.edit import one_step_edit
from gradlens.lenses.ranks import lens_ranks, read_lens_prompts
from gradlens.models.loading import load_model
from gradlens.models.surgery import frozen

PROMPT, TARGET = "Lionel Messi plays for", " Paris"
DEMO_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "demo" / "lens_prompts.jsonl"


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ff1_weight_grads(model, tok) -> list[torch.Tensor]:
    """Autograd's FF1 weight gradients for the worked example (the baseline's input)."""
    prompt_ids, target_ids = token_ids(tok, PROMPT, TARGET)
    weights = [m.weight for m in lens_mlps(model)[0]]
    with frozen(model, keep=weights), torch.enable_grad():
        ids = torch.tensor([prompt_ids])
        loss = target_loss(model, ids, len(prompt_ids), target_ids)
        return [g.float() for g in torch.autograd.grad(loss, weights)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds / warm runs")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--prompts", type=int, default=16, help="demo prompts for lens_ranks")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# load average at start {os.getloadavg()[0]:.2f}")
    model, tok = load_model("smollm2")
    prompt_ids, target_ids = token_ids(tok, PROMPT, TARGET)
    n = len(prompt_ids)
    run = mlp_pass(model, prompt_ids, lambda ids: target_loss(model, ids, n, target_ids))
    grads = ff1_weight_grads(model, tok)
    full = [int(torch.linalg.matrix_rank(g if g.shape[0] >= g.shape[1] else g.T)) for g in grads]
    assert run.ff1_ranks() == full, (run.ff1_ranks(), full)
    print(f"FF1 ranks (both ways): {full}")
    t_full, t_fact = [], []
    for _ in range(args.repeat):  # alternating: the box's drift hits both alike
        t_full.append(seconds(lambda: [torch.linalg.matrix_rank(g) for g in grads]))
        t_fact.append(seconds(run.ff1_ranks))
    full_s, fact_s = statistics.median(t_full), statistics.median(t_fact)
    print(
        f"30 FF1 ranks: matrix_rank of the full gradients {full_s:.3f} s, factored "
        f"{fact_s:.4f} s (median of {args.repeat}; {full_s / fact_s:.0f}x)"
    )
    for name, fn in (
        ("backward lens", lambda: backward_lens(model, tok, PROMPT, TARGET)),
        ("one-step edit (layer 29 FF2)", lambda: one_step_edit(model, tok, PROMPT, TARGET, 29)),
    ):
        cold = seconds(fn)
        warm = statistics.median(seconds(fn) for _ in range(args.repeat))
        print(f"{name}: {warm:.2f} s (cold {cold:.2f} s)")
    items = read_lens_prompts(DEMO_PROMPTS)[: args.prompts]
    total = seconds(lambda: lens_ranks(model, tok, items))
    print(
        f"lens_ranks over {len(items)} demo prompts: {total:.1f} s ({total / len(items):.2f} s "
        f"a prompt)"
    )
    print(f"# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
