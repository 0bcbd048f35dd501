"""The model-generated query set: paraphrased prompt + the model's own greedy completion."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from gradlens.data.examples import chat_prefix, load_examples
from gradlens.data.sources import file_columns
from gradlens.faults import fault_point
from gradlens.files import (
    ProgressReporter,
    append_record,
    finish_jsonl,
    open_partial,
    progress_path,
)
from gradlens.models.loading import load_model
from gradlens.options import GenerateOptions


def generate(opts: GenerateOptions) -> int:
    """Write ``opts.out`` (JSONL: id, prompt, response) with greedy completions of each query's
    prompt by ``opts.model`` (with ``opts.adapter`` merged in, if given). Resumable: finished
    lines live in ``<out>.partial`` until the last one is written; then the whole file is
    written beside ``opts.out`` and renamed into place, so ``opts.out`` never holds a part of
    the set. Progress goes to ``<out>.progress.json`` until then.
    Returns the number of examples written."""
    queries = load_examples(opts.queries, file_columns(opts, "queries"))
    out = Path(opts.out)
    done, handle = open_partial(out)
    net, tokenizer = load_model(
        opts.model, device=opts.device, adapter=opts.adapter, adapter_merge=opts.adapter is not None
    )
    fault_point("generate.model")
    dev = next(net.parameters()).device
    resumed = sum(q.id in done for q in queries)
    reporter = ProgressReporter(progress_path(out), "generate", resumed, len(queries))
    with reporter.reporting(), handle, torch.no_grad():
        for q in tqdm(queries, desc="generate", unit="ex", disable=opts.no_progress):
            if q.id in done:
                continue
            ids = tokenizer(
                chat_prefix(tokenizer, q.prompt, opts.system_prompt),
                add_special_tokens=False,
                return_tensors="pt",
            )["input_ids"].to(dev)
            gen = net.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=opts.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            text = tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True).strip()
            rec = {"id": q.id, "prompt": q.prompt, "response": text or "(no answer)"}
            append_record(handle, rec)
            done[q.id] = rec
            reporter.advance()
            fault_point("generate.line")
    records = (done[q.id] for q in queries)
    finish_jsonl(out, records, before_rename=lambda: fault_point("generate.out"))
    return len(queries)
