"""The paraphrased query set for any training set, through any OpenAI-compatible chat endpoint
(a local server such as ``transformers serve``, or a hosted API).

Each training example's prompt (and, with ``field="prompt+response"``, its response) is sent to
the endpoint with an instruction that keeps the task and the facts and changes the wording. The
answers are written as a query file in the data format, with the original ids, so
``gradlens compute --queries`` takes it as it is.

Robustness: ``concurrency`` requests in flight (threads; the file is written by one thread);
every request retried with exponential backoff (``Retry-After`` honoured) on 408/409/429/5xx,
timeouts and lost connections; any other HTTP error stops the run with one line. Finished
examples are appended to ``<out>.partial`` and flushed, so a rerun after a crash, a kill or a
server that went away continues where it stopped; the complete file is written beside ``out``
and renamed into place.

Checks (``check_paraphrase``): a preamble such as "Here is the paraphrase:" and wrapping quotes
are stripped; an empty answer rejects the example (it goes to ``<out stem>.rejects.jsonl``, not
into the query set); an answer identical to the original, a refusal, one cut at the token limit,
or one that answers the instruction instead of rephrasing it is kept with a ``flag`` field saying
why. The API key is read from the environment variable the caller names, and is never an
argument, a log line or a file.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm

from gradlens.data.examples import Example, load_examples
from gradlens.errors import GradLensError
from gradlens.data.files import read_partial, write_atomically

FIELDS = ("prompt", "prompt+response")

#: Backoff of the n-th retry (0-based): ``min(BACKOFF_CAP, BACKOFF_BASE * 2**n)`` seconds, times a
#: random factor in [0.5, 1] (so that concurrent requests do not retry in lockstep).
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0

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


# --------------------------------------------------------------------------------------------
# Checking one answer


@dataclass(frozen=True)
class Check:
    """The verdict on one answer: ``text`` (cleaned), ``flag`` (why it is suspect, kept) or
    ``reject`` (why it cannot be used, not kept); at most one of the two is set."""

    text: str
    flag: str | None = None
    reject: str | None = None


ANSWERS = "answers the instruction instead of rephrasing it"

_REWORD = r"(?:paraphras|rewrit|reword|rephras|restat|revis|version|other\ words|different\ words)"
_PREAMBLE = re.compile(
    rf"""^\s*
    (?:(?:sure|certainly|of\ course|okay|ok|absolutely|alright)\b[\s!,.]*)?
    (?:
      (?:here(?:'s|\ is|\ are|\ it\ is)|below\ is|this\ is)[^:\n]{{0,60}}?{_REWORD}[^:\n]{{0,40}}:
    | (?:the\s+)?(?:paraphras\w*|rewritten|rewrite|reworded|rephrased|revised)
        (?:\s+[\w'-]+){{0,3}}?\s*:
    )\s*""",
    re.I | re.X,
)
_MARKERS = re.compile(r"</?text>", re.I)
_QUOTES = (('"', '"'), ("'", "'"), ("“", "”"), ("«", "»"), ("`", "`"))
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i cannot|i can'?t|i can not|i'?m unable|i am unable|"
    r"i won'?t|i'?m not able|i am not able|as an ai\b|as a language model|unfortunately,? i\b)",
    re.I,
)
_REPLY_OPENING = re.compile(
    r"^\W*(?:sure|certainly|of course|absolutely|great question|good question|the answer is|"
    r"answer\s*:|thank you for|thanks for|i'?d be happy|i would be happy|i'?m happy to)\b",
    re.I,
)
_REQUEST_PHRASE = re.compile(
    r"\b(?:please|kindly|could you|can you|would you|will you|i'?d like|i would like|i want|"
    r"i need|help me|tell me|show me|give me|let me know|i'?m looking for|i am looking for)\b",
    re.I,
)
#: Words a question starts with.
_QUESTION_WORDS = frozenset(
    "what how why when where which who whom whose is are was were am do does did can could "
    "would should will shall may might must have has had isn't aren't doesn't don't didn't "
    "can't won't wouldn't shouldn't".split()
)
#: Verbs an instruction starts with (imperatives; checked at the start of every clause).
_IMPERATIVES = frozenset(
    """
    add adapt analyse analyze answer apply approximate arrange assess assume brainstorm build
    calculate change check choose classify clarify come compare compile complete compose compute
    condense consider construct continue contrast convert correct count craft create debug decide
    define demonstrate derive describe design detail determine develop devise discuss draft draw
    edit elaborate enumerate estimate evaluate examine expand explain express extract factor fill
    find finish fix format formulate generate get give go guess help highlight identify illustrate
    imagine implement improve include indicate interpret invent justify label let list locate look
    make map match mention modify name note offer order organise organize outline paraphrase pick
    plan point predict prepare present produce propose prove provide put rank rate read recommend
    reduce refactor reformulate rephrase reply represent respond restate return review revise
    rewrite say select separate share show simplify sketch solve sort specify spell split state
    suggest summarise summarize supply tell think transform translate try turn use verify walk
    work write
    """.split()
)
_STOP = frozenset(
    """
    a an the of to in on and or is are was were be been being it its this that these those for
    with as by at from into than then so such can could would should will do does did how what
    why which who whom when where there their they them you your i me my we our us he she his her
    not no if but about up down out over please following
    """.split()
)


def clean(text: str) -> str:
    """Strip a preamble ("Here is the paraphrase:", "Sure! Rewritten text:"), echoed ``<text>``
    markers and quotes around the whole answer."""
    text = _MARKERS.sub("", text or "").strip()
    for _ in range(2):  # "Sure! Here is the rewritten request: Paraphrase: ..."
        stripped = _PREAMBLE.sub("", text, count=1).strip()
        if stripped == text:
            break
        text = stripped  # empty when the answer was a preamble and nothing else
    for left, right in _QUOTES:
        inner = text[len(left) : -len(right)]
        if len(text) > 2 and text.startswith(left) and text.endswith(right):
            if left not in inner and right not in inner:
                text = inner.strip()
                break
    return text


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _stems(text: str) -> set[str]:
    """Content words cut to 5 letters (a crude stem: alphabetical/alphabetically match)."""
    return {w[:5] for w in _tokens(text) if w not in _STOP and len(w) > 1}


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _shared(part: str, whole: str) -> float:
    """The fraction of ``part``'s word trigrams (bigrams for fewer than 6 words) that occur in
    ``whole``: 1.0 when ``part`` is copied out of ``whole``."""
    words = _tokens(part)
    n = 3 if len(words) >= 6 else 2
    grams = _ngrams(words, n)
    if not grams:
        return 0.0
    return len(grams & _ngrams(_tokens(whole), n)) / len(grams)


def _normal(text: str) -> str:
    return " ".join(_tokens(text))


def _clauses(text: str) -> list[str]:
    return [c for c in re.split(r"[.,;:!?\n(]+", text) if c.strip()]


def is_request(text: str, question_mark: bool = True) -> bool:
    """Whether ``text`` reads as a question or an instruction: a question mark (when
    ``question_mark``), a question word first, an imperative verb at the start of a clause
    ("In one sentence, explain ..."), or a request phrase ("could you", "I need")."""
    if question_mark and "?" in text:
        return True
    words = _tokens(text)
    if words and (words[0] in _QUESTION_WORDS or words[0] in _IMPERATIVES):
        return True
    for clause in _clauses(text):
        first = _tokens(clause)[:1]
        if first and first[0] in _IMPERATIVES:
            return True
    return bool(_REQUEST_PHRASE.search(text))


def _instruction_head(prompt: str) -> str | None:
    """The instruction of a prompt shaped "<instruction>: <material>" ("Translate into French:
    Good morning"), else None."""
    m = re.match(r"^\s*([^:\n]{3,120}?):\s*\S", prompt)
    if not m or len(_tokens(m.group(1))) > 15 or not is_request(m.group(1)):
        return None
    return m.group(1)


_ANSWER_PHRASE = re.compile(
    r"\b(?:the answer (?:to (?:this|the|your) question )?is|the solution is|"
    r"to answer (?:this|the|your) question|in conclusion)\b",
    re.I,
)


def _answers_instead(original: Example, text: str, complete: bool = True) -> str | None:
    """Why a paraphrased prompt looks like an answer to the original prompt (None when it reads
    as a rephrased request). Text cut at the token limit (not ``complete``) may have lost its
    question mark: it is not called a statement for want of one."""
    from_answer = _shared(text, original.response)
    if from_answer >= 0.4 and from_answer >= _shared(text, original.prompt) + 0.15:
        return "repeats the original's answer"
    if _ANSWER_PHRASE.search(text) and not _ANSWER_PHRASE.search(original.prompt):
        return "gives an answer"
    head = _instruction_head(original.prompt)
    if (
        head is not None
        and not (_stems(head) & _stems(text))
        and not is_request(text, question_mark=False)
    ):
        return "the instruction is gone"
    if complete and is_request(original.prompt) and not is_request(text):
        return "a statement, not a request"
    if len(_tokens(text)) > 3 * len(_tokens(original.prompt)) + 10:
        return "much longer than the request"
    return None


def check_paraphrase(
    field: str, original: Example, answer: str | None, truncated: bool = False
) -> Check:
    """Clean the endpoint's ``answer`` for ``field`` ("prompt" or "response") of ``original`` and
    judge it. Rejected: empty. Flagged (kept): identical to the original, the original word for
    word with more after it, a refusal, opening like a reply, cut at the token limit; for a
    prompt, answering it instead of rephrasing it (copying the original's answer, "the answer
    is", dropping an "<instruction>:" head, a statement where the original asks, or far longer
    than the request); for a response, keeping almost none of the original's words, or far
    longer or shorter than it."""
    source = getattr(original, field)
    text = clean(answer or "")
    if not text:
        return Check("", reject="empty answer")

    def flag(why: str) -> Check:
        return Check(text, flag=why)

    if _normal(text) == _normal(source):
        return flag("identical to the original")
    if _REFUSAL.match(text) and not _REFUSAL.match(source):
        return flag("a refusal")
    if _REPLY_OPENING.match(text) and not _REPLY_OPENING.match(source):
        return flag(f"{ANSWERS} (opens like a reply)")
    if _normal(source) in _normal(text):
        return flag("the original word for word, with additions")
    if field == "prompt":
        why = _answers_instead(original, text, complete=not truncated)
        if why:
            return flag(f"{ANSWERS} ({why})")
    else:
        kept = _stems(source)
        n, m = len(_tokens(text)), len(_tokens(source))
        if n > 3 * m + 10:
            return flag("much longer than the original")
        # an answer cut at the token limit is short and lacks the end's words for that reason
        if not truncated and len(kept) >= 5 and len(kept & _stems(text)) / len(kept) < 0.1:
            return flag("keeps almost none of the original's words")
        if not truncated and m >= 15 and 3 * n < m:
            return flag("much shorter than the original")
    if truncated:
        return flag("cut at the token limit")
    return Check(text)


def flag_pair(original: Example, paraphrase: Example, fields: Iterable[str]) -> str | None:
    """The flag ``check_paraphrase`` gives an existing paraphrase of ``original`` (the fields'
    reasons joined by "; "), or None."""
    reasons = []
    for f in fields:
        check = check_paraphrase(f, original, getattr(paraphrase, f))
        why = check.flag or check.reject
        if why:
            reasons.append(f"{f}: {why}")
    return "; ".join(reasons) or None


# --------------------------------------------------------------------------------------------
# The endpoint


def normalise_endpoint(endpoint: str) -> str:
    """``http(s)://host[:port]/path`` without a trailing slash; a bare host gets ``/v1`` (where
    every OpenAI-compatible server answers). GradLensError for anything else."""
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise GradLensError(
            f"--endpoint: expected an http(s) URL such as http://127.0.0.1:8000/v1, got "
            f"'{_redact(endpoint)}'"
        )
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _redact(url: str) -> str:
    """A URL without the user:password part it may carry."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def api_key_from_env(var: str | None) -> str:
    """The key in environment variable ``var``; a placeholder without ``var`` (local servers
    want none, and ``OPENAI_API_KEY`` is not sent to an endpoint nobody named it for)."""
    if var is None:
        return "no-key"
    key = os.environ.get(var, "").strip()
    if not key:
        raise GradLensError(f"--api-key-env {var}: the environment variable {var} is not set")
    return key


def _detail(exc: Exception) -> str:
    """The server's own message from an API error, on one line and short."""
    body = getattr(exc, "body", None)
    text = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
        text = text or body.get("detail")
    if not text:
        text = getattr(exc, "message", None) or str(exc)
    text = " ".join(str(text).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return min(BACKOFF_CAP, max(0.0, float(value) / scale))
        except ValueError:
            continue
    return None


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential, capped, jittered."""
    return min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt) * (0.5 + random.random() / 2)


class Endpoint:
    """One OpenAI-compatible chat endpoint, with retries.

    ``complete(messages, max_tokens)`` -> (text, truncated). Retries (up to ``retries`` times)
    on 408/409/429/5xx, timeouts and lost connections, waiting ``backoff(n)`` or the server's
    ``Retry-After``; any other error, or the last failure, is a one-line GradLensError. A
    connection refused before the server ever answered is not retried (the server is down or
    ``--endpoint`` is wrong: the user hears it at once). The openai client's own retries are
    off (these are counted and testable: ``sleep``, ``tries``, ``waits``).
    """

    RETRY_STATUS = frozenset({408, 409, 429})

    def __init__(
        self,
        endpoint: str,
        model: str,
        api_key: str = "no-key",
        *,
        api_key_env: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        timeout: float = 600.0,
        retries: int = 6,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        import openai

        self.url = normalise_endpoint(endpoint)
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.seed = seed
        self.timeout = timeout
        self.retries = retries
        self._closed = threading.Event()
        self.sleep = sleep or self._closed.wait  # a backoff ends early when the run stops
        self.tries = 0  # requests sent, retries included
        self.reached = False  # the server has answered (anything) once
        self.waits: list[float] = []  # every backoff slept
        self._lock = threading.Lock()
        self._client = openai.OpenAI(
            base_url=self.url, api_key=api_key, max_retries=0, timeout=timeout
        )

    def close(self) -> None:
        """Stop: no more retries, backoffs end, the connection pool is closed."""
        self._closed.set()
        self._client.close()

    def _error(self, exc: Exception, count: int) -> GradLensError:
        import openai

        where = _redact(self.url)
        tries = f"{count} {'try' if count == 1 else 'tries'}"
        if isinstance(exc, openai.APITimeoutError):
            return GradLensError(
                f"{where} did not answer within {self.timeout:g} s ({tries}); raise "
                "--timeout or lower --concurrency"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            reason = str(cause).split("] ", 1)[-1] if str(cause) else type(cause).__name__
            reason = " ".join(reason.split()).lower() or "connection failed"
            return GradLensError(
                f"cannot reach {where} ({reason}, {tries}): is the server running and "
                "is --endpoint right?"
            )
        status = getattr(exc, "status_code", None)
        detail = _detail(exc)
        if status in (401, 403):
            how = (
                f"the key in ${self.api_key_env}"
                if self.api_key_env
                else "no key (pass --api-key-env VAR, VAR holding the key)"
            )
            return GradLensError(f"{where} refused {how}: HTTP {status} ({detail})")
        if status == 404:
            return GradLensError(
                f"{where}: HTTP 404 ({detail}); check --endpoint (usually ending in /v1) and "
                f"--model '{self.model}'"
            )
        if status in self.RETRY_STATUS or (status or 0) >= 500:
            return GradLensError(f"{where} kept failing: HTTP {status} after {tries} ({detail})")
        return GradLensError(f"{where} rejected the request: HTTP {status} ({detail})")

    def _retryable(self, exc: Exception) -> bool:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return True
        if isinstance(exc, openai.APIConnectionError):
            # a server that never answered is down or misnamed: say so at once; one that
            # answered before went away for a moment (a restart): wait for it
            return self.reached
        status = getattr(exc, "status_code", None)
        return status in self.RETRY_STATUS or (status or 0) >= 500

    def complete(self, messages: list[dict], max_tokens: int) -> tuple[str, bool]:
        """The endpoint's answer to ``messages`` and whether it stopped at ``max_tokens``."""
        import openai

        extra = {}
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        if self.seed is not None:
            extra["seed"] = self.seed
        attempt = 0
        while True:
            with self._lock:
                self.tries += 1
            try:
                reply = self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, **extra
                )
                self.reached = True
                break
            except openai.OpenAIError as exc:
                if isinstance(exc, openai.APIStatusError):
                    self.reached = True
                if self._closed.is_set():
                    raise GradLensError("stopped") from None
                if not self._retryable(exc) or attempt >= self.retries:
                    raise self._error(exc, attempt + 1) from None
                delay = _retry_after(exc)
                delay = backoff(attempt) if delay is None else delay
                with self._lock:
                    self.waits.append(delay)
                self.sleep(delay)
                attempt += 1
        if not reply.choices:
            return "", False
        choice = reply.choices[0]
        return choice.message.content or "", choice.finish_reason == "length"


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


# --------------------------------------------------------------------------------------------
# The run


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


def paraphrase(
    train_path: str,
    out_path: str,
    endpoint: str,
    model: str,
    *,
    api_key_env: str | None = None,
    field: str = "prompt+response",
    concurrency: int = 4,
    temperature: float | None = 0.7,
    seed: int | None = None,
    max_tokens: int = 0,
    retries: int = 6,
    timeout: float = 600.0,
    progress: bool = True,
    sleep: Callable[[float], object] | None = None,
) -> ParaphraseSummary:
    """Write ``out_path``: one paraphrase per example of ``train_path`` (JSONL, original ids and
    order; flagged ones carry ``flag``); empty answers go to ``<out stem>.rejects.jsonl``.
    Resumable through ``<out>.partial``. Errors (unreachable endpoint, a refused request, HTTP
    errors that outlast the retries) are one-line GradLensErrors; what was finished stays in the
    partial file."""
    if field not in FIELDS:
        raise GradLensError(f"--field: expected one of {', '.join(FIELDS)}, got '{field}'")
    started = time.monotonic()
    examples = load_examples(train_path)
    fields = ("prompt", "response") if field == "prompt+response" else ("prompt",)
    out = Path(out_path)
    if out.resolve() == Path(train_path).resolve():
        raise GradLensError(f"--out {out} is the training set itself; name another file")
    partial = out.with_name(out.name + ".partial")
    key = api_key_from_env(api_key_env)
    client = Endpoint(
        endpoint,
        model,
        key,
        api_key_env=api_key_env,
        temperature=temperature,
        seed=seed,
        timeout=timeout,
        retries=retries,
        sleep=sleep,
    )
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        done = read_partial(partial)
        handle = partial.open("a", encoding="utf-8")
    except OSError as exc:
        client.close()
        raise GradLensError(f"cannot write {partial}: {exc.strerror}") from None
    ids = {ex.id for ex in examples}
    done = {k: v for k, v in done.items() if k in ids}
    resumed = len(done)
    todo = [ex for ex in examples if ex.id not in done]
    bar = tqdm(
        total=len(examples), initial=resumed, desc="paraphrase", unit="ex", disable=not progress
    )
    error: BaseException | None = None
    try:
        with handle:
            for rec in _run_pool(client, todo, fields, max_tokens, concurrency):
                if isinstance(rec, BaseException):
                    error = error or rec  # the first; the requests in flight still finish
                    continue
                handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
                handle.flush()
                done[rec["id"]] = rec
                bar.update(1)
    finally:
        bar.close()
        client.close()
    if error is not None:
        raise error
    return _finish(examples, done, out, partial, resumed, client.tries, started)


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
    partial: Path,
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
            write_atomically(rejects, rejected)
        elif rejects.exists():
            rejects.unlink()  # from an earlier run of the same command
        write_atomically(out, kept)
        partial.unlink()
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
