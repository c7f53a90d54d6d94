"""Persona system prompts: one markdown file each in ``flows/personas/``, and those a person adds.

The files ship as package data of ``flows.personas`` and are read through
:mod:`importlib.resources`, so they are found in a wheel as in a checkout.
Personas of a person's own (``BATON_PERSONAS``, a folder of ``NAME.md``
files in the same format) are read by the outside layer and handed in
through :func:`add_personas`; they sit beside the shipped ones and never
replace one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from importlib import resources

from actors.errors import ActorsError
from flows import personas as catalogue

_PACKAGE = "flows.personas"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_added: dict[str, str] = {}


class UnknownPersona(ActorsError, KeyError):
    """No persona of that name: none ships with baton, and none was added (BATON_PERSONAS)."""

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


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a persona: lowercase letters, digits and dashes (never a path)."""
    return bool(_NAME.fullmatch(name))


def add_personas(texts: Mapping[str, str]) -> None:
    """Add personas of a person's own (name -> system prompt) for this process.

    Flow validation learns the names (``flows.personas.add``). ValueError
    for a shipped name (they are never replaced) or a name that is not a
    plain word.
    """
    bad = sorted(name for name in texts if not valid_name(name))
    if bad:
        raise ValueError(f"persona name {bad[0]!r}: use lowercase letters, digits and dashes")
    catalogue.add(texts)
    _added.update(texts)


@functools.cache
def _shipped_text(name: str) -> str | None:
    entry = resources.files(_PACKAGE).joinpath(f"{name}.md")
    return entry.read_text(encoding="utf-8") if entry.is_file() else None


def persona_text(name: str) -> str:
    """The system prompt of persona ``name`` (an added one, or a shipped one).

    Raises :class:`UnknownPersona` (a ``KeyError``) naming the known personas
    when there is no such persona; names are plain words, never paths.
    """
    if name in _added:
        return _added[name]
    if _NAME.fullmatch(name):
        text = _shipped_text(name)
        if text is not None:
            return text
    known = ", ".join(sorted(persona_names() | set(_added))) or "none"
    raise UnknownPersona(
        f"unknown persona {name!r}: no flows/personas/{name}.md and none added with BATON_PERSONAS "
        f"(known personas: {known})"
    )
