"""Evidence items in an agent's output: parsing them, and the rule that verifies a quote.

Pure (no I/O): ``actors.workspace.evidence`` reads the cited lines at the
pinned commit and applies :func:`quote_in`; the report shows the verdicts.

The persona contract asks for ``E1: "quoted text" (source: path:line)`` or
``path:start-end``. Models vary the form, so the parser accepts what they
actually write, e.g.::

    E1: "def pin(project)" (source: actors/workspace/projects.py:38)
    - **E2** (`src/app.py:12-14`, direct): `return None`
    | E3 | “retries: 3” | config/app.yaml#L7 |
    E4: src/a.py lines 3–5
      > first quoted line
      > second quoted line

An item names its quote (the first double-quoted, smart-quoted or backticked
span that is not the source itself; or a ``>`` blockquote or fenced block
right under it) and its source (the cite after ``source:`` if there is one,
else the first ``path:line``, ``path:start-end``, ``path#Lstart-Lend`` or
``path lines start-end``). URLs and sources that are not files (``prompt:1``)
give no path: such items are ``unchecked``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from enum import Enum

import msgspec


class Verdict(str, Enum):
    """What checking an evidence item against the pinned commit found."""

    VERIFIED = "verified"
    """The quote is in the cited lines (whitespace-normalised)."""
    NOT_FOUND = "not_found"
    """The cited file or lines do not hold the quote (or the cite was refused)."""
    UNCHECKED = "unchecked"
    """No quote, no file source, or no workspace to check against."""

    @property
    def label(self) -> str:
        """How the report writes it."""
        return self.value.replace("_", " ")


class EvidenceItem(msgspec.Struct, frozen=True, kw_only=True):
    """One evidence item as the output states it."""

    id: str
    """``E1``, ``E2``, ..."""
    quote: str = ""
    path: str = ""
    """The cited file as written (``""`` when the source is no file)."""
    start: int = 0
    end: int = 0
    source: str = ""
    """The cite as written, e.g. ``src/a.py:12-14``."""
    line: int = 0
    """0-based index of the item's first line in the output."""


class EvidenceCheck(msgspec.Struct, frozen=True, kw_only=True):
    """An item and its verdict; ``detail`` says why (shown in the report)."""

    item: EvidenceItem
    verdict: Verdict
    detail: str = ""


_ITEM = re.compile(
    r"""^\s*\|?\s*                       # a table row's leading pipe
        (?:[-*+]\s+|\d+[.)]\s+)?          # a list bullet or number
        (?:\*\*|__|\[)?                   # bold or a bracket
        (?P<id>E\d{1,2})\b                # E1..E99, as flows.report counts them
        (?:\*\*|__|\])?
        (?P<rest>.*)$""",
    re.VERBOSE,
)
_PATH = r"(?P<path>/?[\w.~+@-]+(?:/[\w.~+@-]+)*)"
_CITES = [
    re.compile(_PATH + r"(?::|#L)(?P<start>\d+)(?:\s*[-–—]\s*L?(?P<end>\d+)|:(?P<col>\d+))?(?!\d)"),
    re.compile(_PATH + r"[\s,]*\(?\s*(?:lines?|L)\s*(?P<start>\d+)(?:\s*[-–—]\s*(?P<end>\d+))?(?!\d)"),
]
_PATH_ONLY = re.compile(_PATH)
_CITE_TAIL = re.compile(r"(?::|#L|[\s,]*\(?\s*(?:lines?|L)\s*)\d")
_SOURCE_KEY = re.compile(r"\bsource\s*:\s*", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_QUOTED = re.compile(r'"(?P<a>[^"\n]+)"|“(?P<b>[^”\n]+)”|„(?P<c>[^“”\n]+)[“”]|«\s*(?P<d>[^»\n]+?)\s*»'
                     r"|``\s?(?P<e>[^\n]+?)\s?``|`(?P<f>[^`\n]+)`")
_FENCE = re.compile(r"^\s*(```|~~~)")
NOT_FILES = frozenset({"prompt", "input", "output", "question", "step", "command", "cmd", "url", "line",
                       "lines", "stdout", "stderr", "log"})
"""Words that come before ``:N`` in sources that are not files (``prompt:3``)."""
_SMART = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'", "\u00a0": " "})
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.|…)\s*")


def parse(output: str) -> list[EvidenceItem]:
    """Every evidence item of ``output``, in order (a repeated id is kept each time)."""
    lines = output.split("\n")
    items: list[EvidenceItem] = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            fenced = not fenced
            i += 1
            continue
        m = None if fenced else _ITEM.match(line)
        if m is None or not _starts_item(m.group("rest")):
            i += 1
            continue
        more, after = _continuation(lines, i + 1)
        items.append(_item(m.group("id"), m.group("rest"), more, i))
        i = after
    return items


