"""Evidence items: parsing what models write, and the quote rule (pure)."""

from __future__ import annotations

import pytest

from flows.evidence import (
    EvidenceCheck,
    EvidenceItem,
    Verdict,
    annotate,
    parse,
    quote_in,
    summary_line,
)


def one(text: str) -> EvidenceItem:
    items = parse(text)
    assert len(items) == 1, items
    return items[0]


@pytest.mark.parametrize(("text", "quote", "path", "start", "end"), [
    ('E1: "def pin(project)" (source: actors/workspace/projects.py:38)',
     "def pin(project)", "actors/workspace/projects.py", 38, 38),
    ('E2: "retries = 3" (source: src/app.py:10-12)', "retries = 3", "src/app.py", 10, 12),
    ('- **E3** (`src/app.py:12-14`, direct): `return None`', "return None", "src/app.py", 12, 14),
    ("| E4 | “retries: 3” | config/app.yaml#L7 |", "retries: 3", "config/app.yaml", 7, 7),
    ("E5: `a.py`:3 — 'x' is set: \"x = 1\"", "x = 1", "a.py", 3, 3),
    ('E6: "x" (source: `./src/x.py`, line 4)', "x", "./src/x.py", 4, 4),
    ('1. E7 — "File a.py:3 broke" (source: b/c.py:9)', "File a.py:3 broke", "b/c.py", 9, 9),
    ("E8: src/a.py lines 3–5, direct: `import os`", "import os", "src/a.py", 3, 5),
    ("E9: see src/a.py#L3-L5 «import os»", "import os", "src/a.py", 3, 5),
    ('E10 (src/app.py:11, direct): "retries = 3"', "retries = 3", "src/app.py", 11, 11),
    ('E11: "x" (src/app.py:11:5)', "x", "src/app.py", 11, 11),
])
def test_the_forms_models_write(text, quote, path, start, end):
    item = one(text)
    assert (item.quote, item.path, item.start, item.end) == (quote, path, start, end)


def test_ids_and_lines_of_several_items():
    output = "Answer.\n\n## Evidence\n\nE1: \"a\" (source: x.py:1)\nprose\nE2: \"b\" (source: y.py:2)\n"
    assert [(i.id, i.line) for i in parse(output)] == [("E1", 4), ("E2", 6)]


def test_a_blockquote_or_fenced_block_under_the_item_is_its_quote():
    quoted = one("E1: src/app.py:10-11\n> def handle_request(req):\n>     retries = 3\n\nmore")
    assert quoted.quote == "def handle_request(req):\n    retries = 3"
    fenced = one("E2: `src/app.py:10-11`\n```python\ndef handle_request(req):\n```\n")
    assert fenced.quote == "def handle_request(req):" and fenced.path == "src/app.py"


@pytest.mark.parametrize("text", [
    'E1 (prompt:1, direct): the user said "so"',
    'E2: "x" (source: https://example.com:8080/a.py:12)',
    "E3: `git log -1` printed `abc`",
])
def test_sources_that_are_no_files_give_no_path(text):
    assert one(text).path == ""


def test_prose_mentioning_items_is_not_an_item_and_code_is_skipped():
    assert parse("As E1 and E2 show, it is fine.\n```\nE1: \"x\" (source: a.py:1)\n```\n") == []


def test_a_lint_code_is_not_evidence():
    assert parse("E501: line too long (source: a.py:1)") == []


def test_quote_rule_is_whitespace_normalised():
    text = "def handle_request(req):\n    retries   =  3\n"
    assert quote_in("retries = 3", text)
    assert quote_in("def handle_request(req): retries = 3", text)
    assert quote_in("  retries =\t3 ", text)
    assert not quote_in("retries = 4", text)
    assert not quote_in("", text)


def test_smart_quotes_and_ellipsis():
    text = "name = 'baton'\nfirst = 1\nsecond = 2\nlast = 3\n"
    assert quote_in("name = ‘baton’", text)
    assert quote_in("first = 1 ... last = 3", text)
    assert quote_in("first = 1 … last", text)
    assert not quote_in("last = 3 ... first = 1", text)  # pieces must come in order
    assert quote_in("x = ...", "x = ...\n")  # a literal ellipsis in code matches as it is


def test_summary_and_annotation():
    items = parse('E1: "a" (source: x.py:1)\nE2: "b" (source: x.py:2)\nE3: no source')
    checks = [EvidenceCheck(item=items[0], verdict=Verdict.VERIFIED),
              EvidenceCheck(item=items[1], verdict=Verdict.NOT_FOUND, detail="the quote is at line 9"),
              EvidenceCheck(item=items[2], verdict=Verdict.UNCHECKED, detail="no file:line source")]
    assert summary_line(checks) == "Evidence: 1 verified, 1 not found, 1 unchecked (of 3 items)"
    annotated = annotate('E1: "a" (source: x.py:1)\nE2: "b" (source: x.py:2)\nE3: no source', checks)
    assert annotated.split("\n") == [
        'E1: "a" (source: x.py:1) **[verified]**',
        'E2: "b" (source: x.py:2) **[not found: the quote is at line 9]**',
        "E3: no source **[unchecked: no file:line source]**",
    ]
