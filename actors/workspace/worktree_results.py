"""What the git operations of a task run answer (:class:`~actors.workspace.worktrees.RunWorktrees`).

Frozen values, no I/O: the integration and task worktrees made, a commit,
a merge's outcome (merged, nothing to merge, or a conflict), a hand-back,
a cleanup and a landing. The actors turn them into the run's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Integration:
    """The run's integration branch and worktree."""

    branch: str
    path: Path
    base: str
    created: bool
    """False when an earlier call (before a crash) had already made it."""


@dataclass(frozen=True)
class TaskWorktree:
    """A task's worktree and branch."""

    task_id: str
    branch: str
    path: Path
    base: str
    """The integration head the branch was made from, or the kept branch's head when reused."""
    reused: bool


@dataclass(frozen=True)
class Commit:
    """A commit on a task branch, with what it changed."""

    sha: str
    message: str
    files: list[str]
    insertions: int
    deletions: int


@dataclass(frozen=True)
class Merged:
    """The task is in the integration branch."""

    task_head: str
    merge_commit: str
    already: bool = False
    """It was already there (merged before a crash, or re-asked): nothing was merged now."""
    repaired: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NothingToMerge:
    """The task branch has no commit the integration branch lacks (the task changed nothing)."""

    task_head: str


@dataclass(frozen=True)
class Conflict:
    """The merge stopped on conflicts; it was aborted, the integration head is unchanged, the branch kept."""

    files: list[str]
    integration_head: str
    repaired: list[str] = field(default_factory=list)


MergeOutcome = Merged | NothingToMerge | Conflict


@dataclass(frozen=True)
class Handback:
    """A task branch brought onto the integration head for its implementor."""

    onto: str
    head: str
    conflicts: list[str]
    """Non-empty: these files hold conflict markers (a merge under way in the task worktree)."""


@dataclass(frozen=True)
class Cleanup:
    """What :meth:`~actors.workspace.worktrees.RunWorktrees.remove_task` did."""

    worktree_removed: bool
    branch_deleted: bool
    branch_head: str
    salvaged: str = ""


@dataclass(frozen=True)
class Landing:
    """The result of landing the integration branch on a target branch."""

    landed: bool
    target: str
    commit: str = ""
    reason: str = ""
