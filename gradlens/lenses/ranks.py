"""The backward lens over many prompts (``gradlens lens-ranks``): the paper's Fig. 4 statistic and
the shift, per (prompt, layer).

Input: JSONL, one ``{"prompt", "target"}`` object a line (an optional ``"id"``), raw text: no
chat template; the target's first token, tokenized as given (its leading space included), is
scored at the prompt's last position. For each prompt and layer ℓ one forward and one backward
pass give:

- ``ff1_rank``: the numeric rank of FF1's gradient (``gradlens.lenses.backward.factored_rank``),
  beside ``n_tokens``, the prompt's length; the lemma bounds it by n, and the paper's Fig. 4 is
  the share of (prompt, layer) where it *equals* n, by normalised layer index ℓ / (L − 1);
- ``target_cosine`` / ``cosine_rank``: at the last position, the cosine of the raw −δ with the
  target's output embedding and the target's rank by it over the vocabulary; ``lens_rank``: the
  target's rank in the logit lens of −δ there (the view that can hide the shift).

An encoder-decoder model (T5) reads the prompt in its encoder and scores the target's first token
at the decoder's first position (``gradlens.lenses.backward.lens_sequence``): the layers are the
decoder's blocks and ``n_tokens`` is the decoder's one position, so the lemma bounds the rank by 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from gradlens.errors import GradLensError
from gradlens.files import ProgressReporter, progress_path, write_atomically
from gradlens.lenses.backward import (
    is_encoder_decoder,
    lens_logits,
    lens_sequence,
    mlp_pass,
    target_cosines,
    target_loss,
    token_ids,
)
from gradlens.options import LensRanksOptions

#: The CSV's columns, one row per (prompt, layer).
COLUMNS = (
    "id",
    "layer",
    "n_tokens",
    "ff1_rank",
    "target_cosine",
    "cosine_rank",
    "lens_rank",
)


@dataclass(frozen=True)
class LensPrompt:
    """One line of the prompts file: its id (the ``id`` field, else the line number), the prompt
    and the target (raw text)."""

    id: str
    prompt: str
    target: str


def read_lens_prompts(path: str | Path) -> list[LensPrompt]:
    """The prompts of a JSONL file; GradLensError naming the file, line and field of the first
    bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GradLensError(f"cannot read {path}: {exc}") from None
    items: list[LensPrompt] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GradLensError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise GradLensError(f"{where}: expected an object with 'prompt' and 'target'")
        for name in ("prompt", "target"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise GradLensError(f"{where}: '{name}' must be a non-empty string")
        item_id = str(row.get("id", number))
        if item_id in seen:
            raise GradLensError(f"{where}: id '{item_id}' appears twice")
        seen.add(item_id)
        items.append(LensPrompt(item_id, row["prompt"], row["target"]))
    if not items:
        raise GradLensError(f"{path}: no prompts")
    return items


def prompt_ranks(model: nn.Module, tokenizer, item: LensPrompt) -> pd.DataFrame:
    """One row per layer (the columns of ``COLUMNS``) for one prompt: one forward and one
    backward pass."""
    encoder_decoder = is_encoder_decoder(model)
    prompt_ids, target_ids = token_ids(tokenizer, item.prompt, item.target, encoder_decoder)
    ids, read_ids = lens_sequence(model, prompt_ids, target_ids)
    n = len(read_ids)
    run = mlp_pass(model, ids, lambda t: target_loss(model, t, len(prompt_ids), target_ids))
    minus = -run.delta[:, n - 1]  # [L, d]: where the step moves each layer's MLP output
    target = target_ids[0]
    cosine, cosine_rank = target_cosines(model, len(tokenizer), minus, target)
    lens = lens_logits(model, minus)[:, : len(tokenizer)]
    lens_rank = (lens > lens[:, target : target + 1]).sum(-1) + 1
    return pd.DataFrame(
        {
            "id": item.id,
            "layer": np.arange(len(minus)),
            "n_tokens": n,
            "ff1_rank": run.ff1_ranks(),
            "target_cosine": cosine.cpu().numpy().astype(np.float64),
            "cosine_rank": cosine_rank.cpu().numpy(),
            "lens_rank": lens_rank.cpu().numpy(),
        }
    )


def lens_ranks(
    model: nn.Module,
    tokenizer,
    items: Sequence[LensPrompt],
    on_prompt: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """``prompt_ranks`` of every prompt, stacked (``on_prompt`` is called after each). A
    prompt whose target has no token is refused by its id."""
    frames = []
    for item in items:
        try:
            frames.append(prompt_ranks(model, tokenizer, item))
        except GradLensError as exc:
            raise GradLensError(f"prompt '{item.id}': {exc}") from None
        if on_prompt is not None:
            on_prompt()
    return pd.concat(frames, ignore_index=True)


def fig4_statistic(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer: its normalised index ℓ / (L − 1), the prompts, the share of them where
    rank(∇FF1) = n (the paper's Fig. 4), the share where the target is the top token by
    cosine and by the logit lens at the last position, and the median ranks."""
    n_layers = int(frame["layer"].max()) + 1
    rows = []
    for layer, group in frame.groupby("layer", sort=True):
        rows.append(
            {
                "layer": int(layer),
                "layer_index": layer / max(1, n_layers - 1),
                "prompts": len(group),
                "share_rank_n": float((group["ff1_rank"] == group["n_tokens"]).mean()),
                "share_cosine_top": float((group["cosine_rank"] == 1).mean()),
                "share_lens_top": float((group["lens_rank"] == 1).mean()),
                "median_cosine": float(group["target_cosine"].median()),
                "median_cosine_rank": float(group["cosine_rank"].median()),
                "median_lens_rank": float(group["lens_rank"].median()),
            }
        )
    return pd.DataFrame(rows)


def read_lens_ranks(source: str | Path | io.IOBase, name: str = "") -> pd.DataFrame:
    """A CSV written by ``gradlens lens-ranks`` (a path or an open file); GradLensError naming
    ``name`` (default: the path) when it is not one."""
    name = name or str(source)
    try:
        frame = pd.read_csv(source, dtype={"id": str})
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise GradLensError(f"cannot read {name} as CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise GradLensError(
            f"{name} is not a lens-ranks CSV (missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)})"
        )
    numeric = [c for c in COLUMNS[1:] if not pd.api.types.is_numeric_dtype(frame[c])]
    if numeric or frame.empty or frame[list(COLUMNS)].isna().any().any():
        bad = ", ".join(numeric) if numeric else "empty cells or no rows"
        raise GradLensError(f"{name}: bad values ({bad})")
    return frame[list(COLUMNS)]


def lens_ranks_summary(frame: pd.DataFrame) -> str:
    """One sentence: how often rank(∇FF1) = n (all layers, and before the last), and how often
    the target is the top token at the last layer by cosine and by the logit lens."""
    stat = fig4_statistic(frame)
    last = stat.iloc[-1]
    equal = float((frame["ff1_rank"] == frame["n_tokens"]).mean())
    before_last = frame[frame["layer"] < stat["layer"].max()]
    equal_before = float((before_last["ff1_rank"] == before_last["n_tokens"]).mean())
    return (
        f"{frame['id'].nunique()} prompts x {len(stat)} layers: rank(grad FF1) = n in "
        f"{equal:.1%} of (prompt, layer) pairs ({equal_before:.1%} before the last layer, "
        f"{last.share_rank_n:.1%} in it); at the last layer the target is the top token by "
        f"cosine for {last.share_cosine_top:.1%} of the prompts, in the logit lens for "
        f"{last.share_lens_top:.1%}"
    )


def lens_ranks_text(frame: pd.DataFrame) -> str:
    """The Fig. 4 statistic as a table and the summary (what the command prints)."""
    table = fig4_statistic(frame).to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return f"{table}\n{lens_ranks_summary(frame)}"


def run_lens_ranks(opts: LensRanksOptions) -> pd.DataFrame:
    """``gradlens lens-ranks``: read the prompts, load the model, compute every prompt's rows
    and write them to ``opts.out`` (atomically; progress in ``OUT.progress.json`` meanwhile).
    The frame's ``attrs["seconds"]`` is the time the prompts took."""
    from tqdm.auto import tqdm

    from gradlens.models.loading import load_model

    items = read_lens_prompts(opts.prompts)
    out = Path(opts.out) if opts.out else None
    if out is not None and not out.parent.is_dir():
        raise GradLensError(f"--out: no folder {out.parent}")
    model, tokenizer = load_model(
        opts.model,
        device=opts.device,
        trust_remote_code=opts.trust_remote_code,
        adapter=opts.adapter,
        adapter_merge=opts.adapter is not None,
    )
    reporter = None
    if out is not None:
        reporter = ProgressReporter(progress_path(out), "lens-ranks", 0, len(items))
    t0 = time.perf_counter()
    with (
        tqdm(total=len(items), desc="lens-ranks", unit="prompt", disable=opts.no_progress) as bar,
        reporter.reporting() if reporter else contextlib.nullcontext(),
    ):

        def advance() -> None:
            bar.update()
            if reporter is not None:  # one forward and one backward pass a prompt
                reporter.advance(passes=reporter.done + 1)

        frame = lens_ranks(model, tokenizer, items, advance)
    if out is not None:
        write_atomically(out, [frame.to_csv(index=False, float_format="%.6g")])
        progress_path(out).unlink(missing_ok=True)
    frame.attrs["seconds"] = time.perf_counter() - t0
    return frame
