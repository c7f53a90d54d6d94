"""flows.conditions: the `when` grammar, its refusals, evaluation and descriptions."""

from __future__ import annotations

import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.conditions import Condition, ConditionError, describe, parse
from flows.template import Ref, resolve

INPUTS = {"mode": "fast", "depth": 2}
OUTPUTS = {"classify": "...", "a": "...", "b": "...", "investigate": "We found an error in the parser."}
FIELDS: dict[str, dict[str, Any]] = {
    "classify": {"severity": "low"},
    "a": {"score": 8, "n": 3, "items": [], "flag": True, "ratio": 0.5, "tags": ["x", "y"], "meta": {"k": "v"}},
    "b": {"flag": False, "none": None},
}


def run(expr: str, fields: dict[str, dict[str, Any]] | None = None) -> tuple[bool, dict[str, Any]]:
    def res(ref: Ref) -> tuple[Any, bool]:
        return resolve(ref, inputs=INPUTS, outputs=OUTPUTS, fields=FIELDS if fields is None else fields)

    return parse(expr).evaluate(res)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("$classify.output.severity in ['high', 'critical']", False),
        ("$classify.output.severity in ['low', 'critical']", True),
        ("$classify.output.severity not in ['high', 'critical']", True),
        ("$a.output.score >= 7 and not $b.output.flag", True),
        ('$input.mode == "fast" or $x.output.count != 0', True),
        ('$input.mode == "slow" or $x.output.count != 0', True),  # None != 0
        ("'error' in $investigate.output", True),
        ("'success' in $investigate.output", False),
        ("$a.output.n > 2.5", True),
        ("$a.output.n > 3", False),
        ("true", True),
        ("True", True),
        ("false", False),
        ("None", False),
        ("null == None", True),
        ("$a.output.items not in [[], null]", False),
        ("$a.output.tags not in [[], null]", True),
        ("$b.output.none in [[], null]", True),
        ("$a.output.flag", True),
        ("$b.output.flag", False),
        ("not $b.output.flag", True),
        ("$a.output.items", False),  # Python truthiness: an empty list is false
        ("$a.output.meta.k == 'v'", True),
        ("'k' in $a.output.meta", True),
        ("'x' in $a.output.tags and 'z' not in $a.output.tags", True),
        ("1 < $a.output.n < 5", True),  # chained like Python
        ("1 < $a.output.n < 3", False),
        ("$a.output.n == 3 == 3.0", True),
        ("($a.output.n > 5 or $a.output.n < 4) and $input.depth >= 2", True),
        ("not ($a.output.n > 5 or $a.output.n < 4)", False),
        ("not $a.output.n == 3", False),  # not binds looser than ==, as in Python
        ("$a.output.n > -1 and $a.output.ratio < 1e3 and -2.5 < 0", True),
        ("[1, 2,] == [1, 2]", True),
        ("[$a.output.n, 'x'] == [3, 'x']", True),
        ("'it\\'s' == \"it's\"", True),
        ("'a\\nb' != 'a\\\\nb'", True),
        ("false or false or true", True),
        ("true and true and false", False),
        ("$missing.output", False),
        ("$missing.output == null", True),
        ("$input.nope == null", True),
    ],
)
def test_evaluates_like_python(expr: str, expected: bool) -> None:
    assert run(expr)[0] is expected


@pytest.mark.parametrize(
    "expr",
    [
        "$input.nope < 3",  # None < 3
        "$a.output.n < 'a'",  # "a" < 1 the other way round
        "'a' < 1",
        "[1] < ['a']",
        "$a.output.meta < $a.output.meta",
        "'x' in $missing.output",  # x in None
        "'x' in $a.output.n",  # x in 3
        "3 in 'abc'",
        "[] in $a.output.meta",  # unhashable key
        "$a.output.tags in $investigate.output",
    ],
)
def test_incomparable_is_false_not_an_exception(expr: str) -> None:
    assert run(expr)[0] is False


def test_seen_values_are_keyed_by_ref_text_and_complete() -> None:
    result, seen = run("$classify.output.severity in ['high'] and $a.output.n > $zzz.output.n")
    assert result is False
    # every ref is resolved, even where "and" would have short-circuited
    assert seen == {"$classify.output.severity": "low", "$a.output.n": 3, "$zzz.output.n": None}


def test_refs_are_listed_once_in_order() -> None:
    cond = parse("$b.output.x == $a.output or $b.output.x in [$input.q]")
    assert [r.text for r in cond.refs] == ["$b.output.x", "$a.output", "$input.q"]
    assert cond.refs[2] == Ref("input", "q", "$input.q")
    assert parse("true").refs == ()


def test_hyphenated_step_ids() -> None:
    cond = parse("$sign-off.output == 'ok' and $security-review.output.verdict != 'block'")
    assert [r.step for r in cond.refs] == ["sign-off", "security-review"]


