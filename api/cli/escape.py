"""Text a person or a model gave, made safe to print on a terminal.

A question, an approver's name, a comment or a step's output may hold
control characters: an escape sequence (``\\x1b[31m``) recolours or rewrites
the terminal, a bell rings, a carriage return hides what came before it,
and Unicode bidirectional controls reorder what is shown. ``printable``
writes each as a visible Python-style escape (``\\x1b``, ``\\u202e``), so the
person sees exactly what was recorded. Rich markup in such text (``[red]``)
is never interpreted either: the CLI prints user text as plain ``Text`` or
with ``markup=False``.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline written as an escape."""
    return _UNSAFE.sub(_escaped, text)


def printable_line(text: str) -> str:
    """``text`` on one line: newlines and tabs become spaces, other controls escapes."""
    return _UNSAFE_LINE.sub(lambda m: " " if m.group() in "\n\t" else _escaped(m), text)
