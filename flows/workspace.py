"""The workspace a run is pinned to (DESIGN §11): a project's root at one commit.

Its own module because both the run events (``RunLaunched`` pins one) and the
project book (``flows.projects``, which builds on the events) need it: here
it depends on neither.
"""

from __future__ import annotations

import msgspec


class Workspace(msgspec.Struct, frozen=True, kw_only=True):
    """What a run is pinned to: a project's root at one commit (``RunLaunched``)."""

    project_id: str
    root: str
    commit: str
    """HEAD's full sha when the run was launched."""
    branch: str = ""
    """The checked-out branch; ``""`` when HEAD was detached."""
    dirty: bool = False
    """The work tree differed from ``commit`` (changes or untracked files): what
    the tools read may not all be in the commit evidence is checked against."""
