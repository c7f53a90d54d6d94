"""Every domain event of a run: frozen msgspec Structs in one tagged union.

Events are facts. A new field always gets a default, so old logs still decode;
an event is never renamed without an upcaster (see flows.codec, the one way
to read a log). ``at`` is
the time the decision was taken (seconds since the epoch, from the injected
clock), so that state, reports and the after-action review are functions of
the log alone.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal, Union

import msgspec

from flows.kinds import StepKind
from flows.model import FlowSnapshot
from flows.template import parse_frontmatter
from flows.workspace import Workspace

SkipReason = Literal["condition", "upstream_failed", "upstream_skipped", "rejected", "cancelled", "trigger_rule"]
Decision = Literal["approved", "rejected"]
AnomalyKind = Literal["stall", "errors", "malformed", "degradation"]
Severity = Literal["low", "medium", "high"]


class Event(msgspec.Struct, frozen=True, tag=True, kw_only=True, gc=False):
    """Base of every run event; the tag is the class name.

    Not tracked by the cyclic garbage collector (``gc=False``, inherited): an event holds data
    (strings, numbers, JSON-able dicts and lists, a flow's snapshot), never anything that refers
    back to it, so it is never part of a cycle; every step makes several, and each tracked object
    is one more for the collector's passes to count and walk.
    """

    at: float = 0.0


class RunLaunched(Event, frozen=True):
    """A run was launched; ``snapshot`` pins the band-resolved graph it runs with."""

    run_id: str
    flow: str
    snapshot: FlowSnapshot
    band: str = "medium"
    model: str = ""
    backend: str = "offline"
    input: dict[str, Any] = {}
    project_id: str = ""
    launched_by: str = ""
    idempotency_key: str = ""
    fast: bool = False  # every agent step was asked for a concise answer (seed 002's fast mode)
    parent_run_id: str = ""  # a child run, launched by a subflow step of this run
    parent_step: str = ""  # ... that step
    depth: int = 0  # a child run: how many subflow steps, one inside another, launched it (0: launched by a person)
    workspace: Workspace | None = None  # the project's root, HEAD commit, branch and dirty flag (DESIGN §11)


class RunQueued(Event, frozen=True):
    """The scheduler holds the run back; ``reason`` says why (capacity, ...)."""

    run_id: str
    reason: str = "capacity"
    plan_position: int = 0


class RunStarted(Event, frozen=True):
    """The scheduler let the run start."""

    run_id: str
    reason: str = ""
    plan_position: int = 0


class StepStarted(Event, frozen=True):
    """An attempt began; ``prompt`` is exactly what was sent to the backend."""

    step_id: str
    attempt: int
    kind: StepKind = StepKind.AGENT
    prompt: str = ""
    persona: str = ""
    backend: str = ""
    model: str = ""
    unresolved: list[str] = []
    items: list[Any] = []  # a map step: the list it runs its inner step over, as resolved when it started
    child_run_id: str = ""  # a subflow step: the child run this attempt launches (or follows, after a restart)
    # What else was sent (DESIGN §11), recorded whole: the persona's text, the sampling settings
    # (temperature, max_tokens, seed where set), and for a step with a workspace the tools offered,
    # the sha256 of their schema and the loop's limits.
    system: str = ""
    sampling: dict[str, Any] = {}
    tools: list[str] = []
    tool_schema_hash: str = ""
    limits: dict[str, int] = {}


class StepCompleted(Event, frozen=True):
    """An attempt produced its output; the output is recorded once, in full.

    ``fields`` copies the output's frontmatter (or a code step's dict) only
    while the output is small; past that, ``fields_in_output`` is true and the
    fields are read from the output itself: call :meth:`step_fields`.
    """

    step_id: str
    attempt: int
    output: str = ""
    fields: dict[str, Any] = {}
    duration_s: float = 0.0
    usage: dict[str, Any] = {}
    fields_error: str = ""
    fields_in_output: bool = False

    def step_fields(self) -> dict[str, Any]:
        """The step's fields (``$step.output.field``), wherever this event keeps them."""
        return parse_frontmatter(self.output)[0] if self.fields_in_output else self.fields