def test_describe_is_one_line_with_values() -> None:
    cond = parse("$classify.output.severity in ['high', 'critical']")
    result, seen = run(cond.source)
    assert describe(cond, seen, result) == (
        "$classify.output.severity in ['high', 'critical'] was false ($classify.output.severity = 'low')"
    )
    cond = parse("$a.output.n > 1\n  and true")
    assert describe(cond, {"$a.output.n": 3}, True) == "$a.output.n > 1 and true was true ($a.output.n = 3)"
    assert describe(parse("true"), {}, True) == "true was true"
    long = describe(cond, {"$a.output.n": "x" * 500}, False)
    assert "\n" not in long and len(long) < 200
    assert describe(cond, {"$a.output.n": 10**5000}, True).endswith("($a.output.n = <unprintable int>)")


def test_evaluate_never_raises() -> None:
    def boom(ref: Ref) -> tuple[Any, bool]:
        raise RuntimeError("backend gone")

    assert parse("$a.output.n > 1").evaluate(boom) == (False, {"$a.output.n": None})

    class Weird:
        def __bool__(self) -> bool:
            raise RuntimeError("no truth")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no equality")

        __hash__ = None  # type: ignore[assignment]

    assert parse("$w.output").evaluate(lambda ref: (Weird(), True))[0] is False
    assert parse("$w.output == 1").evaluate(lambda ref: (Weird(), True))[0] is False
    assert parse("$w.output in [1]").evaluate(lambda ref: (Weird(), True))[0] is False


def test_hand_built_condition_still_evaluates() -> None:
    cond = Condition("$a.output.n == 3", (Ref("a", "n", "$a.output.n"),))
    assert cond.evaluate(lambda ref: (3, True)) == (True, {"$a.output.n": 3})
    assert Condition("1 +", ()).evaluate(lambda ref: (None, False)) == (False, {})
    assert cond == parse("$a.output.n == 3") and hash(cond) == hash(parse("$a.output.n == 3"))


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("__import__('os')", ["__import__"]),
        ("__import__('os').system('id')", ["__import__"]),
        ("$a.output.__class__", ["'__'"]),
        ("$a.output.x.__class__.__mro__", ["'__'"]),
        ("$input.__dict__", ["'__'"]),
        ("().__class__", ["column 3", "attribute"]),
        ("() == 1", ["column 2", "empty parentheses"]),
        ("$a.output.n.__class__ == 1", ["'__'"]),
        ("open('x')", ["open"]),
        ("len($a.output)", ["len"]),
        ("$a.output.items(1)", ["column 16", "function calls"]),
        ("($a.output)(1)", ["function calls"]),
        ("$a.output[0]", ["column 10", "subscripts"]),
        ("[1, 2][0] == 1", ["subscripts"]),
        ("'abc'.upper() == 'ABC'", ["attribute"]),
        ("$a.output .n", ["attribute"]),
        ("x.y == 1", ["'x'"]),
        ("lambda: 1", ["lambda"]),
        ("(lambda x: x)(1)", ["lambda"]),
        ("f'{1}' == '1'", ["'f'"]),
        ("rb'x' == 1", ["'rb'"]),
        ("($a.output := 1)", ["':'"]),
        ("$a.output.n + 1 > 2", ["column 13", "arithmetic"]),
        ("$a.output.n - 1 > 2", ["arithmetic"]),
        ("$a.output.n -1 > 2", ["arithmetic"]),
        ("2 * 3 == 6", ["arithmetic"]),
        ("7 / 2 == 3.5", ["arithmetic"]),
        ("7 % 2 == 1", ["arithmetic"]),
        ("2 ** 8 == 256", ["arithmetic"]),
        ("~1 == -2", ["arithmetic"]),
        ("1 if true else 2", ["'if'"]),
        ("[x for x in [1]]", ["'x'"]),
        ("{1: 2} == {}", ["only lists"]),
        ("{1} == {1}", ["only lists"]),
        ("(1, 2) == (1, 2)", ["','"]),
        ("$a.output.n is None", ["'is'", "== null"]),
        ("$a.output.n = 3", ["=="]),
        ("!$a.output.flag", ["use not"]),
        ("true && false", ["use and"]),
        ("true || false", ["use or"]),
        ("foo", ["unknown name 'foo'"]),
        ("$word == 1", ["'$word' is not a reference", "$word.output"]),
        ("$sign-off == 1", ["'$sign-off' is not a reference"]),
        ("$$ == 1", ["'$$'"]),
        ("$5 > 1", ["'$' must start a reference"]),
        ("'open string", ["never closed"]),
        ("(1 == 1", ["expected ')'", "column 1"]),
        ("[1, 2", ["expected ']'"]),
        ("1 == 1)", ["unexpected ')'"]),
        ("1 2", ["unexpected '2'", "operator"]),
        ("$a.output $b.output", ["operator"]),
        ("1 ==", ["the condition ends"]),
        ("not", ["the condition ends"]),
        ("and true", ["found 'and'"]),
        ("true and", ["the condition ends"]),
        ("1 not 2", ["unexpected 'not'"]),
        ("1.5.3 == 1", ["attribute"]),
        ("", ["empty condition"]),
        ("   \n ", ["empty condition"]),
        ("(" * 60 + "1" + ")" * 60, ["nested more than"]),
        ("not " * 60 + "true", ["nested more than"]),
        ("[" * 60 + "]" * 60, ["nested more than"]),
        ("(" * 100_000, ["nested more than"]),
        ("1" * 5000 + " == 1", ["number is too long"]),
    ],
)
def test_forbidden_and_malformed_are_refused_clearly(expr: str, words: list[str]) -> None:
    with pytest.raises(ConditionError) as info:
        parse(expr)
    message = str(info.value)
    assert message.startswith(f"condition {expr!r}"), message
    for word in words:
        assert word in message, message


