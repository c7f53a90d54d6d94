"""What a tool call gives back: capped text plus the facts the log records.

A result is text for the model and metadata for the log (``ToolResult``
event): whether it is an answer, a tool error or a reply to a malformed
call, the error's name, its size and sha256, and whether a cap cut it. Every
cut says so in the text itself ("[cut: 200 of 1,234 matches shown]"), so the
model knows there is more and how to ask for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from flows.text import encodable


class Outcome(str, Enum):
    """How a call ended; the anomaly watch counts the last three apart."""

    OK = "ok"
    ERROR = "error"
    """The call was well formed and the tool refused or failed (a confinement
    rule, a bad regex, a missing file)."""
    MALFORMED = "malformed"
    """The call itself was wrong: unknown tool, arguments not JSON or not
    matching the schema."""
    NOT_RUN = "not_run"
    """Not executed because a limit of the loop was reached first."""


@dataclass(frozen=True)
class ToolResult:
    """One tool call's answer: ``text`` goes to the model, the rest to the log."""

    text: str
    outcome: Outcome = Outcome.OK
    error: str = ""
    """The error's name: a confinement rule (``symlink-out``), ``bad-pattern``,
    ``unknown-tool``, ``not-json``, ``bad-arguments`` ... ; ``""`` when ok."""
    truncated: bool = False
    bytes: int = 0
    sha256: str = ""

    @property
    def ok(self) -> bool:
        """Whether the tool did what was asked."""
        return self.outcome is Outcome.OK


def make_result(text: str, outcome: Outcome = Outcome.OK, error: str = "",
                truncated: bool = False) -> ToolResult:
    """A :class:`ToolResult` whose size and digest are those of ``text`` as UTF-8.

    A file name that is not UTF-8 (kept by ``surrogateescape`` to open the file) is shown with U+FFFD
    (``flows.text.encodable``): the model is sent, and the log holds, text UTF-8 can carry, and the
    digest is that text's.
    """
    text, error = encodable(text), encodable(error)
    raw = text.encode("utf-8")
    return ToolResult(text=text, outcome=outcome, error=error, truncated=truncated,
                      bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest())


def failure(outcome: Outcome, error: str, message: str) -> ToolResult:
    """An error result whose text starts with ``error: <name>:`` for the model to read."""
    return make_result(f"error: {error}: {message}", outcome, error)


def cut_notice(shown: int, total: int, noun: str) -> str:
    """``[cut: 200 of 1,234 matches shown]``."""
    return f"[cut: {shown:,} of {total:,} {noun} shown]"


def cap_bytes(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` of UTF-8 (on a line end when possible), and a notice.

    The notice counts bytes of the whole text, so the model can tell how much
    it did not see; it is added beyond the cap (a few dozen bytes).
    """
    raw = text.encode("utf-8", errors="surrogateescape")
    if len(raw) <= max_bytes:
        return text, False
    head = raw[:max_bytes]
    newline = head.rfind(b"\n")
    if newline > max_bytes // 2:
        head = head[: newline + 1]
    shown = head.decode("utf-8", errors="ignore")  # drops a character cut in half
    kept = len(shown.encode("utf-8", errors="surrogateescape"))
    return shown.rstrip("\n") + "\n" + cut_notice(kept, len(raw), "bytes"), True