def _starts_item(rest: str) -> bool:
    # `E1: ...`, `E1 (src...)`, `E1 — ...`, `E1 | ...`; not prose like "E1 and E2 show".
    stripped = rest.lstrip()
    return not stripped or stripped[0] in ":.)-–—(|" or _SOURCE_KEY.match(stripped) is not None


def _continuation(lines: Sequence[str], start: int) -> tuple[list[str], int]:
    """Lines that belong to the item above: a blockquote or a fenced block right under it."""
    out: list[str] = []
    i = start
    if i < len(lines) and _FENCE.match(lines[i]):
        j = i + 1
        while j < len(lines) and not _FENCE.match(lines[j]):
            j += 1
        return ["```", *lines[i + 1 : j]], min(j + 1, len(lines))
    while i < len(lines) and lines[i].lstrip().startswith(">"):
        out.append(lines[i].lstrip()[1:].removeprefix(" "))
        i += 1
    return out, i


def _item(item_id: str, rest: str, more: list[str], line: int) -> EvidenceItem:
    text = _URL.sub(lambda m: " " * len(m.group(0)), rest)
    quotes: list[str] = []
    # The text without its quotes (so a quote holding "a.py:3" is no cite),
    # with backticked cites unwrapped: `a.py`:3 reads as a.py:3.
    parts: list[str] = []
    at = 0
    for q in _QUOTED.finditer(text):
        inner = next(g for g in q.groups() if g is not None)
        parts.append(text[at : q.start()])
        at = q.end()
        if _is_cite(inner.strip()) or (_PATH_ONLY.fullmatch(inner) and _CITE_TAIL.match(text, q.end())):
            parts.append(inner)
        else:
            quotes.append(inner)
            parts.append(" ")
    parts.append(text[at:])
    cite = _find_cite("".join(parts))
    path, start, end, source = cite if cite else ("", 0, 0, "")
    quote = next((t for t in quotes if t.strip() and t.strip() != path), "")
    if not quote and more:
        quote = "\n".join(more[1:] if more[0] == "```" else more)
    return EvidenceItem(id=item_id, quote=quote.strip(), path=path, start=start, end=end, source=source,
                        line=line)


def _is_cite(text: str) -> bool:
    return any(c.fullmatch(text) for c in _CITES)


def _find_cite(text: str) -> tuple[str, int, int, str] | None:
    key = _SOURCE_KEY.search(text)
    regions = [text[key.end():], text] if key else [text]
    for region in regions:
        found = [m for c in _CITES for m in c.finditer(region)]
        found = [m for m in found if m.group("path").lower() not in NOT_FILES]
        if found:
            m = min(found, key=lambda m: m.start())
            start = int(m.group("start"))
            end = int(m.group("end")) if m.group("end") else start
            return m.group("path"), start, end, m.group(0).strip()
    return None


def normalise(text: str) -> str:
    """Whitespace runs as one space, smart quotes as straight ones, trimmed."""
    return " ".join(text.translate(_SMART).split())


def quote_in(quote: str, text: str) -> bool:
    """Whether ``quote`` occurs in ``text``, whitespace-normalised.

    A quote a model shortened with ``...`` or ``…`` matches when its pieces
    occur in that order (the literal text is tried first: ``...`` is also
    code).
    """
    q, t = normalise(quote), normalise(text)
    if not q:
        return False
    if q in t:
        return True
    if not _ELLIPSIS.search(q):
        return False
    pieces = [p for p in _ELLIPSIS.split(q) if p]
    at = 0
    for piece in pieces:
        at = t.find(piece, at)
        if at < 0:
            return False
        at += len(piece)
    return True


def counts(checks: Iterable[EvidenceCheck]) -> dict[Verdict, int]:
    """How many items got each verdict (every verdict present, zeros included)."""
    out = dict.fromkeys(Verdict, 0)
    for check in checks:
        out[check.verdict] += 1
    return out


def summary_line(checks: Sequence[EvidenceCheck]) -> str:
    """The line the report puts at its top: ``Evidence: 3 verified, 1 not found, 2 unchecked``."""
    c = counts(checks)
    return "Evidence: " + ", ".join(f"{c[v]} {v.label}" for v in Verdict) + f" (of {len(checks)} items)"


def annotate(output: str, checks: Sequence[EvidenceCheck]) -> str:
    """``output`` with each checked item's first line ending in its verdict, e.g. ``[verified]``."""
    lines = output.split("\n")
    for check in checks:
        i = check.item.line
        if 0 <= i < len(lines):
            why = f": {check.detail}" if check.detail and check.verdict is not Verdict.VERIFIED else ""
            lines[i] = f"{lines[i]} **[{check.verdict.label}{why}]**"
    return "\n".join(lines)
