"""flows.template: reading $refs, rendering prompts and parsing frontmatter."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.template import Ref, parse_frontmatter, ref_at, refs, render, resolve

INPUTS = {"question": "Why?", "n": 3}
OUTPUTS = {"classify": "---\nseverity: high\n---\nBody", "sign-off": "ok", "empty": ""}
FIELDS = {
    "classify": {"severity": "high", "score": 7, "ok": True, "tags": ["a", "b"], "meta": {"owner": {"name": "ana"}}},
    "sign-off": {},
    "empty": {},
}


def rendered(text: str) -> tuple[str, list[str]]:
    return render(text, inputs=INPUTS, outputs=OUTPUTS, fields=FIELDS)


# --- refs --------------------------------------------------------------------


def test_refs_reads_every_form_in_order_with_duplicates() -> None:
    text = "Q: $input.question; $classify.output then $classify.output.severity, $classify.output"
    assert refs(text) == [
        Ref("input", "question", "$input.question"),
        Ref("classify", None, "$classify.output"),
        Ref("classify", "severity", "$classify.output.severity"),
        Ref("classify", None, "$classify.output"),
    ]


def test_ref_properties() -> None:
    nested = refs("$a.output.meta.owner")[0]
    assert (nested.step, nested.field, nested.path, nested.is_input) == ("a", "meta.owner", ("meta", "owner"), False)
    assert refs("$input.q")[0].is_input
    assert refs("$a.output")[0].path == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$a.output.", ["$a.output"]),  # a sentence ends after the ref
        ("($a.output.severity)", ["$a.output.severity"]),
        ("$a.output,", ["$a.output"]),
        ("$a.output.severity.", ["$a.output.severity"]),
        ("$a.output.severity: high", ["$a.output.severity"]),
        ("'$input.question'", ["$input.question"]),
        ("$sign-off.output and $security-review.output.verdict", ["$sign-off.output", "$security-review.output.verdict"]),
        ("$a.output.risk-level", ["$a.output.risk-level"]),
        ("$a.output.risk- level", ["$a.output.risk"]),  # a field name never ends in a hyphen
        ("$input.topic-based", ["$input.topic-based"]),
        ("$input.topic-", ["$input.topic"]),
        ("$a.output.5", ["$a.output"]),
        ("$_x.output._y", ["$_x.output._y"]),
        ("$a.output\n$b.output", ["$a.output", "$b.output"]),
    ],
)
def test_refs_next_to_punctuation(text: str, expected: list[str]) -> None:
    assert [r.text for r in refs(text)] == expected


@pytest.mark.parametrize(
    "text",
    ["$5", "costs $ 3", "$word", "$word alone", "$a.outputs", "$a.out", "$input", "$input.", "$input.5",
     "$$a.output", "$$input.x", "US$", "$-a.output", "a.output", "$.output", "$a .output"],
)
def test_text_that_is_not_a_ref(text: str) -> None:
    assert refs(text) == []


def test_ref_at_reads_only_at_the_position() -> None:
    text = "x $a.output.y z"
    assert ref_at(text, 2) == Ref("a", "y", "$a.output.y")
    assert ref_at(text, 0) is None
    assert ref_at("$$", 0) is None


def test_long_runs_do_not_backtrack_badly() -> None:
    text = "$" + "a-" * 20_000 + "." + "$a.output." + "b-" * 20_000 + "!"
    started = time.perf_counter()
    refs(text)
    render(text, inputs={}, outputs={}, fields={})
    assert time.perf_counter() - started < 1.0


# --- resolve / render ----------------------------------------------------------


def test_resolve_gives_raw_values() -> None:
    def res(text: str) -> tuple[object, bool]:
        return resolve(refs(text)[0], inputs=INPUTS, outputs=OUTPUTS, fields=FIELDS)

    assert res("$classify.output.tags") == (["a", "b"], True)
    assert res("$classify.output.score") == (7, True)
    assert res("$classify.output.meta.owner.name") == ("ana", True)
    assert res("$input.n") == (3, True)
    assert res("$classify.output") == (OUTPUTS["classify"], True)
    assert res("$empty.output") == ("", True)
    for missing in ("$other.output", "$other.output.x", "$classify.output.nope", "$input.nope",
                    "$classify.output.severity.deeper", "$classify.output.__class__", "$sign-off.output.x"):
        assert res(missing) == (None, False), missing


def test_render_substitutes_every_form() -> None:
    text = "Q=$input.question S=$classify.output.severity N=$classify.output.score by $classify.output.meta.owner.name"
    assert rendered(text) == ("Q=Why? S=high N=7 by ana", [])
    assert rendered("[$sign-off.output]") == ("[ok]", [])
    assert rendered("$classify.output")[0] == OUTPUTS["classify"]


def test_render_non_string_values() -> None:
    out, _ = render(
        "$s.output.l|$s.output.d|$s.output.i|$s.output.f|$s.output.b|$s.output.n|$s.output.u",
        inputs={},
        outputs={"s": ""},
        fields={"s": {"l": [1, "é"], "d": {"k": None}, "i": 3, "f": 2.5, "b": False, "n": None, "u": "ü"}},
    )
    assert out == '[1, "é"]|{"k": null}|3|2.5|False|None-as-empty|ü'.replace("None-as-empty", "")


def test_render_unresolved_is_empty_and_listed_once_in_order() -> None:
    text = "$zeta.output / $input.missing / $zeta.output / $classify.output.nope / $alpha.output.x"
    out, unresolved = rendered(text)
    assert out == " /  /  /  / "
    assert unresolved == ["$zeta.output", "$input.missing", "$classify.output.nope", "$alpha.output.x"]


def test_render_dollars() -> None:
    assert rendered("costs $$5 and $ 3 or $5 or $word") == ("costs $5 and $ 3 or $5 or $word", [])
    assert rendered("$$input.question is literal") == ("$input.question is literal", [])
    assert rendered("$$$input.question") == ("$Why?", [])
    assert rendered("($classify.output.severity).") == ("(high).", [])


def test_render_odd_values_do_not_raise() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    out, _ = render("$s.output.c $s.output.o", inputs={}, outputs={"s": ""}, fields={"s": {"c": cyclic, "o": object()}})
    assert out.startswith("[[...]]")
    # str() refuses ints over 4300 digits; an input from a client must not crash a step
    assert render("$input.n", inputs={"n": 10**5000}, outputs={}, fields={}) == ("<unprintable int>", [])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_render_never_raises_and_escaping_round_trips(text: str) -> None:
    rendered(text)
    refs(text)
    escaped = text.replace("$", "$$")
    assert refs(escaped) == []
    assert render(escaped, inputs={}, outputs={}, fields={}) == (text, [])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["$", "$$", "a", ".", "output", "input", "-", "_", " ", "(", "x"]), max_size=30))
def test_render_only_substitutes_what_refs_finds(parts: list[str]) -> None:
    text = "".join(parts)
    _, unresolved = render(text, inputs={}, outputs={}, fields={})
    assert unresolved == list(dict.fromkeys(r.text for r in refs(text)))


# --- frontmatter ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "fields"),
    [
        ("---\nseverity: high\nscore: 7\n---\n# Body\n", {"severity": "high", "score": 7}),
        ("---\nseverity: high\n...\nbody", {"severity": "high"}),
        ("\n\n   \n---\nseverity: low\n---\n", {"severity": "low"}),  # leading blank lines
        ("  ---  \nk: v\n---", {"k": "v"}),
        ("\ufeff---\nk: v\n---", {"k": "v"}),
        ("---\r\nk: v\r\n---\r\nbody", {"k": "v"}),
        ("---\n---\nbody", {}),  # an empty block is fine
        ('{"severity": "high", "tags": ["x"]}', {"severity": "high", "tags": ["x"]}),
        ('  {"severity": "high"}\n\nThe rest of the answer.', {"severity": "high"}),
        ('```json\n{"severity": "critical"}\n```\nExplanation', {"severity": "critical"}),
        ('\n```JSON\n\n  {"a": {"b": 1}}\n```', {"a": {"b": 1}}),
        ("---\nwhen: 2024-05-01\nflag: yes\nn: .nan\nk: !!set {a}\n1: one\n---", {
            "when": "2024-05-01", "flag": True, "n": None, "k": ["a"], "1": "one"}),
        ("No frontmatter here.\n---\nk: v\n---", {}),
        ("", {}),
        ("   \n  ", {}),
        ("```python\nprint(1)\n```", {}),
        ("```json\n[1, 2]\n```", {}),
        ("[1, 2, 3]", {}),
        ("42", {}),
        ("# Title\n{\"k\": 1}", {}),
    ],
)
def test_frontmatter_found_or_absent(output: str, fields: dict[str, object]) -> None:
    assert parse_frontmatter(output) == (fields, "")


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("---\nseverity: [high\n---\nbody", ["YAML", "line"]),
        ("---\nok: 1\nbad: : :\n---", ["YAML", "line 3"]),
        ("\n\n---\na: b: c\n---", ["line 4"]),  # line numbers count from the top of the output
        ("---\nseverity: high\nno end here", ["never closed", "line 1"]),
        ("---\n- a\n- b\n---", ["list", "not a mapping"]),
        ("---\njust words\n---", ["string", "not a mapping"]),
        ("---\nd: 2024-02-30\n---", ["YAML"]),  # PyYAML raises ValueError here
        ('{"severity": "high",}', ["JSON", "line 1"]),
        ("{not json at all}", ["JSON"]),
        ('\n{\n  "a": 1\n  "b": 2\n}', ["JSON", "line 4"]),
        ('```json\n{"a": tru}\n```', ["JSON", "line 2"]),
        ("---\na: &x [*x]\n---", ["too large"]),
        ("---\n" + "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
            f" *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)
        ) + "---", ["too large"]),  # a "billion laughs" alias bomb
        ("{" * 5000 + "}" * 5000, ["JSON"]),
        ("---\nn: " + "1" * 5000 + "\n---", ["YAML", "digits"]),
        ('{"n": ' + "1" * 5000 + "}", ["JSON", "digits"]),
    ],
)
def test_frontmatter_that_is_there_but_broken(output: str, words: list[str]) -> None:
    fields, error = parse_frontmatter(output)
    assert fields == {}
    assert error
    for word in words:
        assert word in error, error


_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20),
                     st.floats(allow_nan=False, allow_infinity=False))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_mappings = st.dictionaries(st.text(min_size=1, max_size=10), _values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(_mappings, st.text(max_size=40))
def test_frontmatter_round_trips_yaml_and_json(data: dict[str, object], body: str) -> None:
    # allow_unicode=True is not used: PyYAML itself does not round-trip "\x85" that way.
    as_yaml = "---\n" + yaml.safe_dump(data) + "---\n" + body
    assert parse_frontmatter(as_yaml) == (data, "")
    as_json = json.dumps(data) + "\n" + body
    assert parse_frontmatter(as_json) == (data, "")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["", "---\n", "{", "```json\n{", "---\na: "]))
def test_frontmatter_never_raises(text: str, prefix: str) -> None:
    fields, error = parse_frontmatter(prefix + text)
    assert isinstance(fields, dict) and isinstance(error, str)
    assert not (fields and error)
    json.dumps(fields)  # always storable in StepCompleted
