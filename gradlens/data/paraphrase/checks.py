"""Checking one paraphrase (``check_paraphrase``): a preamble such as "Here is the paraphrase:"
and wrapping quotes are stripped; an empty answer rejects the example (it goes to
``<out stem>.rejects.jsonl``, not into the query set); an answer identical to the original, a
refusal, one cut at the token limit, or one that answers the instruction instead of rephrasing
it is kept with a ``flag`` field saying why."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from gradlens.data.examples import Example


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