class StepFailed(Event, frozen=True):
    """An attempt failed (error, timeout, lost in a crash); it may be retried."""

    step_id: str
    attempt: int
    error: str
    will_retry: bool = False
    retry_at: float = 0.0
    duration_s: float = 0.0
    lost: bool = False  # the attempt was lost in a crash; it does not use up a retry
    frames: list[str] = []  # a code step that raised: its traceback's last frames, "file:line in func"
    usage: dict[str, Any] = {}  # tokens the attempt's model turns cost before it failed (a tool loop's limit)


class StepCancelled(Event, frozen=True):
    """A running attempt was stopped because its run was cancelled or aborted."""

    step_id: str
    attempt: int
    reason: str = ""


class StepSkipped(Event, frozen=True):
    """A step will not run; ``reason`` is its kind and ``detail`` the evidence."""

    step_id: str
    reason: SkipReason
    detail: str = ""


class StepPaused(Event, frozen=True):
    """An approval step waits for a person (the permission frame)."""

    step_id: str
    prompt: str = ""
    unresolved: list[str] = []
    due_at: float = 0.0  # with the approval's timeout_s: when its timer decides (on_timeout), 0 for never


class StepResumed(Event, frozen=True):
    """A person decided on a paused approval step."""

    step_id: str
    decision: Decision
    by: str = ""
    comment: str = ""
    timer: str = ""  # decided by the approval's timer (its name), not by a person: ``by`` is then empty

    @property
    def decided_by(self) -> str:
        """Who decided: the person, or the timer ("timer <name>")."""
        return self.by or (f"timer {self.timer}" if self.timer else "")


class RunRecovered(Event, frozen=True):
    """A process took the run over after a restart; ``steps`` were found running."""

    node: str = ""
    steps: list[str] = []


class AnomalyDetected(Event, frozen=True):
    """The watch saw something wrong with a running step."""

    step_id: str
    attempt: int = 0
    kind: AnomalyKind = "stall"
    severity: Severity = "medium"
    detail: str = ""
    action: str = "notify"
    guidance: str = ""  # with action "nudge": appended to the next attempt's prompt


class RunCompleted(Event, frozen=True):
    """Every leaf ended well; ``report`` is the rendered markdown."""

    report: str = ""


class RunFailed(Event, frozen=True):
    """A leaf failed (or was skipped because something upstream failed)."""

    reason: str = ""
    report: str = ""


class RunRejected(Event, frozen=True):
    """A person rejected an approval on the way."""

    reason: str = ""
    by: str = ""
    report: str = ""


class RunCancelled(Event, frozen=True):
    """The run was cancelled; running attempts were stopped."""

    reason: str = ""
    by: str = ""
    report: str = ""


class MapItemCompleted(Event, frozen=True):
    """One item of a map step produced its result (``prompt``: what was sent for it, if an agent's)."""

    step_id: str
    attempt: int
    index: int
    item: Any = None
    output: str = ""
    prompt: str = ""
    duration_s: float = 0.0


class MapItemFailed(Event, frozen=True):
    """One item of a map step failed; the map fails once its items have ended (a retry reruns this one)."""

    step_id: str
    attempt: int
    index: int
    item: Any = None
    error: str = ""
    duration_s: float = 0.0


class RunForked(Event, frozen=True):
    """This run was forked (or a step retried) from ``parent_run_id``: it follows RunLaunched at once.

    The events right after it are copies of the parent's recorded outcomes of
    ``copied_steps`` (not re-run); ``copied_positions`` are the parent's
    positions of those copies, in order, so the report credits the parent.
    ``parent_position`` is the last position of the parent the fork read.
    """

    parent_run_id: str
    from_step: str
    parent_position: int = 0
    copied_steps: list[str] = []
    copied_positions: list[int] = []
    inputs: dict[str, Any] = {}  # the inputs the fork changed
    retry: bool = False  # a retry of from_step (it had failed, was cancelled or lost)
    by: str = ""


