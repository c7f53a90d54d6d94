"""``$refs`` in prompts and conditions, and the frontmatter that feeds them.

A reference is ``$input.NAME`` (the run's input), ``$STEP.output`` (the full
text of a completed step) or ``$STEP.output.FIELD[.SUB...]`` (a field of that
step's frontmatter, walking nested mappings). ``$$`` is a literal ``$``; any
other ``$`` is plain text. A reference that cannot be resolved renders as empty
text and is reported, so StepStarted can record exactly what was missing.

Field lookups only ever index mappings by key: no attribute is read, so a
name such as ``__class__`` is just a key that is not there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

__all__ = ["Ref", "parse_frontmatter", "ref_at", "refs", "render", "resolve"]

# Step ids may end in a hyphen (the `.output` that follows delimits them), but
# field and input names may not: "$input.topic-based" would otherwise swallow
# the prose after it, and "$a.output.risk-level" must still work.
_STEP = r"[A-Za-z_][A-Za-z0-9_-]*"
_NAME = r"[A-Za-z_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_END = r"(?![A-Za-z0-9_])"  # "$a.outputs" is text, not "$a.output" + "s"
_REF = (
    rf"\$(?:input\.(?P<input>{_NAME}){_END}"
    rf"|(?P<step>{_STEP})\.output(?P<path>(?:\.{_NAME}{_END})*){_END})"
)
_REF_RE = re.compile(_REF)
# `$$` is tried first so that "$$a.output" is "$" followed by the text "a.output".
_TOKEN_RE = re.compile(rf"\$\$|{_REF}")


@dataclass(frozen=True)
class Ref:
    """One reference as written: ``$input.NAME``, ``$STEP.output`` or ``$STEP.output.FIELD``.

    ``step`` is ``"input"`` for run inputs (so no step may be called ``input``);
    ``field`` is the input name, the dotted field path, or None for a step's
    whole output; ``text`` is the reference exactly as it appeared.
    """

    step: str
    field: str | None
    text: str

    @property
    def is_input(self) -> bool:
        """True for ``$input.NAME``."""
        return self.step == "input"

    @property
    def path(self) -> tuple[str, ...]:
        """The field path as its parts (``("a", "b")`` for ``$s.output.a.b``)."""
        return tuple(self.field.split(".")) if self.field else ()


def _ref_from(match: re.Match[str]) -> Ref:
    if match.group("input") is not None:
        return Ref("input", match.group("input"), match.group(0))
    path = match.group("path")
    return Ref(match.group("step"), path[1:] if path else None, match.group(0))


def ref_at(text: str, pos: int = 0) -> Ref | None:
    """The reference starting exactly at ``text[pos]``, or None if there is none.

    Shared with the condition tokenizer so both read references identically.
    """
    match = _REF_RE.match(text, pos)
    return _ref_from(match) if match else None


def refs(text: str) -> list[Ref]:
    """Every reference in ``text``, in order of appearance, duplicates kept."""
    return [_ref_from(m) for m in _TOKEN_RE.finditer(text) if m.group(0) != "$$"]


def resolve(
    ref: Ref,
    *,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, str],
    fields: Mapping[str, Mapping[str, Any]],
) -> tuple[Any, bool]:
    """The raw value behind ``ref`` and whether it resolved; ``(None, False)`` if not.

    ``outputs`` and ``fields`` hold completed steps only, so a step that did not
    complete (or a field its frontmatter lacks) is unresolved. Never raises.
    """
    if ref.is_input:
        if ref.field is not None and ref.field in inputs:
            return inputs[ref.field], True
        return None, False
    if ref.field is None:
        if ref.step in outputs:
            return outputs[ref.step], True
        return None, False
    value: Any = fields.get(ref.step)
    for part in ref.path:
        if not isinstance(value, Mapping) or part not in value:
            return None, False
        value = value[part]
    return value, True


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        if isinstance(value, (list, tuple, dict)):
            try:
                return json.dumps(value, ensure_ascii=False, default=str)
            except (TypeError, ValueError):  # cyclic or odd values from a caller
                pass
        return str(value)
    except Exception:  # e.g. an int over 4300 digits; keep the text deterministic
        return f"<unprintable {type(value).__name__}>"


def render(
    text: str,
    *,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, str],
    fields: Mapping[str, Mapping[str, Any]],
) -> tuple[str, list[str]]:
    """Substitute every reference in ``text`` and turn ``$$`` into ``$``.

    Returns the rendered text and the unresolved references (their ``text``,
    each once, in order of first appearance); those render as empty text.
    Strings render as they are, lists and mappings as JSON, None as empty text
    and anything else through ``str()``.
    """
    unresolved: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        ref = _ref_from(match)
        value, ok = resolve(ref, inputs=inputs, outputs=outputs, fields=fields)
        if not ok:
            if ref.text not in unresolved:
                unresolved.append(ref.text)
            return ""
        return _as_text(value)

    return _TOKEN_RE.sub(substitute, text), unresolved


# --- frontmatter -----------------------------------------------------------

# Frontmatter lands in StepCompleted and is read back on replay, so it is cut
# down to what JSON holds; the limits stop an alias bomb ("&a [*a, *a, ...]"),
# which YAML builds cheaply as shared objects, from expanding when encoded.
_MAX_DEPTH = 64
_MAX_NODES = 100_000


class _TooBig(Exception):
    pass


def _plain(value: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise _TooBig
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        # JSON has no NaN/Infinity and the store writes them as null: say so now,
        # so a live decision and a replayed state see the same value.
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1, budget) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1, budget) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_plain(v, depth + 1, budget) for v in sorted(value, key=repr)]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _mapping(value: Any, what: str) -> tuple[dict[str, Any], str]:
    if value is None:  # an empty block: no fields, nothing wrong
        return {}, ""
    if not isinstance(value, Mapping):
        return {}, f"{what} is {_kind(value)}, not a mapping of fields"
    try:
        return _plain(value, 0, [_MAX_NODES]), ""
    except (_TooBig, RecursionError):
        return {}, f"{what} is too large or too deeply nested (over {_MAX_NODES} values or depth {_MAX_DEPTH})"


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _yaml_block(lines: list[str], start: int) -> tuple[dict[str, Any], str]:
    for end in range(start + 1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        return {}, f"frontmatter opened with '---' on line {start + 1} is never closed by '---' or '...'"
    body = "\n".join(lines[start + 1 : end])
    import yaml  # at the first frontmatter: every `baton` command imports this module, few parse YAML (~30 ms)

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader when libyaml is there
    try:
        data = yaml.load(body, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" on line {start + 2 + mark.line}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return {}, f"frontmatter YAML{where} does not parse: {problem}"
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML raises ValueError for impossible dates such as 2024-02-30.
        return {}, f"frontmatter YAML does not parse: {exc}"
    return _mapping(data, "frontmatter YAML")


def _json_object(text: str, first_line: int) -> tuple[dict[str, Any], str]:
    try:
        data, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as exc:
        line = first_line + exc.lineno - 1
        return {}, f"frontmatter JSON on line {line} does not parse: {exc.msg} (column {exc.colno})"
    except (ValueError, RecursionError) as exc:
        return {}, f"frontmatter JSON does not parse: {exc}"
    return _mapping(data, "frontmatter JSON")


def parse_frontmatter(output: str) -> tuple[dict[str, Any], str]:
    """The fields of ``output``'s frontmatter and an error ("" when none).

    Frontmatter is, after optional blank lines, either a YAML block between a
    ``---`` line and a ``---`` (or ``...``) line, or a JSON object the output
    starts with, bare or in a ```` ```json ```` fence. No frontmatter gives
    ``({}, "")``; one that is there but broken gives ``({}, reason)`` with the
    line when known. Values are reduced to JSON types (dates become ISO text).
    Never raises.
    """
    try:
        text = output.lstrip("\ufeff")  # a BOM some tools prepend
        # Most outputs have no frontmatter: the first non-blank character says so
        # without splitting the whole output into lines.
        head = text.lstrip()
        if not head or head[0] not in "-{`~":
            return {}, ""
        # Only "\n" ends a line here: splitlines() would also break on "\x85" or
        # "\u2028" inside a quoted YAML value and corrupt it when rejoined.
        lines = text.split("\n")
        start = next((i for i, line in enumerate(lines) if line.strip()), None)
        if start is None:
            return {}, ""
        first = lines[start].strip()
        if first == "---":
            return _yaml_block(lines, start)
        if first.startswith("{"):
            return _json_object(text.lstrip(), start + 1)
        if first.lower() in ("```json", "~~~json"):
            fence = first[:3]
            end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == fence), len(lines))
            body = "\n".join(lines[start + 1 : end])
            if body.lstrip().startswith("{"):
                blank = body[: len(body) - len(body.lstrip())].count("\n")
                return _json_object(body.lstrip(), start + 2 + blank)
        return {}, ""
    except Exception as exc:  # the contract is "never raises": report, don't crash a step
        return {}, f"frontmatter could not be read: {type(exc).__name__}: {exc}"
