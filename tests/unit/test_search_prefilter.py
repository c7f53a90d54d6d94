"""The search shortcuts never drop a matching line (property tests against the plain rule)."""

from __future__ import annotations

import re

import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

from actors.workspace.search import (
    BadPattern,
    _matching_lines,
    _whole_text_prefilter_ok,
    compile_matcher,
    required_literals,
)

ATOMS = ["a", "b", "ab", "é", r"\d", r"\w", ".", "[ab]", "x", " ", r"\s", "(?:a|b)", "a|b", "ab|xé", "^", "$",
         r"\b", "(?i)a", r"(?<!a)b", r"\n", "ü"]
QUANT = ["", "", "", "*", "+", "?", "{2}"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(st.sampled_from(ATOMS), st.sampled_from(QUANT)), min_size=1, max_size=5))
    pattern = "".join(atom + (q if not atom.startswith(("^", "$", "(?i)", r"\b", "(?<")) else "")
                      for atom, q in parts)
    try:
        re.compile(pattern)
    except re.error:
        return "ab"
    return pattern


texts = st.text(alphabet="abxé ü1\n\r\t", max_size=60)


def plain_matching_lines(pattern: str, text: str) -> list[tuple[int, str]]:
    rx = re.compile(pattern)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return [(n, line) for n, line in enumerate(lines, start=1) if rx.search(line)]


@settings(max_examples=400, deadline=None)
@given(patterns(), texts)
def test_the_literal_prefilter_is_sound(pattern, text):
    literals = required_literals(pattern)
    if literals is not None and not any(lit in text.encode() for lit in literals):
        assert plain_matching_lines(pattern, text) == []


@settings(max_examples=400, deadline=None)
@given(patterns(), texts)
@example("^b", "a\nb")  # a line's start is not the text's
@example("b$", "b\na")  # nor is its end
@example(r"(?<!\n)b", "a\nb")  # a lookbehind sees the newline only in the whole text
@example(r"\Ab", "a\nb")
def test_the_whole_text_prefilter_is_sound(pattern, text):
    matcher = compile_matcher(pattern)
    if _whole_text_prefilter_ok(matcher) and matcher.regex.search(text) is None:
        assert plain_matching_lines(pattern, text) == []
    assert list(_matching_lines(text, matcher.regex.search)) == plain_matching_lines(pattern, text)


def test_literals_found_where_they_must_be():
    assert required_literals(r"def handle_\w+\(") == (b"def handle_",)
    assert required_literals(r"needle_\d+") == (b"needle_",)
    assert required_literals("café") == ("café".encode(),)
    assert required_literals(r"foo|bar\d") == (b"foo", b"bar")  # one per branch
    assert required_literals(r"(foo|bar)") == (b"foo", b"bar")
    assert required_literals("a|bc") is None  # a branch without a run of two
    assert required_literals("(?i)abc") is None  # case-insensitive
    assert required_literals("ab*c") is None  # b is quantified; runs of one are not worth it
    assert required_literals("x*abcd") == (b"abcd",)
    assert required_literals(r"[A-Z]{3}_\d") is None


def test_an_empty_pattern_is_refused():
    with pytest.raises(BadPattern, match="empty"):
        compile_matcher("")
