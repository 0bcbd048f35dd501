"""The resumable paraphrase job: each training example's prompt (and, with
``field="prompt+response"``, its response) is sent to the endpoint with an instruction that keeps
the task and the facts and changes the wording, and the answers are written as a query file in
the data format, with the original ids, so ``gradlens compute --queries`` takes it as it is.

``concurrency`` requests are in flight (threads; the file is written by one thread). Finished
examples are appended to ``<out>.partial`` and flushed, so a rerun after a crash, a kill or a
server that went away continues where it stopped; the complete file is written beside ``out``
and renamed into place. Progress goes to ``<out>.progress.json`` while the job runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from gradlens.data.examples import Example, load_examples
from gradlens.data.paraphrase.checks import check_paraphrase
from gradlens.data.paraphrase.endpoint import Endpoint, api_key_from_env
from gradlens.data.sources import file_columns
from gradlens.errors import GradLensError
from gradlens.files import (
    ProgressReporter,
    append_record,
    finish_jsonl,
    open_partial,
    progress_path,
    write_jsonl,
)
from gradlens.options import ParaphraseOptions

SYSTEM = (
    "You are a paraphrasing tool that builds a dataset. You receive one text between <text> and "
    "</text>. Write the same text again in different words: change the vocabulary and the "
    "sentence structure, but keep its meaning, its task, every fact, number, name, code snippet "
    "and quotation, its language and roughly its length. If the text is a question or an "
    "instruction, write the same question or instruction in other words: never answer it, never "
    "carry it out, never add anything to it. Reply with the rewritten text only, without a "
    "preamble, quotes or comments."
)
USER = {
    "prompt": "Rephrase this request from a user. Do not answer it or carry it out.\n"
    "<text>\n{text}\n</text>",
    "response": "Rephrase this answer. Keep every fact and step.\n<text>\n{text}\n</text>",
}


def messages_for(field: str, text: str) -> list[dict]:
    """The chat messages asking for a paraphrase of ``text`` (``field``: prompt or response)."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER[field].format(text=text)},
    ]


