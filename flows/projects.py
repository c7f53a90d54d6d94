"""Projects and workspaces (DESIGN §11): registered git repositories, pinned per run.

Pure: events, a fold and the decisions, no disk and no git. The shell that
checks a path really is a git work tree and appends the events is
``actors.workspace.projects``.

Why projects are events: registering a repository grants models read access
to it, so who added which path, and when, must be as auditable as a run. They
live in their own stream (:data:`PROJECTS_STREAM`); the registry is its fold.
Why here and not in ``flows/events.py``: these are not run events, the run
projector must not see them, and the run codec does not need to know them.
:class:`Workspace` (what ``RunLaunched`` pins) lives in ``flows.workspace``
and is re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import msgspec

from flows.codec import EventCodec
from flows.errors import BatonError
from flows.events import Event
from flows.workspace import Workspace  # noqa: F401  (re-exported: what a run pins)

PROJECTS_STREAM = "projects"
"""The one stream holding every project's events."""

PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""Lowercase letters, digits, ``.``, ``_``, ``-``; 1-64 long; it appears in URLs and CLI lines."""


class ProjectError(BatonError, ValueError):
    """Root of the project decisions' errors; the message says what to change."""


class InvalidProjectId(ProjectError):
    """A project id that is not a short lowercase name."""

    def __init__(self, project_id: str) -> None:
        """Name the id and the rule."""
        self.project_id = project_id
        super().__init__(
            f"invalid project id {project_id!r}: use 1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class ProjectExists(ProjectError):
    """The id is already registered for another root."""

    def __init__(self, project_id: str, root: str) -> None:
        """Name the id and where it points now."""
        self.project_id = project_id
        self.root = root
        super().__init__(f"project {project_id!r} is already registered at {root}; remove it first")


class UnknownProject(ProjectError, KeyError):
    """No project of that id is registered (a launch naming it is refused: 422)."""

    def __init__(self, project_id: str, known: Sequence[str] = ()) -> None:
        """Name the id and the ones that exist."""
        self.project_id = project_id
        self.known = sorted(known)
        names = ", ".join(self.known) or "none"
        super().__init__(f"unknown project {project_id!r} (registered projects: {names})")

    def __str__(self) -> str:
        # KeyError would print the repr of its argument: show the sentence.
        return str(self.args[0])


class ProjectNotFound(UnknownProject):
    """The project a URL path names is not registered (404: the resource is missing, not a field of a body)."""


class Project(msgspec.Struct, frozen=True, kw_only=True):
    """A registered repository."""

    project_id: str
    root: str
    """The work tree's top level, absolute, symlinks resolved."""
    allow: list[list[str]] = []
    """Commands the write tools' ``run`` may start (§12): argv prefixes, e.g. ``[["pytest"]]``."""
    registered_by: str = ""
    registered_at: float = 0.0


class ProjectRegistered(Event, frozen=True):
    """A repository became readable by runs under ``project_id``."""

    project_id: str
    root: str
    allow: list[list[str]] = []
    by: str = ""


class ProjectRemoved(Event, frozen=True):
    """A project was unregistered; runs pinned to it keep their pin."""

    project_id: str
    by: str = ""
    reason: str = ""


ProjectEvent = ProjectRegistered | ProjectRemoved
PROJECT_EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in (ProjectRegistered, ProjectRemoved)}
PROJECT_CODEC = EventCodec(PROJECT_EVENT_TYPES)
"""How the ``projects`` stream is read (``flows.codec``; no upcaster yet)."""


class ProjectRegistry(msgspec.Struct, frozen=True):
    """Every registered project, and the stream version it was folded from."""

    projects: dict[str, Project] = {}
    version: int = 0

    def get(self, project_id: str) -> Project:
        """The project ``project_id``; raises :class:`UnknownProject` naming the known ones."""
        try:
            return self.projects[project_id]
        except KeyError:
            raise UnknownProject(project_id, list(self.projects)) from None


def evolve(registry: ProjectRegistry, event: Event) -> ProjectRegistry:
    """The registry after one event of the projects stream (unknown events count, change nothing)."""
    projects = registry.projects
    if isinstance(event, ProjectRegistered):
        project = Project(project_id=event.project_id, root=event.root, allow=event.allow,
                          registered_by=event.by, registered_at=event.at)
        projects = {**projects, event.project_id: project}
    elif isinstance(event, ProjectRemoved):
        projects = {k: v for k, v in projects.items() if k != event.project_id}
    return ProjectRegistry(projects=projects, version=registry.version + 1)


def fold(events: Iterable[Event]) -> ProjectRegistry:
    """The registry from the projects stream's events, in order."""
    registry = ProjectRegistry()
    for event in events:
        registry = evolve(registry, event)
    return registry


def register(registry: ProjectRegistry, project_id: str, root: str, *,
             allow: Sequence[Sequence[str]] = (), by: str = "", now: float = 0.0) -> list[Event]:
    """The events that register ``root`` (already checked to be a work tree) as ``project_id``.

    Registering the same id for the same root again decides nothing (an
    idempotent retry); another root under a taken id is refused.
    """
    if not PROJECT_ID.fullmatch(project_id):
        raise InvalidProjectId(project_id)
    allowed = [list(argv) for argv in allow]
    for argv in allowed:
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise ProjectError(f"project {project_id!r}: every allowed command is a non-empty argv list, "
                               f"got {argv!r}")
    current = registry.projects.get(project_id)
    if current is not None:
        if current.root == root and current.allow == allowed:
            return []
        raise ProjectExists(project_id, current.root)
    return [ProjectRegistered(project_id=project_id, root=root, allow=allowed, by=by, at=now)]


def remove(registry: ProjectRegistry, project_id: str, *, by: str = "", reason: str = "",
           now: float = 0.0) -> list[Event]:
    """The events that unregister ``project_id``; raises :class:`UnknownProject`."""
    registry.get(project_id)
    return [ProjectRemoved(project_id=project_id, by=by, reason=reason, at=now)]
