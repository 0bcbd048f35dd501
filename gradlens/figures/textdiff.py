"""Word-level differences between two texts, for showing why two examples look alike to BM25
but not to their gradients (``difflib``: no hand-written diff)."""

from __future__ import annotations

import difflib
import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:=])")


def word_diff(a: str, b: str) -> list[tuple[str, str]]:
    """``[(op, text), ...]`` turning a into b word by word; op is ``same``, ``del`` (only in a)
    or ``add`` (only in b). Whitespace is normalised to single spaces."""
    wa, wb = (a or "").split(), (b or "").split()
    out: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=wa, b=wb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.append(("same", " ".join(wa[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", " ".join(wa[i1:i2])))
        if j2 > j1:
            out.append(("add", " ".join(wb[j1:j2])))
    return out


def escape_markdown(text: str) -> str:
    """Backslash-escape every character Markdown (and Streamlit's directives) would interpret,
    so user text shows literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def diff_markdown(a: str, b: str) -> str:
    """The word diff as escaped Markdown: deletions struck through on red, additions on green
    (Streamlit's ``:color-background[...]`` syntax)."""
    parts = []
    for op, text in word_diff(a, b):
        t = escape_markdown(text)
        parts.append(
            t
            if op == "same"
            else f":red-background[~~{t}~~]"
            if op == "del"
            else f":green-background[{t}]"
        )
    return " ".join(parts)