def token_limit(text: str, max_tokens: int) -> int:
    """``max_tokens``, or (0) one and a half times the text's length in tokens, estimated as
    characters / 4, plus 16: room for a rewording, not for an essay (a small model that
    answers instead of rephrasing goes on until the limit)."""
    return max_tokens if max_tokens > 0 else 3 * (len(text) // 4 + 1) // 2 + 16


@dataclass(frozen=True)
class ParaphraseSummary:
    """What a run wrote: ``examples`` in the training set, ``written`` into ``out`` (flagged ones
    included), ``flagged``, ``rejected`` (in ``rejects``), ``requests`` sent by this process
    (retries included), ``resumed`` (taken from the partial file), ``seconds``."""

    out: str
    rejects: str | None
    examples: int
    written: int
    flagged: int
    rejected: int
    resumed: int
    requests: int
    seconds: float

    def line(self) -> str:
        text = (
            f"wrote {self.written} paraphrases to {self.out}: {self.flagged} flagged, "
            f"{self.rejected} rejected"
        )
        if self.rejects:
            text += f" (in {self.rejects})"
        return text + f"; {self.requests} requests, {self.resumed} resumed, {self.seconds:.0f} s"


def rejects_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.rejects.jsonl")


def paraphrase_example(
    endpoint: Endpoint, example: Example, fields: tuple[str, ...], max_tokens: int = 0
) -> dict:
    """One example's record: ``{id, prompt, response[, flag]}`` (a field not in ``fields`` keeps
    the original), or ``{id, rejected, field, answer}`` when an answer is empty."""
    rec: dict = {"id": example.id, "prompt": example.prompt, "response": example.response}
    flags = []
    for field in fields:
        source = getattr(example, field)
        answer, truncated = endpoint.complete(
            messages_for(field, source), token_limit(source, max_tokens)
        )
        check = check_paraphrase(field, example, answer, truncated)
        if check.reject:
            return {"id": example.id, "rejected": f"{field}: {check.reject}", "answer": answer}
        rec[field] = check.text
        if check.flag:
            flags.append(f"{field}: {check.flag}")
    if flags:
        rec["flag"] = "; ".join(flags)
    return rec


def paraphrase(opts: ParaphraseOptions) -> ParaphraseSummary:
    """Write ``opts.out``: one paraphrase per example of ``opts.train`` (JSONL, original ids and
    order; flagged ones carry ``flag``); empty answers go to ``<out stem>.rejects.jsonl``.
    Resumable through ``<out>.partial``; progress in ``<out>.progress.json`` until the set is
    written. Errors (unreachable endpoint, a refused request, HTTP errors that outlast the
    retries) are one-line GradLensErrors; what was finished stays in the partial file."""
    started = time.monotonic()
    examples = load_examples(opts.train, file_columns(opts, "train"), row_ids=True)
    out = Path(opts.out)
    if out.resolve() == Path(opts.train).resolve():
        raise GradLensError(f"--out {out} is the training set itself; name another file")
    key = api_key_from_env(opts.api_key_env)
    client = Endpoint(
        opts.endpoint,
        opts.model,
        key,
        api_key_env=opts.api_key_env,
        temperature=opts.temperature,
        seed=opts.seed,
        timeout=opts.timeout,
        retries=opts.retries,
    )
    try:
        done, handle = open_partial(out)
    except GradLensError:
        client.close()
        raise
    ids = {ex.id for ex in examples}
    done = {k: v for k, v in done.items() if k in ids}
    resumed = len(done)
    reporter = ProgressReporter(progress_path(out), "paraphrase", resumed, len(examples))
    with reporter.reporting(), handle:
        _answer_all(client, examples, done, handle, opts, reporter)
    return _finish(examples, done, out, resumed, client.tries, started)


def _answer_all(
    client: Endpoint,
    examples: list[Example],
    done: dict[str, dict],
    handle: IO[str],
    opts: ParaphraseOptions,
    reporter: ProgressReporter,
) -> None:
    """Paraphrase every example not in ``done`` into it and the partial file ``handle``;
    the first error a worker raised goes on once the requests in flight have finished."""
    fields = ("prompt", "response") if opts.field == "prompt+response" else ("prompt",)
    todo = [ex for ex in examples if ex.id not in done]
    bar = tqdm(
        total=len(examples),
        initial=len(done),
        desc="paraphrase",
        unit="ex",
        disable=opts.no_progress,
    )
    error: BaseException | None = None
    try:
        for rec in _run_pool(client, todo, fields, opts.max_tokens, opts.concurrency):
            if isinstance(rec, BaseException):
                error = error or rec  # the first; the requests in flight still finish
                continue
            append_record(handle, rec)
            done[rec["id"]] = rec
            bar.update(1)
            reporter.advance()
    finally:
        bar.close()
        client.close()
    if error is not None:
        raise error


def _run_pool(
    client: Endpoint,
    todo: list[Example],
    fields: tuple[str, ...],
    max_tokens: int,
    concurrency: int,
) -> Iterator[dict | BaseException]:
    """Each example's record (or the exception it raised) as it finishes, from ``concurrency``
    worker threads. After an exception no new example is started; those in flight finish.
    The workers are daemon threads: on Ctrl-C the caller's KeyboardInterrupt ends the process
    at once instead of waiting for answers nobody will write (their examples are redone by
    the rerun)."""
    work: queue.SimpleQueue[Example] = queue.SimpleQueue()
    for ex in todo:
        work.put(ex)
    results: queue.SimpleQueue[dict | BaseException] = queue.SimpleQueue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                ex = work.get_nowait()
            except queue.Empty:
                return
            try:
                results.put(paraphrase_example(client, ex, fields, max_tokens))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                stop.set()
                results.put(exc)

    threads = [
        threading.Thread(target=worker, name=f"paraphrase-{i}", daemon=True)
        for i in range(min(concurrency, len(todo)))
    ]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                yield results.get(timeout=0.2)
            except queue.Empty:
                if not any(t.is_alive() for t in threads) and results.empty():
                    return
    finally:
        stop.set()


def _finish(
    examples: list[Example],
    done: dict[str, dict],
    out: Path,
    resumed: int,
    requests: int,
    started: float,
) -> ParaphraseSummary:
    """Write the query set (training order) and the rejects, atomically; remove the partial."""
    kept = [done[ex.id] for ex in examples if "rejected" not in done[ex.id]]
    rejected = [done[ex.id] for ex in examples if "rejected" in done[ex.id]]
    rejects = rejects_path(out)
    try:
        if rejected:
            write_jsonl(rejects, rejected)
        elif rejects.exists():
            rejects.unlink()  # from an earlier run of the same command
        finish_jsonl(out, kept)
    except OSError as exc:
        raise GradLensError(f"cannot write {out}: {exc.strerror}") from None
    return ParaphraseSummary(
        out=str(out),
        rejects=str(rejects) if rejected else None,
        examples=len(examples),
        written=len(kept),
        flagged=sum(1 for r in kept if r.get("flag")),
        rejected=len(rejected),
        resumed=resumed,
        requests=requests,
        seconds=time.monotonic() - started,
    )
