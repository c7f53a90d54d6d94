"""The errors of the ``baton`` command line itself, apart from what raises them (so ``--help`` stays light)."""

from __future__ import annotations

from typing import Any


class Interrupted(Exception):
    """Ctrl-C while following a run a server drives: the message says it goes on there."""


class CliError(Exception):
    """A command cannot go on; ``code`` is the exit status, the message one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RunIdError(LookupError):
    """A run id (or prefix) matches no run, or more than one; the message lists the candidates."""


class ServerError(Exception):
    """The server refused a request or could not be reached; ``code`` is the CLI's exit status for it.

    The message is the problem's ``detail``: the same words the command
    would have printed had it run in this process.
    """

    def __init__(self, code: int, message: str, *, status: int = 0, problem: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.problem = problem or {}
