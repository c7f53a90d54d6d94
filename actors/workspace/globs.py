"""Glob patterns over workspace paths, as models write them.

Models write globs the way ripgrep and .gitignore read them, so that is the
meaning here (``fnmatch`` would let ``*`` cross ``/`` and has no ``**``):

- a glob without ``/`` matches a file's name at any depth: ``*.py``;
- a glob with ``/`` matches the whole path: ``src/**/*.py``, where ``**``
  is any number of directories (none included) and ``*`` stays inside one;
- ``?`` one character, ``[abc]`` / ``[!abc]`` a class, ``{py,md}`` choices;
- a leading ``./`` or ``/`` is ignored (the root is the only anchor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actors.errors import ActorsError

_BRACES = re.compile(r"\{([^{}]*)\}")
_MAX_EXPANSIONS = 64


class BadGlob(ActorsError, ValueError):
    """A glob that cannot be read (an unclosed ``[``, too many ``{}`` choices)."""


@dataclass(frozen=True)
class Glob:
    """A compiled glob; :meth:`matches` takes a ``/``-separated relative path."""

    text: str
    regex: re.Pattern[str]
    basename_only: bool

    def matches(self, path: str) -> bool:
        """Whether ``path`` (relative, ``/``-separated) matches."""
        subject = path.rpartition("/")[2] if self.basename_only else path
        return self.regex.fullmatch(subject) is not None


def compile_glob(text: str) -> Glob:
    """Compile ``text``; raises :class:`BadGlob` naming what is wrong."""
    pattern = text.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    pattern = pattern.lstrip("/")
    if not pattern:
        raise BadGlob(f"glob {text!r} is empty")
    alternatives = _expand_braces(pattern, text)
    regex = "|".join(f"(?:{_translate(alt, text)})" for alt in alternatives)
    return Glob(text=text, regex=re.compile(regex, re.DOTALL), basename_only="/" not in pattern)


def _expand_braces(pattern: str, text: str) -> list[str]:
    out = [pattern]
    while any(_BRACES.search(p) for p in out):
        nxt: list[str] = []
        for p in out:
            m = _BRACES.search(p)
            if m is None:
                nxt.append(p)
                continue
            nxt += [p[: m.start()] + choice + p[m.end():] for choice in m.group(1).split(",")]
        out = nxt
        if len(out) > _MAX_EXPANSIONS:
            raise BadGlob(f"glob {text!r} expands to more than {_MAX_EXPANSIONS} patterns")
    return out


def _translate(pattern: str, text: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                before_ok = i == 0 or pattern[i - 1] == "/"
                j = i + 2
                if before_ok and j < n and pattern[j] == "/":
                    out.append("(?:[^/]*/)*")  # `**/`: zero or more directories
                    i = j + 1
                    continue
                if before_ok and j == n:
                    out.append(".*")  # trailing `**`: everything below
                    i = j
                    continue
                out.append("[^/]*")  # `a**b` is just `a*b`
                i = j
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if j < 0:
                raise BadGlob(f"glob {text!r} has an unclosed '['")
            body = pattern[i + 1 : j]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