REVIEWER_ROLE = "reviewer"
"""``ToolCalled.role`` / ``ToolResult.role`` of a task's read-only reviewer's calls (its implementor's are ``""``)."""


class ToolCalled(Event, frozen=True):
    """A model asked for a tool call (DESIGN §11); appended before the next model turn.

    ``arguments`` is the raw text the model sent (it may not even be JSON: a
    malformed call is recorded as made). ``seq`` numbers the step attempt's
    calls from 1; ``turn`` is the model turn that made it. ``role`` says
    which agent of the step made it: ``""`` the step's own agent (a task's
    implementor), :data:`REVIEWER_ROLE` a task's read-only reviewer.
    """

    step_id: str
    attempt: int
    call_id: str
    tool: str
    arguments: str = ""
    turn: int = 0
    seq: int = 0
    role: str = ""


class ToolResult(Event, frozen=True):
    """What a tool call answered; ``result`` is the capped text the model read.

    ``outcome`` is ok, error (a confinement rule or a failed tool), malformed
    (unknown tool, arguments not JSON or not the schema) or not_run (a limit
    was reached first); ``error`` names the rule or problem. ``role`` is its
    call's (:class:`ToolCalled`).
    """

    step_id: str
    attempt: int
    call_id: str
    tool: str = ""
    ok: bool = True
    outcome: str = "ok"
    result: str = ""
    sha256: str = ""
    bytes: int = 0
    truncated: bool = False
    error: str = ""
    role: str = ""


# -- task graphs (DESIGN §12; docs/TASKS.md §3): the events of a task run ---------------------------


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
    capped: bool = False
    """A rejection in the last round (``max_rounds``): the task now waits for a person."""


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


class IntegrationRemoved(Event, frozen=True):
    """The run ended: its integration worktree was removed; the branch stays (it is the run's result)."""

    branch: str
    path: str
    head: str = ""
    """Where the integration branch stood when its worktree went (what landing moves the target to)."""


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


RunEvent = Union[  # noqa: UP007 (one member a line, as the events above)
    RunLaunched,
    RunQueued,
    RunStarted,
    StepStarted,
    StepCompleted,
    StepFailed,
    StepCancelled,
    StepSkipped,
    StepPaused,
    StepResumed,
    RunRecovered,
    AnomalyDetected,
    RunCompleted,
    RunFailed,
    RunRejected,
    RunCancelled,
    RunForked,
    MapItemCompleted,
    MapItemFailed,
    ToolCalled,
    ToolResult,
    # task graphs (§12)
    TasksPlanned,
    TaskStarted,
    TaskPhaseChanged,
    TaskWorktreeCreated,
    TaskCommitted,
    TaskChecked,
    TaskReviewed,
    TaskMerged,
    TaskMergeConflicted,
    TaskRebased,
    TaskMessaged,
    TaskNotified,
    TaskBlocked,
    TaskAnswered,
    TaskFailed,
    TaskDone,
    TaskAborted,
    TaskCleanedUp,
    IntegrationCreated,
    GitCompensated,
    RunLanded,
    IntegrationRemoved,
    LandingRefused,
]

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in RunEvent.__args__}  # type: ignore[attr-defined]

TERMINAL_RUN_EVENTS = (RunCompleted, RunFailed, RunRejected, RunCancelled)
TERMINAL_RUN_TYPES = frozenset(cls.__name__ for cls in TERMINAL_RUN_EVENTS)

RUN_STREAM_PREFIX = "run-"


def stream_of(run_id: str) -> str:
    """The stream that holds a run's events (DESIGN §2: one stream per run)."""
    return RUN_STREAM_PREFIX + run_id


def run_id_of(stream_id: str) -> str | None:
    """The run a stream belongs to, or None for a stream that is not a run's."""
    return stream_id[len(RUN_STREAM_PREFIX):] if stream_id.startswith(RUN_STREAM_PREFIX) else None


def event_data(event: Event) -> dict[str, Any]:
    """The event's fields as JSON-able builtins, without the tag."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    data.pop("type", None)
    return data
