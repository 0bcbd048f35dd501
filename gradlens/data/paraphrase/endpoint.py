"""One OpenAI-compatible chat endpoint (a local server such as ``transformers serve``, or a
hosted API), with retries: exponential backoff (``Retry-After`` honoured) on 408/409/429/5xx,
timeouts and lost connections; any other HTTP error is one line. The API key is read from the
environment variable the caller names, and is never an argument, a log line or a file."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from gradlens.errors import GradLensError

#: Backoff of the n-th retry (0-based): ``min(BACKOFF_CAP, BACKOFF_BASE * 2**n)`` seconds, times a
#: random factor in [0.5, 1] (so that concurrent requests do not retry in lockstep).
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


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
