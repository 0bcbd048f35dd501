"""`gradlens.data.paraphrase`: the detector of bad paraphrases (on the demo's hand-written ones: the
six rows marked ``"hard": true`` answer the instruction instead of rephrasing it), the options'
validation, and the retry/backoff logic against a real OpenAI-compatible server
(``transformers serve`` on the bundled SmolLM2) behind a fault-injecting proxy."""

from __future__ import annotations

import json
import re
import socket

import pytest

from gradlens.cli import main
from gradlens.data import paraphrase as pp
from gradlens.data.examples import Example, load_examples
from gradlens.errors import GradLensError
from gradlens.options import ParaphraseOptions, to_argv
from tests.conftest import DEMO
from tests.paraphrase_server import FaultProxy, shared_server

# --------------------------------------------------------------------------------------------
# The detector


def _demo_pairs():
    train = {ex.id: ex for ex in load_examples(DEMO / "train.jsonl")}
    rows = [json.loads(line) for line in (DEMO / "paraphrased.jsonl").read_text().splitlines()]
    return train, rows


def test_the_detector_flags_exactly_the_six_hard_rows_of_the_demo():
    train, rows = _demo_pairs()
    hard = {r["id"] for r in rows if r.get("hard")}
    assert len(hard) == 6
    flags = {}
    for r in rows:
        para = Example(r["id"], r["prompt"], r["response"])
        flag = pp.flag_pair(train[r["id"]], para, ("prompt", "response"))
        if flag:
            flags[r["id"]] = flag
    assert set(flags) == hard
    for flag in flags.values():  # each for the same reason, on the prompt
        assert flag.startswith(f"prompt: {pp.ANSWERS} (")


def test_an_answer_in_place_of_the_request_is_flagged_for_every_demo_example():
    """What a small model does most: answer the question it was asked to rephrase. The first
    sentence of each original answer, given as the paraphrased prompt, is flagged for all 124."""
    train, _ = _demo_pairs()
    missed = []
    for ex in train.values():
        first = re.split(r"(?<=[.!])\s", ex.response)[0]
        check = pp.check_paraphrase("prompt", ex, first)
        if not (check.flag and check.flag.startswith(pp.ANSWERS)) and check.flag != (
            "the original word for word, with additions"
        ):
            missed.append((ex.id, first))
    assert missed == []


EX = Example("x", "How do volcanoes form?", "Magma rises through cracks in the crust and erupts.")


@pytest.mark.parametrize(
    "answer, expected",
    [
        (
            'Here is a paraphrase of the text: "What makes a volcano form?"',
            "What makes a volcano form?",
        ),
        ("Sure! Here's the rewritten request:\nHow are volcanoes made?", "How are volcanoes made?"),
        ("Paraphrased prompt: What creates volcanoes?", "What creates volcanoes?"),
        (
            "<text>\nIn what way do volcanoes come about?\n</text>",
            "In what way do volcanoes come about?",
        ),
        ("“By what process do volcanoes form?”", "By what process do volcanoes form?"),
        # not a preamble: a response may well start like this
        (
            "Here are three reasons: heat, pressure, water.",
            "Here are three reasons: heat, pressure, water.",
        ),
    ],
)
def test_preambles_markers_and_quotes_are_stripped_not_flagged(answer, expected):
    check = pp.check_paraphrase("prompt", EX, answer)
    assert check.text == expected
    if expected.endswith("?"):
        assert check.flag is None and check.reject is None


