"""The token formatter: ids decoded one by one as the tokenizer decodes them alone, and one glyph
table for whitespace in every table and figure."""

from __future__ import annotations

from gradlens.figures.lenses import token_label
from gradlens.models.tokens import (
    WHITESPACE_GLYPHS,
    decode_each,
    show_newlines,
    show_whitespace,
    visible,
)


def test_decode_each_decodes_every_id_alone(tokenizer) -> None:
    ids = tokenizer("Hello  world,\n\tHello again <|im_end|>")["input_ids"]
    want = [
        tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        for i in ids
    ]
    assert decode_each(tokenizer, ids) == want
    assert decode_each(tokenizer, []) == []


def test_one_glyph_table_everywhere() -> None:
    text = " a\nb\tc\r"
    shown = "".join(WHITESPACE_GLYPHS.get(c, c) for c in text)
    assert show_whitespace(text) == visible(text) == shown == "␣a⏎b⇥c␍"
    assert token_label(text, width=20) == shown
    assert show_newlines(text) == " a⏎b\tc\r"
    assert token_label(text, width=20, spaces=False) == " a⏎b\tc\r"
    assert show_whitespace("") == "∅" and visible("") == "(partial)"