def test_condition_error_is_a_value_error_with_details() -> None:
    with pytest.raises(ValueError) as info:
        parse("$a.output + 1")
    err = info.value
    assert isinstance(err, ConditionError)
    assert (err.source, err.pos) == ("$a.output + 1", 10)
    assert "arithmetic" in err.problem
    with pytest.raises(ConditionError):
        parse(None)  # type: ignore[arg-type]


def test_deep_but_allowed_nesting_parses() -> None:
    assert run("(" * 40 + "true" + ")" * 40)[0] is True
    assert run(" and ".join(["true"] * 5000))[0] is True  # long flat chains are not nesting


# --- properties --------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_parse_refuses_only_with_condition_error(text: str) -> None:
    try:
        parse(text)
    except ConditionError:
        pass


_pieces = st.sampled_from([
    "$a.output", "$a.output.x", "$input.q", "$", "$$", "'s'", '"t"', "'", "1", "-2", "2.5", "1e3", "true",
    "null", "None", "and", "or", "not", "in", "==", "!=", "<", "<=", ">", ">=", "(", ")", "[", "]", ",",
    " ", ".", "x", "__class__", "+", "=", ":", "lambda", "if",
])
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_pieces, max_size=14).map(" ".join), _values, st.booleans())
def test_token_soup_parses_or_refuses_and_evaluation_never_raises(expr: str, value: Any, ok: bool) -> None:
    try:
        cond = parse(expr)
    except ConditionError:
        return
    result, seen = cond.evaluate(lambda ref: (value, ok))
    assert isinstance(result, bool)
    assert set(seen) == {r.text for r in cond.refs}
    assert isinstance(describe(cond, seen, result), str)


_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False) | st.sampled_from(
    ["", "a", "b", "high", "low"]
)


def _reference(op: str, left: Any, right: Any) -> bool:
    """What the docs promise: Python's comparison, False where Python would raise."""
    if op in ("in", "not in"):
        if isinstance(right, str):
            found = isinstance(left, str) and left in right
        elif isinstance(right, list):
            found = left in right
        else:
            found = False
        return found if op == "in" else not found
    try:
        return bool(_OPS[op](left, right))
    except TypeError:
        return False


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([*_OPS, "in", "not in"]),
    _scalars,
    _scalars | st.lists(_scalars, max_size=3),
    st.booleans(),
    st.booleans(),
)
def test_simple_comparisons_agree_with_python(op: str, field: Any, literal: Any, present: bool, flip: bool) -> None:
    fields = {"s": {"v": field}} if present else {}
    seen_value = field if present else None
    if flip and op not in ("in", "not in"):
        expr, expected = f"{_literal(literal)} {op} $s.output.v", _reference(op, literal, seen_value)
    else:
        expr, expected = f"$s.output.v {op} {_literal(literal)}", _reference(op, seen_value, literal)
    result, seen = run(expr, fields)
    assert result is expected, expr
    assert seen == {"$s.output.v": seen_value}


@settings(max_examples=200, deadline=None)
@given(_scalars, _scalars, _scalars)
def test_boolean_structure_agrees_with_python(x: Any, y: Any, z: Any) -> None:
    fields = {"s": {"x": x, "y": y, "z": z}}
    expr = "not $s.output.x or $s.output.y and ($s.output.z or not $s.output.y)"
    assert run(expr, fields)[0] is bool(not x or y and (z or not y))


_atoms = st.sampled_from(["$a.output", "$a.output.x", "$b-c.output.y.z", "$input.q", "'s'", '"t"', "1", "-2", "2.5",
                          "true", "False", "null", "[]"])
_COMPARE = st.sampled_from([*_OPS, "in", "not in"])
_grammatical = st.recursive(
    _atoms | st.tuples(_atoms, _COMPARE, _atoms, _COMPARE, _atoms).map(" ".join),  # incl. chains
    lambda inner: st.one_of(
        # "x == not y" is not grammatical (nor Python): compound operands of a comparison get parentheses
        st.tuples(inner, _COMPARE, inner).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})"),
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
        inner.map(lambda e: f"not {e}"),
        inner.map(lambda e: f"({e})"),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(_grammatical, _values, st.booleans())
def test_every_grammatical_expression_parses_and_evaluates(expr: str, value: Any, ok: bool) -> None:
    cond = parse(expr)
    result, seen = cond.evaluate(lambda ref: (value, ok))
    assert isinstance(result, bool)
    assert all(v is (value if ok else None) for v in seen.values())
