"""The one token formatter: token ids decoded (each alone, or as the pieces of a text) and
whitespace made visible with one glyph table, for every table, figure and page."""

from __future__ import annotations

from collections.abc import Sequence

#: How whitespace shows in a token: ``␣`` space, ``⏎`` newline, ``⇥`` tab, ``␍`` carriage return.
WHITESPACE_GLYPHS: dict[str, str] = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}
#: What an empty token shows as.
EMPTY_TOKEN = "∅"
#: What a piece that only starts a multi-byte character shows as (``token_pieces`` gives it "").
PARTIAL_PIECE = "(partial)"

_GLYPHS = str.maketrans(WHITESPACE_GLYPHS)


def decode(tokenizer, ids: Sequence[int]) -> str:
    """``tokenizer.decode`` keeping special tokens and spaces exactly."""
    return tokenizer.decode(
        [int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def decode_each(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each id decoded alone (as ``decode``; leading spaces kept), repeated ids decoded once."""
    cache: dict[int, str] = {}
    out = []
    for i in ids:
        i = int(i)
        if i not in cache:
            cache[i] = decode(tokenizer, [i])
        out.append(cache[i])
    return out


def token_pieces(tokenizer, ids: Sequence[int]) -> list[str]:
    """The text each token adds, such that ``"".join(pieces)`` equals ``decode(ids)`` (special
    tokens kept, spaces not cleaned up) for byte-level and SentencePiece tokenizers.

    Decoded incrementally, as text generation servers stream tokens: a token that ends inside a
    multi-byte character adds "" (its bytes show with the token that completes the character);
    each step decodes a window that starts one token back, so leading-space rules stay right."""
    ids = [int(i) for i in ids]
    pieces = _incremental(tokenizer, ids, window=True)
    if "".join(pieces) != decode(tokenizer, ids):  # decode not local: whole prefixes (slower)
        pieces = _incremental(tokenizer, ids, window=False)
    return pieces


def _incremental(tokenizer, ids: list[int], window: bool) -> list[str]:
    """``token_pieces`` by decoding, per token, from the previous complete piece's start
    (``window``) or from the text's start."""
    pieces: list[str] = []
    prefix, read = 0, 0
    for i in range(len(ids)):
        before = decode(tokenizer, ids[prefix:read])
        text = decode(tokenizer, ids[prefix : i + 1])
        last = i == len(ids) - 1
        if text.startswith(before) and (last or not text.endswith("\ufffd")):
            pieces.append(text[len(before) :])
            prefix, read = (read if window else 0), i + 1
        else:
            pieces.append("")
    return pieces


def show_whitespace(token: str) -> str:
    """``token`` with whitespace made visible (``WHITESPACE_GLYPHS``), ``∅`` for an empty
    string: for tables, where a token of newlines and blanks would otherwise show as nothing."""
    return token.translate(_GLYPHS) if token else EMPTY_TOKEN


def show_newlines(text: str) -> str:
    """``text`` with only its newlines made visible (blanks stay blanks: for whole prompts)."""
    return text.replace("\n", WHITESPACE_GLYPHS["\n"])


def visible(piece: str) -> str:
    """A piece of ``token_pieces`` with whitespace made visible; ``(partial)`` for a token that
    only starts a multi-byte character."""
    return show_whitespace(piece) if piece else PARTIAL_PIECE
