"""Every error of the workspace layer, rooted in :class:`WorkspaceError`.

Each one carries what a person (or a model reading a tool error) needs to act:
the path as it was given, the rule that refused it, the git command that
failed and what git said. The HTTP layer will map :class:`NotARepository`
and :class:`UnknownProject` to one problem+json response each.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from actors.errors import ActorsError


class WorkspaceError(ActorsError):
    """Root of the workspace layer's errors."""


class Rule(str, Enum):
    """Why a path was refused; the value is the name a tool error shows.

    One name per rule so that a model, a person reading the log and a test can
    tell an escape attempt (``outside-root``) from an honest miss
    (``not-found``).
    """

    ABSOLUTE_PATH = "absolute-path"
    OUTSIDE_ROOT = "outside-root"
    SYMLINK_OUT = "symlink-out"
    GIT_DIR = "git-dir"
    BINARY = "binary"
    TOO_LARGE = "too-large"
    NOT_FOUND = "not-found"
    NOT_A_FILE = "not-a-file"
    NOT_A_DIRECTORY = "not-a-directory"
    INVALID_PATH = "invalid-path"
    SYMLINK_WRITE = "symlink-write"


class PathRefused(WorkspaceError):
    """A tool path broke a confinement rule; nothing behind it was read."""

    def __init__(self, rule: Rule, path: str, detail: str = "") -> None:
        """Name the rule and the path exactly as the caller gave it."""
        self.rule = rule
        self.path = path
        self.detail = detail
        why = f": {detail}" if detail else ""
        super().__init__(f"{rule.value}: {path!r} refused{why}")


class GitError(WorkspaceError):
    """A git command failed; the message has the command, where, and git's words."""

    def __init__(self, argv: Sequence[str], cwd: str, returncode: int | None, stderr: str,
                 hint: str = "") -> None:
        """Keep the argv (never a shell line), the directory and what git printed."""
        self.argv = list(argv)
        self.cwd = cwd
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.hint = hint
        # Only the subcommand and its arguments: the `-c` options baton adds
        # to every call are noise to a person reading the error.
        shown = " ".join(_after_options(self.argv))
        status = "timed out" if returncode is None else f"exit {returncode}"
        said = f": {self.stderr.splitlines()[-1]}" if self.stderr else ""
        tail = f" ({hint})" if hint else ""
        super().__init__(f"`git {shown}` failed in {cwd} ({status}){said}{tail}")


class GitTimeout(GitError):
    """A git command ran past its timeout and was killed."""


class GitUnavailable(GitError):
    """The git executable could not be started (not installed, not on PATH)."""


class NoCommit(GitError):
    """The repository has no commit yet, so there is nothing to pin."""


class BadRevision(GitError):
    """A revision given to a git tool does not name a commit of the repository."""


class RefMoved(GitError):
    """A ref was not where baton expected it (compare-and-swap update refused): someone else moved it."""


class BranchInUse(GitError):
    """A branch cannot be deleted or landed on: a worktree has it checked out."""


class LockBusy(WorkspaceError):
    """A git lock file is held by a live process; baton waits or reports, it never breaks a live lock."""

    def __init__(self, path: str, pids: Sequence[int]) -> None:
        """Name the lock and who holds it."""
        self.path = path
        self.pids = list(pids)
        super().__init__(f"{path} is held by process {', '.join(map(str, pids)) or '(unknown)'}; "
                         "wait for it to finish")


class CommitRefused(WorkspaceError):
    """A commit was not made: nothing changed, conflicts unresolved, or conflict markers left."""

    def __init__(self, reason: str, detail: str) -> None:
        """``reason`` is a short name (``nothing-to-commit``, ``unresolved-conflicts``, ``conflict-markers``)."""
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class NotARepository(WorkspaceError):
    """A project path is not (inside) a git work tree."""

    def __init__(self, path: str, detail: str = "") -> None:
        """Say which path and what to do about it."""
        self.path = path
        self.detail = detail
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"{path} is not a git repository{why}: give the path of a git work tree "
            f"(run `git init` there first if it should become one)"
        )


def _after_options(argv: Sequence[str]) -> list[str]:
    """The argv after ``git`` and its ``-c key=value`` options."""
    out = list(argv[1:]) if argv and argv[0].endswith("git") else list(argv)
    while len(out) >= 2 and out[0] == "-c":
        out = out[2:]
    return out
