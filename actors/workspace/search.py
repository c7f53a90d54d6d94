"""Regex search over a workspace's files, in pure Python.

The pattern is compiled once; each file is read once through the confining
:class:`~actors.workspace.confine.Walker` (binary, oversized and symlinked
files are skipped, never read past the sniff); a line matches when
``pattern.search(line)`` finds something, as in ``grep``.

Why a literal prefilter: most files of a large repository do not match, and
``bytes in bytes`` is a C substring scan while a Python regex pass over a
decoded file costs ten times more. When the pattern has a run of literal
characters every match must contain (``def handle_\\w+`` → ``def handle_``;
one per branch of ``foo|bar``), files whose bytes lack it are skipped before
decoding. The runs are taken from the regex's own parse tree, so they are
sound by construction; case-insensitive patterns and patterns with no
literal run are searched in full (~5x slower than ``git grep`` on the
benchmark). On the 50,000-file benchmark this keeps search within the target
against ``git grep`` (see docs/PERFORMANCE.md).

ripgrep is not used even where installed: matching it to Python's regex
dialect case by case would give two sets of results for one pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from actors.errors import ActorsError
from actors.workspace.confine import SNIFF_BYTES, Walker, is_text

try:  # the regex parser of the standard library (Python 3.11+: re._parser)
    from re import _constants as _sre_constants  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - another Python: no prefilter, same results
    _sre_parse = None
    _sre_constants = None

Searcher = Callable[..., "re.Match[str] | None"]
"""``regex.search``: (text) or (text, pos)."""

MAX_LINE_CHARS = 300
"""A matching line longer than this is shown cut (minified files have 100 kB lines)."""


class BadPattern(ActorsError, ValueError):
    """The search pattern is not a valid (Python) regular expression."""

    def __init__(self, pattern: str, why: str) -> None:
        """Name the pattern and what the regex parser said."""
        self.pattern = pattern
        self.why = why
        super().__init__(f"invalid regex {pattern!r}: {why}")


@dataclass(frozen=True)
class Matcher:
    """A compiled pattern and the literal runs every match contains one of (if known)."""

    pattern: str
    regex: re.Pattern[str]
    literals: tuple[bytes, ...] | None
    """Every match contains one of these (see :func:`required_literals`); None: no prefilter."""


@dataclass(frozen=True)
class Match:
    """One matching line."""

    path: str
    line: int
    text: str


@dataclass
class SearchOutcome:
    """The first ``max_matches`` matches and the counts behind the cut notice."""

    matches: list[Match] = field(default_factory=list)
    total: int = 0
    files_searched: int = 0
    files_skipped: int = 0
    """Binary, oversized, symlinked or vanished files that were not searched."""


def compile_matcher(pattern: str) -> Matcher:
    """Compile ``pattern``; raises :class:`BadPattern` with the parser's words."""
    if not pattern:
        raise BadPattern(pattern, "the pattern is empty")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise BadPattern(pattern, str(exc)) from None
    except (OverflowError, RecursionError) as exc:
        raise BadPattern(pattern, f"too complex ({type(exc).__name__})") from None
    return Matcher(pattern=pattern, regex=regex, literals=required_literals(pattern))


def required_literals(pattern: str) -> tuple[bytes, ...] | None:
    """Literal runs of which every match of ``pattern`` contains at least one.

    One run (the longest) for a plain sequence: ``def handle_\\w+`` gives
    ``(b"def handle_",)``; one per branch for an alternation at the top (or
    in a group that is the whole pattern): ``foo|bar\\d`` gives ``(b"foo",
    b"bar")``. Only unquantified LITERAL nodes of the parse count, so a match
    contains the run verbatim; none when a flag changes what a literal
    matches (IGNORECASE) or some branch has no run of two characters. Runs
    are UTF-8, as they appear in a file's bytes.
    """
    if _sre_parse is None or _sre_constants is None:
        return None
    try:
        tree = _sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - re.compile accepted it; no prefilter then
        return None
    if tree.state.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    return _literals_of(list(tree))


def _literals_of(items: list[Any]) -> tuple[bytes, ...] | None:
    if len(items) == 1:
        op, arg = items[0]
        if op is _sre_constants.BRANCH:
            runs = [_literals_of(list(branch)) for branch in arg[1]]
            if any(r is None for r in runs):
                return None
            return tuple(lit for r in runs for lit in r)  # type: ignore[union-attr]
        if op is _sre_constants.SUBPATTERN and not arg[1] and not arg[2]:
            return _literals_of(list(arg[3]))  # a group without flags around everything
    best: list[str] = []
    run: list[str] = []
    for op, arg in items:
        if op is _sre_constants.LITERAL:
            run.append(chr(arg))
            continue
        if len(run) > len(best):
            best = run
        run = []
    if len(run) > len(best):
        best = run
    return ("".join(best).encode("utf-8"),) if len(best) >= 2 else None


def search_files(walker: Walker, files: Iterable[str], matcher: Matcher, max_matches: int) -> SearchOutcome:
    """Search ``files`` (resolved relative paths, in order); keep the first ``max_matches``.

    Every match is counted, also past the cap, so the cut notice can say how
    many there were.
    """
    outcome = SearchOutcome()
    search = matcher.regex.search
    literals = matcher.literals
    one = literals[0] if literals is not None and len(literals) == 1 else None
    matches = outcome.matches
    whole_text_ok = _whole_text_prefilter_ok(matcher)
    for rel, data in walker.read_many(files):
        if data is None:
            outcome.files_skipped += 1
            continue
        # The text check comes after the (cheap) literal scan: a file without
        # the literal cannot match, binary or not, so most files never pay it.
        if literals is not None and (one not in data if one is not None
                                     else not any(lit in data for lit in literals)):
            outcome.files_searched += 1
            continue
        if not is_text(data[:SNIFF_BYTES]):
            outcome.files_skipped += 1
            continue
        outcome.files_searched += 1
        text = data.decode("utf-8", errors="replace")
        # One regex pass over the whole text settles most files that hold
        # the literal but no match; only files that match are split in lines.
        if whole_text_ok and search(text) is None:
            continue
        for number, line in _matching_lines(text, search):
            outcome.total += 1
            if len(matches) < max_matches:
                shown = line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [line cut]"
                matches.append(Match(rel, number, shown))
    return outcome


def _matching_lines(text: str, search: Searcher) -> Iterator[tuple[int, str]]:
    """Each matching line with its number (lines split on ``\\n``, as git counts them)."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if search(line) is not None:
            yield number, line


def _whole_text_prefilter_ok(matcher: Matcher) -> bool:
    """Whether "no match in the whole text" proves "no match in any line".

    A match inside one line is also a match in the whole text, except where
    the pattern looks at what surrounds the line: anchors that mean the
    start or end of the string (``^``, ``$``, ``\\A``, ``\\Z``), lookarounds
    and inline flags (``(?``) and explicit newlines (``\\n``). Patterns with
    any of them are searched line by line only.
    """
    p = matcher.pattern
    return not any(a in p for a in ("^", "$", "\\A", "\\Z", "(?", "\\n"))