@pytest.mark.parametrize(
    "field, answer, reason",
    [
        ("prompt", "", "reject:empty answer"),
        ("prompt", "  Here is the paraphrase:  ", "reject:empty answer"),
        ("prompt", "how do volcanoes FORM", "identical to the original"),
        ("prompt", "How do volcanoes form?\n\nThis is a question.", "word for word"),
        ("prompt", "I'm sorry, but I can't help with that.", "a refusal"),
        ("prompt", "Sure, volcanoes form when magma rises.", "opens like a reply"),
        ("prompt", "Volcanoes form where magma reaches the surface.", "a statement, not a request"),
        ("prompt", "The answer to this question is magma?", "gives an answer"),
        ("response", "Paris is the capital of France, a lovely city.", "keeps almost none"),
        ("response", "Magma rises.", None),  # short but faithful: 2 words of 8 is not < 1/3 of 15+
        ("response", "Through cracks in the crust, magma rises and erupts.", None),
    ],
)
def test_empty_answers_are_rejected_and_suspect_ones_flagged(field, answer, reason):
    check = pp.check_paraphrase(field, EX, answer)
    if reason is None:
        assert check.flag is None and check.reject is None
    elif reason.startswith("reject:"):
        assert check.reject == reason.split(":", 1)[1] and check.flag is None
    else:
        assert check.flag and reason in check.flag and check.reject is None


def test_a_truncated_answer_is_flagged_when_nothing_worse_is():
    check = pp.check_paraphrase("prompt", EX, "In what way do volcanoes", truncated=True)
    assert check.flag == "cut at the token limit"


# --------------------------------------------------------------------------------------------
# Options


def _opts(**kw):
    base = dict(train="t.jsonl", out="o.jsonl", endpoint="http://127.0.0.1:8000/v1", model="m")
    return ParaphraseOptions(**(base | kw))


def test_options_round_trip_through_argv_with_a_float_temperature():
    opts = _opts(temperature="0.2", seed=3, field="prompt", api_key_env="MY_KEY")
    assert opts.temperature == 0.2
    argv = to_argv(opts)
    assert argv[argv.index("--temperature") + 1] == "0.2"
    assert "--api-key-env" in argv and "MY_KEY" in argv


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(temperature="hot"), "--temperature: expected a number"),
        (dict(temperature="2.5"), "--temperature must be between 0 and 2"),
        (dict(concurrency=0), "--concurrency must be at least 1"),
        (dict(field="response"), "--field: expected one of"),
        (dict(endpoint="127.0.0.1:8000"), "--endpoint: expected an http(s) URL"),
        (dict(api_key_env="sk-secret123"), "--api-key-env takes the NAME"),
    ],
)
def test_bad_options_are_one_line_errors(kw, message):
    with pytest.raises(GradLensError) as err:
        _opts(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "secret123" not in str(err.value)  # a pasted key is never echoed


def test_the_cli_refuses_a_pasted_key_without_printing_it(capsys):
    argv = ["paraphrase", "--train", str(DEMO / "small" / "train.jsonl"), "--out", "o.jsonl"]
    argv += ["--endpoint", "http://127.0.0.1:9/v1", "--model", "m"]
    assert main([*argv, "--api-key-env", "sk-proj-SECRET"]) == 2
    err = capsys.readouterr().err
    assert "SECRET" not in err and len(err.strip().splitlines()) == 1


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("GRADLENS_TEST_KEY", raising=False)
    with pytest.raises(GradLensError, match="GRADLENS_TEST_KEY is not set"):
        pp.api_key_from_env("GRADLENS_TEST_KEY")
    monkeypatch.setenv("GRADLENS_TEST_KEY", "k-123")
    assert pp.api_key_from_env("GRADLENS_TEST_KEY") == "k-123"
    assert pp.api_key_from_env(None) == "no-key"  # OPENAI_API_KEY is not sent unasked


@pytest.mark.parametrize(
    "given, expected",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://api.example.com/openai/v1", "https://api.example.com/openai/v1"),
    ],
)
def test_endpoints_are_normalised(given, expected):
    assert pp.normalise_endpoint(given) == expected


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    for attempt in range(10):
        full = min(pp.BACKOFF_CAP, pp.BACKOFF_BASE * 2**attempt)
        assert full / 2 <= pp.backoff(attempt) <= full


# --------------------------------------------------------------------------------------------
# Retries against the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    return shared_server(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def proxy(server):
    p = FaultProxy(server[0])
    yield p
    p.close()


