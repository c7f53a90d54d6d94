"""The project's allow-list: which argv the write tools' ``run`` and a task's checks may start.

Rule (one home, used by the ``run`` tool, by task checks and by ``baton
tasks plan``): an allow entry is an **argv prefix, word by word**. The entry
``["pytest"]`` allows ``pytest``, ``pytest -q tests/unit`` and any other argv
whose first word is exactly ``pytest``; the entry ``["make", "test"]`` allows
``make test`` and ``make test V=1`` but not ``make`` or ``make install``.

Why words and not text prefixes: ``pytest`` as a text prefix would allow
``pytest-evil`` and ``make test`` would allow ``make testdata-wipe``. Why
exact words and no path lookup: ``./pytest``, ``/tmp/pytest`` or
``python -m pytest`` are different programs from what the person allowed;
they must be allowed by name. There is no wildcard and no shell: an argv is
started as it is, so ``;``, ``&&``, ``$(...)`` and globs are plain
arguments with no meaning.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from flows.errors import BatonError

Argv = tuple[str, ...]


class BadArgv(BatonError, ValueError):
    """A command is not a usable argv (empty, a non-string word, a NUL byte, unbalanced quotes)."""


def as_argv(value: object, *, what: str = "command") -> Argv:
    """A command as an argv tuple: a list of words as is, a string split like a shell would (no shell runs).

    ``"pytest -q 'tests/a b'"`` becomes ``("pytest", "-q", "tests/a b")``.
    Raises :class:`BadArgv` naming what is wrong.
    """
    if isinstance(value, str):
        try:
            words = shlex.split(value, comments=False, posix=True)
        except ValueError as exc:  # "No closing quotation"
            raise BadArgv(f"{what} {value!r} cannot be split into words: {exc}") from None
    elif isinstance(value, (list, tuple)):
        words = list(value)
    else:
        raise BadArgv(f"{what} must be a list of words or a string, got {type(value).__name__}")
    if not words:
        raise BadArgv(f"{what} is empty")
    for word in words:
        if not isinstance(word, str):
            raise BadArgv(f"{what} {words!r}: every word is a string, got {type(word).__name__} {word!r}")
        if "\0" in word:
            raise BadArgv(f"{what} {words!r}: a word holds a NUL byte")
    if not words[0]:
        raise BadArgv(f"{what} {words!r}: the program name is empty")
    return tuple(words)


def allowed(argv: Sequence[str], allow: Sequence[Sequence[str]]) -> bool:
    """Whether some entry of ``allow`` is a word-by-word prefix of ``argv`` (see the module docstring)."""
    words = tuple(argv)
    return bool(words) and any(0 < len(entry) <= len(words) and words[: len(entry)] == tuple(entry)
                               for entry in allow)


def describe(allow: Sequence[Sequence[str]]) -> str:
    """The allow-list as a person reads it: ``'pytest', 'make test'`` (or ``nothing``)."""
    return ", ".join(repr(shlex.join(entry)) for entry in allow) or "nothing (the project allows no command)"
