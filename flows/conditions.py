"""Safe ``when`` expressions: a tiny tokenizer, a recursive-descent parser and
an evaluator over the parsed tree. Nothing is ever eval'd or compiled.

Grammar (lowest precedence first)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand (compare_op operand)*     # chains like Python: a < b < c
    compare_op := "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in"
    operand    := REF | STRING | NUMBER | true | false | null | list | "(" expr ")"
    list       := "[" [expr ("," expr)* [","]] "]"

``True``/``False``/``None`` are accepted as spellings of the literals. Every
other name, call, attribute, subscript, operator or dunder field is refused
with a ConditionError that says where and why.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.errors import BatonError
from flows.template import Ref, ref_at

__all__ = ["Condition", "ConditionError", "describe", "parse"]

_MAX_DEPTH = 50  # nesting of (), [] and not: keeps recursion far from Python's limit
_NUMBER = re.compile(r"-?(?:\d+\.\d+|\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_])")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STEP_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # to name a "$step" missing its ".output"
_OPS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",")
_LITERALS: dict[str, Any] = {
    "true": True, "True": True, "false": False, "False": False, "null": None, "None": None,
}
_KEYWORDS = {"and", "or", "not", "in"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}
_HINTS = {
    **dict.fromkeys("+-*/%@^~", "arithmetic is not allowed"),
    "=": "use == to compare", "!": "use not", "&": "use and", "|": "use or", ":": "':' is not allowed",
    ".": "attribute access is not allowed", "{": "only lists [...] are allowed",
}


class ConditionError(BatonError, ValueError):
    """A ``when`` expression is outside the grammar; says which, where and why."""

    def __init__(self, source: str, problem: str, pos: int | None = None) -> None:
        where = f" at column {pos + 1}" if pos is not None else ""
        super().__init__(f"condition {source!r}{where}: {problem}")
        self.source = source
        self.problem = problem
        self.pos = pos


@dataclass(frozen=True)
class _Tok:
    kind: str  # "ref", "lit", "op", "kw", "end"
    value: Any
    pos: int
    text: str


def _tokens(src: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch.isspace():
            i += 1
        elif ch == "$":
            out.append(_ref_token(src, i))
            i += len(out[-1].text)
        elif ch in "'\"":
            out.append(_string_token(src, i))
            i += len(out[-1].text)
        elif (m := _NUMBER.match(src, i)) and (ch != "-" or _operand_expected(out)):
            text = m.group(0)
            try:
                value = float(text) if any(c in text for c in ".eE") else int(text)
            except ValueError:  # int() refuses more than 4300 digits
                raise ConditionError(src, "number is too long", i) from None
            out.append(_Tok("lit", value, i, text))
            i = m.end()
        elif (w := _WORD.match(src, i)) is not None:
            word = w.group(0)
            if word in _LITERALS:
                out.append(_Tok("lit", _LITERALS[word], i, word))
            elif word in _KEYWORDS:
                out.append(_Tok("kw", word, i, word))
            else:
                hint = "use == null" if word == "is" else "only true/false/null, and/or/not/in and $refs are allowed"
                raise ConditionError(src, f"unknown name {word!r} ({hint})", i)
            i = w.end()
        elif (op := next((o for o in _OPS if src.startswith(o, i)), None)) is not None:
            out.append(_Tok("op", op, i, op))
            i += len(op)
        else:
            raise ConditionError(src, f"unexpected {ch!r}" + (f" ({_HINTS[ch]})" if ch in _HINTS else ""), i)
    out.append(_Tok("end", None, n, "end of expression"))
    return out


def _operand_expected(out: list[_Tok]) -> bool:
    # "-1" is a negative literal only where an operand may start; "a -1" is arithmetic.
    return not out or out[-1].kind == "kw" or out[-1].value in ("(", "[", ",", "==", "!=", "<", "<=", ">", ">=")


def _ref_token(src: str, i: int) -> _Tok:
    ref = ref_at(src, i)
    if ref is None:
        word = _STEP_WORD.match(src, i + 1)
        if src.startswith("$$", i):
            problem = "'$$' (a literal $) has no meaning here; put a '$' inside a quoted string"
        elif word:
            name = word.group(0)
            problem = f"'${name}' is not a reference; write ${name}.output, ${name}.output.FIELD or $input.NAME"
        else:
            problem = "'$' must start a reference such as $step.output.field or $input.name"
        raise ConditionError(src, problem, i)
    if any(part.startswith("__") for part in (ref.field or "").split(".")):
        raise ConditionError(src, f"{ref.text!r}: names starting with '__' are not allowed", i)
    return _Tok("ref", ref, i, ref.text)


def _string_token(src: str, i: int) -> _Tok:
    m = _STRING.match(src, i)
    if m is None:
        raise ConditionError(src, "string is never closed", i)
    value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(0)), m.group(0)[1:-1], flags=re.S)
    return _Tok("lit", value, i, m.group(0))


# Parsed nodes: plain tuples, tagged by their first item.
#   ("lit", value) ("ref", Ref) ("list", [nodes]) ("not", node)
#   ("and"|"or", [nodes]) ("cmp", first, [(op, node), ...])
_Node = tuple[Any, ...]


class _Parser:
    def __init__(self, src: str) -> None:
        self.src, self.toks, self.i, self.depth = src, _tokens(src), 0, 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, kind: str, value: Any) -> bool:
        tok = self.peek()
        return tok.kind == kind and tok.value == value

    def fail(self, tok: _Tok, problem: str) -> ConditionError:
        return ConditionError(self.src, problem, tok.pos)

    def nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail(tok, f"nested more than {_MAX_DEPTH} levels deep")

    def whole(self) -> _Node:
        if self.peek().kind == "end":
            raise self.fail(self.peek(), "empty condition")
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise self.fail(tok, self._unexpected(tok))
        return node

    def _unexpected(self, tok: _Tok) -> str:
        hint = {"(": " (function calls are not allowed)", "[": " (subscripts are not allowed)"}.get(tok.value, "")
        if tok.kind in ("lit", "ref"):
            hint = " (an operator such as ==, in, and, or is missing)"
        return f"unexpected {tok.text!r}{hint}"

    def expr(self) -> _Node:
        return self.chain("or", self.and_expr)

    def and_expr(self) -> _Node:
        return self.chain("and", self.not_expr)

    def chain(self, word: str, sub: Callable[[], _Node]) -> _Node:
        items = [sub()]
        while self.at("kw", word):
            self.take()
            items.append(sub())
        return items[0] if len(items) == 1 else (word, items)

    def not_expr(self) -> _Node:
        if self.at("kw", "not"):
            self.nest(self.take())
            node = ("not", self.not_expr())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> _Node:
        first, rest = self.operand(), []
        while True:
            tok = self.peek()
            if tok.kind == "op" and tok.value in ("==", "!=", "<", "<=", ">", ">="):
                op = self.take().value
            elif tok.kind == "kw" and tok.value == "in":
                op = self.take().value
            elif tok.kind == "kw" and tok.value == "not" and self.peek(1).kind == "kw" and self.peek(1).value == "in":
                self.take()
                self.take()
                op = "not in"
            else:
                break
            rest.append((op, self.operand()))
        return ("cmp", first, rest) if rest else first

    def operand(self) -> _Node:
        tok = self.take()
        if tok.kind == "lit":
            return ("lit", tok.value)
        if tok.kind == "ref":
            return ("ref", tok.value)
        if tok.value == "(":
            self.nest(tok)
            if self.at("op", ")"):
                raise self.fail(self.peek(), "empty parentheses (tuples are not allowed)")
            node = self.expr()
            self.expect(")", tok)
            self.depth -= 1
            return node
        if tok.value == "[":
            self.nest(tok)
            items: list[_Node] = []
            while not self.at("op", "]"):
                items.append(self.expr())
                if not self.at("op", ","):
                    break
                self.take()
            self.expect("]", tok)
            self.depth -= 1
            return ("list", items)
        what = "the condition ends" if tok.kind == "end" else f"found {tok.text!r}"
        raise self.fail(tok, f"expected a value, a $ref, a list or '(', but {what}")

    def expect(self, closer: str, opener: _Tok) -> None:
        tok = self.peek()
        if not self.at("op", closer):
            opened = f"{opener.value!r} at column {opener.pos + 1}"
            raise self.fail(tok, f"expected {closer!r} to close {opened}, found {tok.text!r}")
        self.take()


def parse(expr: str) -> Condition:
    """Parse a ``when`` expression; ConditionError for anything outside the grammar."""
    if not isinstance(expr, str):
        raise ConditionError(repr(expr), "a condition must be a string")
    parser = _Parser(expr)
    node = parser.whole()
    # Every ref token ends up in the tree once parsing succeeded, so the tokens list them.
    found = {tok.text: tok.value for tok in parser.toks if tok.kind == "ref"}
    return Condition(expr, tuple(found.values()), _node=node)


@dataclass(frozen=True)
class Condition:
    """A parsed ``when`` expression; ``refs`` lists each reference once, in order."""

    source: str
    refs: tuple[Ref, ...]
    _node: _Node | None = field(default=None, repr=False, compare=False)

    def evaluate(self, resolve: Callable[[Ref], tuple[Any, bool]]) -> tuple[bool, dict[str, Any]]:
        """The result and the value each reference had, keyed by its text.

        Every reference is resolved once, up front (so ``seen`` is complete even
        where ``and``/``or`` would short-circuit); an unresolved one is None.
        Incomparable values compare False and ``x in None`` is False. Never
        raises: a ``resolve`` that raises counts as unresolved.
        """
        seen: dict[str, Any] = {}
        for ref in self.refs:
            try:
                value, ok = resolve(ref)
            except Exception:  # contract: never raise at evaluate time
                value, ok = None, False
            seen[ref.text] = value if ok else None
        node = self._node
        if node is None:  # built by hand rather than by parse()
            try:
                node = parse(self.source)._node
            except ConditionError:
                return False, seen
        assert node is not None  # parse() always builds the tree
        return _truthy(_eval(node, seen)), seen


def _eval(node: _Node, seen: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "ref":
        return seen.get(node[1].text)
    if kind == "list":
        return [_eval(item, seen) for item in node[1]]
    if kind == "not":
        return not _truthy(_eval(node[1], seen))
    if kind == "and":
        return all(_truthy(_eval(item, seen)) for item in node[1])
    if kind == "or":
        return any(_truthy(_eval(item, seen)) for item in node[1])
    left = _eval(node[1], seen)
    for op, item in node[2]:  # chained like Python: a < b < c is a < b and b < c
        right = _eval(item, seen)
        if not _compare(op, left, right):
            return False
        left = right
    return True


def _truthy(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:  # an odd object from a caller's resolve: treat as false
        return False


_ORDER: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "in":
            return _contains(right, left)
        if op == "not in":
            return not _contains(right, left)
        return bool(_ORDER[op](left, right))
    except Exception:  # None < 3, "a" < 1, [1] < ["a"]: incomparable is simply false
        return False


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, (list, tuple, dict, set, frozenset)):
        return item in container
    return False  # None, numbers, bools: nothing is "in" them


def describe(cond: Condition, seen: dict[str, Any], result: bool) -> str:
    """One line for StepSkipped.detail: the expression, its result and the values seen."""
    source = " ".join(cond.source.split())
    values = ", ".join(f"{text} = {_short(value)}" for text, value in seen.items())
    return f"{source} was {'true' if result else 'false'}" + (f" ({values})" if values else "")


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:  # e.g. an int over 4300 digits: describe must still give a line
        text = f"<unprintable {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
