"""The errors of the ``baton`` command line itself, apart from what raises them (so ``--help`` stays light)."""

from __future__ import annotations


class Interrupted(Exception):
    """Ctrl-C while following a run a server drives: the message says it goes on there."""


class CliError(Exception):
    """A command cannot go on; ``code`` is the exit status, the message one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RunIdError(LookupError):
    """A run id (or prefix) matches no run, or more than one; the message lists the candidates."""
