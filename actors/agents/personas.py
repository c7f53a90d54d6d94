"""Persona system prompts: one markdown file each in ``flows/personas/``.

The files ship as package data of ``flows.personas`` and are read through
:mod:`importlib.resources`, so they are found in a wheel as in a checkout.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_PACKAGE = "flows.personas"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class UnknownPersona(KeyError):
    """No persona file of that name ships with baton."""

    def __str__(self) -> str:
        # KeyError would print the repr of its argument: show the sentence.
        return str(self.args[0]) if self.args else "unknown persona"


def persona_names() -> frozenset[str]:
    """The names of every persona file that ships (``<name>.md``)."""
    root = resources.files(_PACKAGE)
    return frozenset(
        entry.name[: -len(".md")] for entry in root.iterdir()
        if entry.name.endswith(".md") and entry.is_file()
    )


@functools.cache
def persona_text(name: str) -> str:
    """The system prompt of persona ``name``.

    Raises :class:`UnknownPersona` (a ``KeyError``) naming the known personas
    when no such file exists; names are plain words, never paths.
    """
    if _NAME.fullmatch(name):
        entry = resources.files(_PACKAGE).joinpath(f"{name}.md")
        if entry.is_file():
            return entry.read_text(encoding="utf-8")
    known = ", ".join(sorted(persona_names())) or "none"
    raise UnknownPersona(
        f"unknown persona {name!r}: no flows/personas/{name}.md (known personas: {known})"
    )
