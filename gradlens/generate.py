"""The model-generated query set: paraphrased prompt + the model's own greedy completion."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gradlens.data import chat_prefix, load_examples
from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.models import load_model


def generate(
    model: str,
    queries_path: str,
    out_path: str,
    max_new_tokens: int = 200,
    device: str = "cpu",
    progress: bool = True,
) -> int:
    """Write ``out_path`` (JSONL: id, prompt, response) with greedy completions of each query's
    prompt. Resumable: finished lines live in ``<out>.partial`` until the last one is written;
    then the whole file is written beside ``out_path`` and renamed into place, so ``out_path``
    never holds a part of the set. Returns the number of examples written."""
    queries = load_examples(queries_path)
    out = Path(out_path)
    partial = out.with_name(out.name + ".partial")
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        done = _read_partial(partial)
        handle = partial.open("a", encoding="utf-8")
    except OSError as exc:
        raise GradLensError(f"cannot write {partial}: {exc.strerror}") from None
    net, tokenizer = load_model(model, device=device)
    fault_point("generate.model")
    dev = next(net.parameters()).device
    with handle, torch.no_grad():
        for q in tqdm(queries, desc="generate", unit="ex", disable=not progress):
            if q.id in done:
                continue
            ids = tokenizer(
                chat_prefix(tokenizer, q.prompt), add_special_tokens=False, return_tensors="pt"
            )["input_ids"].to(dev)
            gen = net.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            text = tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip()
            if not text:
                text = "(no answer)"
            rec = {"id": q.id, "prompt": q.prompt, "response": text}
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
            handle.flush()
            done[q.id] = rec
            fault_point("generate.line")
    tmp = out.with_name(f".{out.name}.tmp")  # a rerun after a kill here overwrites it
    with tmp.open("w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(done[q.id], ensure_ascii=False) + "\n")
    fault_point("generate.out")
    os.replace(tmp, out)
    partial.unlink()
    return len(queries)


def _read_partial(partial: Path) -> dict[str, dict]:
    """The completions a stopped run left in ``partial`` by id. A last line cut short (no
    newline: the process died while writing it) is dropped from the file, to be generated
    again; any other unreadable line is a GradLensError naming it."""
    if not partial.exists():
        return {}
    data = partial.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with partial.open("r+b") as f:
            f.truncate(len(complete))
    done = {}
    for n, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            done[rec["id"]] = rec
        except (ValueError, TypeError, KeyError):
            raise GradLensError(
                f"{partial}:{n}: not a line this command wrote; delete {partial} to start over"
            ) from None
    return done