def _endpoint(proxy, server, **kw):
    sleeps = []
    kw = dict(retries=3, sleep=sleeps.append, temperature=0.0) | kw
    return pp.Endpoint(proxy.url, server[1], **kw), sleeps


MSG = pp.messages_for("prompt", "Name a colour.")


def test_500s_are_retried_with_exponential_backoff_until_the_server_answers(proxy, server):
    proxy.reset()
    proxy.inject(2, status=500)
    ep, sleeps = _endpoint(proxy, server)
    text, _ = ep.complete(MSG, max_tokens=2)
    assert text.strip()  # the real model's answer
    assert (proxy.failed, proxy.forwarded, ep.tries) == (2, 1, 3)
    assert len(sleeps) == 2
    assert 0.5 * pp.BACKOFF_BASE <= sleeps[0] <= pp.BACKOFF_BASE
    assert pp.BACKOFF_BASE <= sleeps[1] <= 2 * pp.BACKOFF_BASE


def test_429_waits_as_long_as_retry_after_says(proxy, server):
    proxy.reset()
    proxy.inject(1, status=429, retry_after="7")
    ep, sleeps = _endpoint(proxy, server)
    ep.complete(MSG, max_tokens=1)
    assert sleeps == [7.0] and proxy.forwarded == 1


def test_failures_that_outlast_the_retries_are_one_line(proxy, server):
    proxy.reset()
    proxy.inject(10, status=503)
    ep, sleeps = _endpoint(proxy, server, retries=2)
    with pytest.raises(GradLensError) as err:
        ep.complete(MSG, max_tokens=1)
    msg = str(err.value)
    assert "kept failing: HTTP 503 after 3 tries (injected fault)" in msg and "\n" not in msg
    assert len(sleeps) == 2 and proxy.forwarded == 0


@pytest.mark.parametrize("status, words", [(401, "refused no key"), (400, "rejected the request")])
def test_other_http_errors_are_not_retried(proxy, server, status, words):
    proxy.reset()
    proxy.inject(1, status=status)
    ep, sleeps = _endpoint(proxy, server)
    with pytest.raises(GradLensError, match=words):
        ep.complete(MSG, max_tokens=1)
    assert sleeps == [] and proxy.seen == 1


def test_the_real_servers_own_refusal_is_shown(proxy, server):
    """transformers serve pinned to one model refuses another name with HTTP 400."""
    proxy.reset()
    ep = pp.Endpoint(proxy.url, "no-such-model", retries=3, sleep=lambda s: None)
    with pytest.raises(GradLensError) as err:
        ep.complete(MSG, max_tokens=1)
    assert "HTTP 400" in str(err.value) and "no-such-model" in str(err.value)
    assert ep.tries == 1


def test_a_timeout_is_retried(proxy, server):
    proxy.reset()
    with proxy.lock:  # the first request gets no answer within the client's timeout
        proxy.hang, proxy.hang_count = 5.0, 1
    ep, sleeps = _endpoint(proxy, server, timeout=4.0)
    text, _ = ep.complete(MSG, max_tokens=1)
    assert text and len(sleeps) == 1 and (proxy.seen, proxy.forwarded) == (2, 1)


def test_a_server_that_never_answered_fails_at_once_one_that_did_is_waited_for(server):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = []
    ep = pp.Endpoint(f"http://127.0.0.1:{port}/v1", "m", retries=3, sleep=sleeps.append)
    with pytest.raises(GradLensError) as err:
        ep.complete(MSG, max_tokens=1)
    msg = str(err.value)
    assert msg.startswith(f"cannot reach http://127.0.0.1:{port}/v1 (connection refused, 1 try)")
    assert sleeps == []
    ep.reached = True  # as after a first answer: a restart is waited for, then given up on
    with pytest.raises(GradLensError, match="4 tries"):
        ep.complete(MSG, max_tokens=1)
    assert len(sleeps) == 3
