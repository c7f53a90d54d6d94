"""The task events proposed for ``flows/events.py`` (DESIGN §12), and the closed sets they use.

They live here until the integration step moves them into the run's tagged
union (``flows/events.py`` is being refactored by others now); they already
subclass its :class:`~flows.events.Event`, so the move is a cut and paste
plus their registration in the codec. Every git effect is an event, and
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

from flows.events import Event


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


class Phase(str, Enum):
    """Where an attempt in progress is; each change is a :class:`TaskPhaseChanged`."""

    WORKTREE = "worktree"
    CODER = "coder"
    CHECKS = "checks"
    REVIEW = "review"
    MERGE = "merge"
    CLEANUP = "cleanup"


class Answer(str, Enum):
    """A person's answer to a blocked (or review-capped) task."""

    RETRY = "retry"
    """A new attempt, with the person's context in its prompt."""
    SKIP = "skip"
    """The task ends aborted (worktree removed, branch kept); its dependents are aborted."""
    ABORT = "abort"
    """The whole run is aborted."""


class NotifyLevel(str, Enum):
    """``notify`` levels of the agent."""

    INFO = "info"
    BLOCKING = "blocking"


class TaskEvent(Event, frozen=True):
    """Base of the events about one task (``step_id`` is the task id)."""

    step_id: str


class TasksPlanned(Event, frozen=True):
    """Tasks taken into the plan (new_queued -> planned_queued), in plan order."""

    step_ids: list[str]


class TaskStarted(TaskEvent, frozen=True):
    """An attempt was accepted (planned_queued -> inprogress, phase worktree).

    The integration may fold this into ``StepStarted(kind="task")``; the
    resolved prompt and persona then ride on that event as for agent steps.
    """

    attempt: int
    context: str = ""
    """What the attempt starts with beyond the task: a review, a conflict, a person's context."""


class TaskPhaseChanged(TaskEvent, frozen=True):
    """The attempt moved to ``phase`` (the intent, appended before git acts)."""

    attempt: int
    phase: Phase
    detail: str = ""


class TaskWorktreeCreated(TaskEvent, frozen=True):
    """The task's worktree and branch exist (the fact after ``phase=worktree``)."""

    attempt: int
    path: str
    branch: str
    base: str
    """The integration head the branch started from (or the existing branch's head when reused)."""
    reused: bool = False
    """An earlier attempt's branch (and its commits) was kept and continued."""


class TaskCommitted(TaskEvent, frozen=True):
    """A commit on the task branch (by the agent's ``commit`` tool or baton's closing commit)."""

    attempt: int
    commit: str
    message: str = ""
    files: list[str] = []
    insertions: int = 0
    deletions: int = 0
    by: str = "agent"


class TaskChecked(TaskEvent, frozen=True):
    """One check ran in the worktree; ``output`` is capped (``truncated`` says so)."""

    attempt: int
    argv: list[str]
    exit_code: int | None
    """None when it timed out or could not start."""
    ok: bool
    output: str = ""
    truncated: bool = False
    duration_s: float = 0.0


class TaskReviewed(TaskEvent, frozen=True):
    """The read-only reviewer's verdict on ``git diff integrate...task-branch``."""

    attempt: int
    round: int
    approved: bool
    review: str = ""


class TaskMerged(TaskEvent, frozen=True):
    """The task branch is merged into the integration branch (``--no-ff``); recorded once."""

    attempt: int
    task_head: str
    """The task branch's commit that was merged: reconciliation finds the merge by it."""
    merge_commit: str
    already: bool = False
    """Git already had it (a merge that finished before a crash): recorded, not merged again."""


class TaskMergeConflicted(TaskEvent, frozen=True):
    """The merge stopped on conflicts: aborted, ``files`` listed, branch kept, task handed back."""

    attempt: int
    files: list[str]
    integration_head: str = ""


class TaskRebased(TaskEvent, frozen=True):
    """The task branch was brought onto the integration head before going back to the implementor."""

    attempt: int
    onto: str
    head: str
    conflicts: list[str] = []
    """Non-empty: a clean rebase was impossible; these files hold conflict markers to resolve."""


class TaskMessaged(TaskEvent, frozen=True):
    """A person's message, delivered to the agent's next turn."""

    text: str
    by: str = ""


class TaskNotified(TaskEvent, frozen=True):
    """The agent's ``notify``: shown to people, ``blocking`` raises it in the plan."""

    attempt: int
    level: NotifyLevel
    message: str


class TaskBlocked(TaskEvent, frozen=True):
    """The attempt stopped and waits for a person (Safe Exit, or review rounds exhausted)."""

    attempt: int
    reason: str
    source: str = "agent"
    """``agent`` (the ``blocked`` tool) or ``review`` (``max_rounds`` rejections)."""


class TaskAnswered(TaskEvent, frozen=True):
    """A person answered a blocked task: retry (with context), skip or abort."""

    answer: Answer
    context: str = ""
    by: str = ""


class TaskFailed(TaskEvent, frozen=True):
    """The attempt failed (an error, a lost worktree, a crash); retried while ``will_retry``."""

    attempt: int
    error: str
    will_retry: bool = False
    lost: bool = False


class TaskDone(TaskEvent, frozen=True):
    """Merged and cleaned up: the task is finished."""

    attempt: int
    merge_commit: str = ""


class TaskAborted(TaskEvent, frozen=True):
    """The task ended without running to completion (a person, a skip, an upstream that cannot finish)."""

    reason: str
    by: str = ""


class TaskCleanedUp(TaskEvent, frozen=True):
    """The worktree was removed and the branch deleted (or kept, with its head, when it holds unmerged work)."""

    worktree_removed: bool = True
    branch_deleted: bool = True
    branch_head: str = ""
    salvaged: str = ""
    """The commit that saved uncommitted changes before the worktree went (``""`` when there were none)."""


class IntegrationCreated(Event, frozen=True):
    """The run's integration branch and its worktree exist."""

    branch: str
    path: str
    base: str


class GitCompensated(Event, frozen=True):
    """Reconciliation acted on git because git and the log disagreed (one event per action)."""

    action: str
    target: str
    reason: str
    step_id: str = ""
    head: str = ""
    """The sha a removed branch pointed at: enough to restore it (``git branch NAME SHA``) until gc."""


class RunLanded(Event, frozen=True):
    """The integration branch was fast-forwarded onto the target branch."""

    target: str
    commit: str


class LandingRefused(Event, frozen=True):
    """Landing was not a fast-forward (or the target is checked out dirty): branch kept, reason given."""

    target: str
    reason: str


TASK_EVENTS: tuple[type[Event], ...] = (
    TasksPlanned, TaskStarted, TaskPhaseChanged, TaskWorktreeCreated, TaskCommitted, TaskChecked,
    TaskReviewed, TaskMerged, TaskMergeConflicted, TaskRebased, TaskMessaged, TaskNotified, TaskBlocked,
    TaskAnswered, TaskFailed, TaskDone, TaskAborted, TaskCleanedUp, IntegrationCreated, GitCompensated,
    RunLanded, LandingRefused,
)
"""Every proposed event, for the integration's codec registration (and a test that they round-trip)."""
