"""The project book: register, list and pin projects, as events in the ``projects`` stream.

The shell around :mod:`flows.projects`: load the stream, check the disk and
git (a project must be the top level of a git work tree), decide, append with
the expected version. A conflicting append (two admins at once) is retried on
the fresh stream, so neither registration is lost and neither is doubled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from actors.runlog import decode, new_events
from actors.workspace.errors import NotARepository
from actors.workspace.git import DEFAULT_TIMEOUT_S, Git
from eventstore import ConcurrencyError, EventStore
from flows.events import Event
from flows.projects import (
    PROJECT_CODEC,
    PROJECTS_STREAM,
    Project,
    ProjectRegistry,
    evolve,
    fold,
    register,
    remove,
)
from flows.workspace import Workspace

_RETRIES = 3
T = TypeVar("T")


def pin(project: Project, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Workspace:
    """What a run launched now would be pinned to: HEAD's sha, the branch, the dirty flag.

    Raises :class:`~actors.workspace.errors.NotARepository` when the root is
    gone or no longer a work tree, and
    :class:`~actors.workspace.errors.NoCommit` when it has no commit.
    """
    git = Git(Path(project.root), timeout_s=timeout_s)
    git.toplevel()
    return Workspace(project_id=project.project_id, root=project.root, commit=git.head(),
                     branch=git.branch(), dirty=git.is_dirty())


def repository_root(path: str | Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The real path of the work tree whose top level is ``path``.

    A subdirectory of a repository is refused rather than widened to the
    whole repository: the person meant that directory, and the tools would
    read beyond it.
    """
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise NotARepository(str(path), "no such directory")
    top = Git(Path(real), timeout_s=timeout_s).toplevel()
    if str(top) != real:
        raise NotARepository(str(path), f"it is a directory inside the repository at {top}; "
                                        "give the repository's top level")
    return real


class ProjectBook:
    """Projects as the ``projects`` stream of an event store."""

    def __init__(self, store: EventStore, now: Callable[[], float],
                 git_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Read and append through ``store``; stamp events with ``now()``."""
        self._store = store
        self._now = now
        self._git_timeout_s = git_timeout_s

    def registry(self) -> ProjectRegistry:
        """The registry folded from the stream as it is now."""
        return fold(decode(rec, PROJECT_CODEC) for rec in self._store.read_stream(PROJECTS_STREAM))

    def projects(self) -> list[Project]:
        """Every registered project, by id."""
        return sorted(self.registry().projects.values(), key=lambda p: p.project_id)

    def get(self, project_id: str) -> Project:
        """One project; raises :class:`~flows.projects.UnknownProject` naming the known ones."""
        return self.registry().get(project_id)

    def add(self, project_id: str, path: str | Path, *, allow: Sequence[Sequence[str]] = (),
            by: str = "") -> Project:
        """Register the git work tree at ``path`` as ``project_id``; return the project.

        Raises :class:`~actors.workspace.errors.NotARepository` (nothing is
        appended) and the errors of :func:`flows.projects.register`.
        """
        root = repository_root(path, timeout_s=self._git_timeout_s)
        return self._decide_and_append(
            lambda reg: register(reg, project_id, root, allow=allow, by=by, now=self._now()),
            lambda reg, _: reg.get(project_id))

    def remove(self, project_id: str, *, by: str = "", reason: str = "") -> int:
        """Unregister ``project_id``; the position of its ProjectRemoved. Raises
        :class:`~flows.projects.UnknownProject` (nothing appended). Runs pinned to it keep their pin."""
        return self._decide_and_append(
            lambda reg: remove(reg, project_id, by=by, reason=reason, now=self._now()),
            lambda reg, position: position)

    def pin(self, project_id: str) -> Workspace:
        """The workspace a run of ``project_id`` launched now is pinned to."""
        return pin(self.get(project_id), timeout_s=self._git_timeout_s)

    def _decide_and_append(self, decide: Callable[[ProjectRegistry], list[Event]],
                           after: Callable[[ProjectRegistry, int], T]) -> T:
        """Load, decide, append with the expected version; on a conflict, again. ``after`` gets the
        registry then and the position of the last event appended (0: none was)."""
        conflict: ConcurrencyError | None = None
        for _ in range(_RETRIES):
            registry = self.registry()
            events = decide(registry)
            if not events:
                return after(registry, 0)
            new = new_events(events, {}, PROJECT_CODEC)
            try:
                recorded = self._store.append(PROJECTS_STREAM, new, expected_version=registry.version)
            except ConcurrencyError as exc:
                conflict = exc  # someone else appended: decide again on what they wrote
                continue
            for event in events:
                registry = evolve(registry, event)
            return after(registry, recorded[-1].position)
        assert conflict is not None
        raise conflict
