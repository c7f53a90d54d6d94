"""The task events (DESIGN §12) as one import, and the closed sets only the lifecycle uses.

The events themselves live in ``flows/events.py``'s tagged union (the codec
decodes them like every run event); they are re-exported here so the task
modules read from one place. Every git effect is an event, and
each effect follows the same two-step rule so that a crash can always be
repaired by reading git (``flows/tasks/reconcile.py``):

1. the **intent** is appended first (``TaskPhaseChanged`` to ``worktree``,
   ``merge``, ``cleanup``);
2. git acts;
3. the **fact** is appended (``TaskWorktreeCreated``, ``TaskMerged``,
   ``TaskCleanedUp``), carrying the shas git answered with.

An intent without its fact after a restart means "git may or may not have
done it": reconciliation looks and appends the fact or undoes the half.
"""

from __future__ import annotations

from enum import Enum

from flows.events import (
    Answer,
    Event,
    GitCompensated,
    IntegrationCreated,
    IntegrationRemoved,
    LandingRefused,
    NotifyLevel,
    Phase,
    RunLanded,
    TaskAborted,
    TaskAnswered,
    TaskBlocked,
    TaskChecked,
    TaskCleanedUp,
    TaskCommitted,
    TaskDone,
    TaskEvent,
    TaskFailed,
    TaskMergeConflicted,
    TaskMerged,
    TaskMessaged,
    TaskNotified,
    TaskPhaseChanged,
    TaskRebased,
    TaskReviewed,
    TasksPlanned,
    TaskStarted,
    TaskWorktreeCreated,
)


class TaskStatus(str, Enum):
    """A task's lifecycle status (seed 001): exactly one at any time."""

    NEW_QUEUED = "new_queued"
    """In the run's graph, not yet taken into the plan."""
    PLANNED_QUEUED = "planned_queued"
    """In the plan, waiting; the :class:`WaitReason` says for what."""
    INPROGRESS = "inprogress"
    """Accepted: an attempt is under way in one :class:`Phase`."""
    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"
    """The agent took the Safe Exit (or the review rounds ran out): a person decides."""
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        """Whether nothing moves the task any more (blocked waits for a person, so it is not)."""
        return self in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.ABORTED)


class WaitReason(str, Enum):
    """Why a planned task does not run (shown in ``/api/plan``)."""

    DEPS = "deps"
    """Dependencies not done yet (named in ``waiting_on``); they can still finish."""
    CAPACITY = "capacity"
    """Ready, but every slot the run may use is taken."""
    REVIEW = "review"
    """The reviewer rejected it ``max_rounds`` times: a person reviews (retry with context, skip, abort)."""
    BLOCKED = "blocked"
    """A dependency is blocked and waits for a person (named in ``waiting_on``)."""


TASK_EVENTS: tuple[type[Event], ...] = (
    TasksPlanned, TaskStarted, TaskPhaseChanged, TaskWorktreeCreated, TaskCommitted, TaskChecked,
    TaskReviewed, TaskMerged, TaskMergeConflicted, TaskRebased, TaskMessaged, TaskNotified, TaskBlocked,
    TaskAnswered, TaskFailed, TaskDone, TaskAborted, TaskCleanedUp, IntegrationCreated, GitCompensated,
    RunLanded, LandingRefused, IntegrationRemoved,
)
"""Every task event (all in ``flows.events.RunEvent``; a test checks that they round-trip)."""

__all__ = ['TASK_EVENTS', 'Answer', 'Event', 'GitCompensated', 'IntegrationCreated', 'IntegrationRemoved', 'LandingRefused', 'NotifyLevel', 'Phase', 'RunLanded', 'TaskAborted', 'TaskAnswered', 'TaskBlocked', 'TaskChecked', 'TaskCleanedUp', 'TaskCommitted', 'TaskDone', 'TaskEvent', 'TaskFailed', 'TaskMergeConflicted', 'TaskMerged', 'TaskMessaged', 'TaskNotified', 'TaskPhaseChanged', 'TaskRebased', 'TaskReviewed', 'TaskStarted', 'TaskStatus', 'TaskWorktreeCreated', 'TasksPlanned', 'WaitReason']
