"""Workspaces: registered git repositories that agents may read (DESIGN §11).

- :mod:`~actors.workspace.git`: git through argv lists, never a shell;
- :mod:`~actors.workspace.confine`: every path rule (root, symlinks, ``.git``,
  binary, size), opened without following a symlink;
- :mod:`~actors.workspace.tools`: the five read-only tools, their schemas,
  validation and capped results;
- :mod:`~actors.workspace.projects`: the project book (events) and pinning;
- :mod:`~actors.workspace.evidence`: checking cited evidence against the
  pinned commit.
"""

from actors.workspace.confine import Confinement
from actors.workspace.errors import (
    BadRevision,
    GitError,
    GitTimeout,
    GitUnavailable,
    NoCommit,
    NotARepository,
    PathRefused,
    Rule,
    WorkspaceError,
)
from actors.workspace.git import Git
from actors.workspace.projects import ProjectBook, pin, repository_root
from actors.workspace.results import Outcome, ToolResult
from actors.workspace.tools import (
    TOOL_SCHEMA_HASH,
    TOOL_SCHEMAS,
    Caps,
    Toolbox,
    ToolName,
)

__all__ = [
    "TOOL_SCHEMAS",
    "TOOL_SCHEMA_HASH",
    "BadRevision",
    "Caps",
    "Confinement",
    "Git",
    "GitError",
    "GitTimeout",
    "GitUnavailable",
    "NoCommit",
    "NotARepository",
    "Outcome",
    "PathRefused",
    "ProjectBook",
    "Rule",
    "ToolName",
    "ToolResult",
    "Toolbox",
    "WorkspaceError",
    "pin",
    "repository_root",
]
