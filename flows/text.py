"""Text the read side can store: the one rule for what a command may carry.

Two kinds of character cannot reach a read table, whatever the backend:

- NUL (U+0000): PostgreSQL ``text`` cannot hold it (``invalid byte sequence
  for encoding "UTF8": 0x00``), and C strings end at it;
- a lone surrogate (U+D800..U+DFFF, not part of a pair): it has no UTF-8
  encoding, so neither the store's JSON encoder nor a database driver can
  write it. JSON's ``"\\ud800"`` escape decodes to one, and so does a
  command-line argument that is not valid UTF-8 (Python's surrogateescape).

Every text a command carries into an event is checked here, at the door
(``check_text``, ``check_value``): a launch's flow, question, band, model,
project, inputs and idempotency key, a decision's comment, a cancel's
reason, and who gave them. A refused command appends nothing.

A log may already hold such text (written by an older version, by a model's
output, or straight into the store), and the log is never edited. Readers
show it escaped (``storable``, ``storable_value``): each NUL and each lone
surrogate becomes U+FFFD REPLACEMENT CHARACTER, the character a UTF-8
decoder puts where it found bytes it could not read. It is visible in every
terminal and browser, and it cannot be mistaken for something a person
typed (a visible ``\\u0000`` could). The audit log (``GET
/api/runs/{id}/events``, ``baton replay``) still gives the original.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from flows.errors import BatonError

S = TypeVar("S", bound=msgspec.Struct)

REPLACEMENT = "\ufffd"
"""What ``storable`` puts in place of each character the read side cannot hold."""

# Surrogates are always lone in a Python str: a pair decodes to one code point.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnstorableText(BatonError, ValueError):
    """A command carries text the log's readers cannot store; ``field`` names where it is.

    ``field`` is the request's name for it (``question``, ``inputs.notes``,
    ``comment``); ``problem`` says what was found and where.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def find_unstorable(text: str) -> int | None:
    """The offset of the first character the read side cannot hold, or None."""
    found = _UNSTORABLE.search(text)
    return None if found is None else found.start()


def describe(text: str, offset: int) -> str:
    """What is wrong at ``offset`` of ``text``, without repeating the text itself."""
    char = text[offset]
    if char == "\x00":
        return f"holds a NUL character (U+0000) at character {offset}; text may not contain NUL"
    return (f"holds a lone surrogate (U+{ord(char):04X}) at character {offset}: it is not valid Unicode "
            "(a \\ud800-\\udfff escape without its pair, or bytes that are not UTF-8)")


def check_text(field: str, value: str) -> None:
    """Raise UnstorableText naming ``field`` when ``value`` holds NUL or a lone surrogate."""
    offset = find_unstorable(value)
    if offset is not None:
        raise UnstorableText(field, describe(value, offset))


def check_value(field: str, value: Any) -> None:
    """``check_text`` on every string in a JSON-like value: keys and values, at any depth.

    ``field`` is the value's name; what is found inside is named by its path
    (``inputs.notes``, ``inputs.items[2]``). A bad key is reported on the
    object that holds it.
    """
    if isinstance(value, str):
        check_text(field, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                offset = find_unstorable(key)
                if offset is not None:
                    raise UnstorableText(field, f"a key {describe(key, offset)}")
            check_value(f"{field}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_value(f"{field}[{index}]", item)


def encodable(text: str) -> str:
    """``text`` as UTF-8 can carry it, for what a step, a model or a tool produced (not a command: those
    are refused, ``check_text``): a surrogate pair split in two (a model's stream whose chunks were
    decoded apart) joined into its character, and each lone surrogate (bytes that were not UTF-8, as
    ``surrogateescape`` keeps them) U+FFFD, as a UTF-8 decoder replaces bytes it cannot read. NUL stays:
    the log holds it, and its readers escape it (``storable``). The same text when it has none.

    Without it such text reached the store's JSON encoder, which cannot write it: the append failed,
    and the run was driven again, ran the same step again, and failed the same way, for ever.
    """
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def encodable_value(value: Any) -> Any:
    """``encodable`` applied to every string of a JSON-like value (keys too); other values as they are."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {encodable(k) if isinstance(k, str) else k: encodable_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(encodable_value(v) for v in value)
    return value


def encodable_fields(struct: S) -> S:
    """A frozen ``msgspec.Struct`` (an event) with ``encodable_value`` applied to its fields; itself when
    none changes."""
    changed = {}
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if isinstance(value, (str, dict, list, tuple)):
            new = encodable_value(value)
            if new != value:
                changed[name] = new
    return msgspec.structs.replace(struct, **changed) if changed else struct


def storable(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD (the same text when it has none)."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_value(value: Any) -> Any:
    """``storable`` applied to every string of a JSON-like value (keys too); other values as they are."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else k: storable_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_value(v) for v in value]
    return value
