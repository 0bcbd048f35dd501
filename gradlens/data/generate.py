"""The model-generated query set: paraphrased prompt + the model's own greedy completion."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gradlens.data.examples import chat_prefix, load_examples
from gradlens.errors import GradLensError
from gradlens.faults import fault_point
from gradlens.data.files import read_partial, write_atomically
from gradlens.models.loading import load_model


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
        done = read_partial(partial)
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
    records = (done[q.id] for q in queries)
    write_atomically(out, records, before_rename=lambda: fault_point("generate.out"))
    partial.unlink()
    return len(queries)
