"""Run and step statuses, and every rule that moves them (DESIGN §3): one home.

The fold (``flows.state``), the projector's rows (``projections.apply``) and
the frames (``projections.frames``) each keep statuses in their own shape (a
frozen struct, a row dict, a frame), but they take every status from here:
which status an event gives a step or announces for a run, when a run under
way is running or paused, what has ended, what counts as an output, a success
or a failure. tests/integration/test_status_agreement.py drives every
catalogue flow through the engine and checks that the three agree after every
event.

One copy lives elsewhere: the web console folds frames in JavaScript
(``api/web/static/js/runmodel.js``, ``underWayStatus``) and restates
:func:`run_status_counted` there; a change here must be made there too.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from flows.events import (
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunLaunched,
    RunQueued,
    RunRejected,
    RunStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
)


class RunStatus(StrEnum):
    """Where a run stands. Compares (and encodes) as its value: ``RunStatus.PAUSED == "paused"``."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """Where a step stands. A failed attempt that will be retried leaves its step ``PENDING``."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


NOT_LAUNCHED: Final = "new"
"""The fold's status of a run before its RunLaunched (a command naming a run the log does not have)."""

RUN_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
"""Every run status, in the order a run goes through them (for filters and their help text)."""

RUN_TERMINAL: frozenset[str] = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED})
"""A run in one of these has ended: no command and no step event moves it again."""

RUN_UNDER_WAY: frozenset[str] = frozenset({RunStatus.RUNNING, RunStatus.PAUSED})
"""A run in one of these was started and has not ended: its steps decide which of the two."""

STEP_TERMINAL: frozenset[str] = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.REJECTED, StepStatus.SKIPPED, StepStatus.CANCELLED})
"""A step in one of these has ended: the trigger rules of its dependents may now decide."""


def run_ended(status: str) -> bool:
    """Whether a run with this status has ended."""
    return status in RUN_TERMINAL


def step_ended(status: str) -> bool:
    """Whether a step with this status has ended."""
    return status in STEP_TERMINAL


_RUNNING, _PENDING, _PAUSED = StepStatus.RUNNING.value, StepStatus.PENDING.value, StepStatus.PAUSED.value
# (the rules below run for every step of a run at each decision and each step's start)
_COMPLETED, _FAILED, _REJECTED = StepStatus.COMPLETED.value, StepStatus.FAILED.value, StepStatus.REJECTED.value
_SKIPPED, _CANCELLED = StepStatus.SKIPPED.value, StepStatus.CANCELLED.value
_RUN_RUNNING, _RUN_PAUSED = RunStatus.RUNNING, RunStatus.PAUSED  # a class attribute of an enum costs ~0.25 us


Counts = tuple[int, int]
"""A run's ``(moving, paused)``: how many of its steps move without a person, and how many are paused."""

_MOVES: Final[Counts] = (1, 0)
_WAITS: Final[Counts] = (0, 1)
_NEITHER: Final[Counts] = (0, 0)


def step_counts(status: str, retry_pending: object) -> Counts:
    """What one step adds to its run's counts: it moves when an attempt is under way or a failed
    attempt's retry is pending (``retry_pending`` is read as true or false: a retry time will do);
    a paused step waits for a person."""
    if status == _RUNNING or (status == _PENDING and retry_pending):
        return _MOVES
    return _WAITS if status == _PAUSED else _NEITHER


def run_status_counted(current: str, moving: int, paused: int) -> str:
    """The status of a run after one of its steps moved, given how many of its steps move and how
    many are paused (summed :func:`step_counts`): the rule.

    Running or paused, for a run under way: paused means a person is awaited
    and nothing else can move (no attempt under way and no retry pending). A
    run that is not under way (queued, or ended) keeps its status: step events
    of a queued run, or of a cancel, do not move it. The fold keeps the counts
    as its steps move (``flows.state``); :func:`run_status` counts them over
    the steps.
    """
    if current not in RUN_UNDER_WAY:
        return current
    if moving:
        return _RUN_RUNNING
    return _RUN_PAUSED if paused else _RUN_RUNNING


def run_status(current: str, steps: Iterable[tuple[str, object]]) -> str:
    """:func:`run_status_counted`, the counts taken over every step's ``(status, retry_pending)``.

    A step may be given more than once (the one that just moved first, then
    all: it decides at once when it moves); the pass stops at the first step
    that moves, since more steps only add to the counts. (tests/unit/test_run_counts.py
    checks it against :func:`step_counts` summed, on every short list of steps.)
    """
    if current not in RUN_UNDER_WAY:
        return current
    paused = 0
    for status, retry_pending in steps:  # step_counts inlined (half the cost): the projector calls this per step
        if status == _RUNNING or (status == _PENDING and retry_pending):
            return run_status_counted(current, 1, paused)
        if status == _PAUSED:
            paused += 1
    return run_status_counted(current, 0, paused)


def decision_status(decision: str) -> StepStatus:
    """The status a person's decision on an approval gives it (StepResumed's ``decision``)."""
    return StepStatus.COMPLETED if decision == "approved" else StepStatus.REJECTED


_STEP_STATUS_OF: dict[type[Event], StepStatus] = {
    StepStarted: StepStatus.RUNNING,
    StepCompleted: StepStatus.COMPLETED,
    StepCancelled: StepStatus.CANCELLED,
    StepSkipped: StepStatus.SKIPPED,
    StepPaused: StepStatus.PAUSED,
}

_RUN_STATUS_OF: dict[type[Event], RunStatus] = {
    RunLaunched: RunStatus.QUEUED,
    RunQueued: RunStatus.QUEUED,
    RunStarted: RunStatus.RUNNING,
    RunCompleted: RunStatus.COMPLETED,
    RunFailed: RunStatus.FAILED,
    RunRejected: RunStatus.REJECTED,
    RunCancelled: RunStatus.CANCELLED,
}

ENDING_STATUS: dict[type[Event], RunStatus] = {
    cls: status for cls, status in _RUN_STATUS_OF.items() if status in RUN_TERMINAL}
"""The status each terminal event ends a run with."""


def step_status_of(event: Event) -> StepStatus | None:
    """The status a step event gives its step (None for an event that is not a step's move).

    A failed attempt that will be retried leaves its step pending; a decision
    on an approval completes or rejects it (:func:`decision_status`).
    """
    status = _STEP_STATUS_OF.get(event.__class__)
    if status is not None:
        return status
    if isinstance(event, StepFailed):
        return StepStatus.PENDING if event.will_retry else StepStatus.FAILED
    if isinstance(event, StepResumed):
        return decision_status(event.decision)
    return None


def run_status_of(event: Event) -> RunStatus | None:
    """The status a run event sets: queued at launch, queued or running by the scheduler, or an ending.

    None for the other events (a step's move re-decides the run by :func:`run_status`).
    A run that has ended takes no more of these (see :func:`takes_run_event`).
    """
    return _RUN_STATUS_OF.get(type(event))


def takes_run_event(current: str) -> bool:
    """Whether a run with status ``current`` is moved by a run event (:func:`run_status_of`).

    An ended run is not: its first ending (status, reason and report) stands.
    The engine never records a run event after the end; a log that has one
    keeps the run as it ended.
    """
    return current not in RUN_TERMINAL


# -- what a step's status means for the steps after it and for the run's outcome ---------------


WITH_OUTPUT: frozenset[str] = frozenset({_COMPLETED, _REJECTED})
"""The statuses of :func:`has_output`, for a pass over every step (a set costs no call per step)."""


def has_output(status: str) -> bool:
    """Whether ``$step.output`` of a step in this status is its text: completed, or a rejected
    approval (its output is the approver's comment, so on_reject steps can quote it)."""
    return status in WITH_OUTPUT


def succeeded(status: str) -> bool:
    """Whether the step ended well (its fields are readable, its dependents count it a success)."""
    return status == _COMPLETED


def decided(status: str) -> bool:
    """Whether an approval step has been decided by a person (approved or rejected)."""
    return status == _COMPLETED or status == _REJECTED


FAILED_SKIPS: frozenset[str] = frozenset({"upstream_failed", "rejected"})
"""Skip reasons that count as a failure upstream (Airflow's ``upstream_failed``), for trigger rules."""


def failed_upstream(status: str, skip_reason: str = "") -> bool:
    """Whether a dep in this state counts as failed for its dependents' trigger rules (flows.rules):
    failed, cancelled, rejected, or skipped because something upstream failed or was rejected.
    (flows.rules lets an on_reject step count a rejection as a success.)"""
    return (status == _FAILED or status == _CANCELLED or status == _REJECTED
            or (status == _SKIPPED and skip_reason in FAILED_SKIPS))


def rejected_upstream(status: str, skip_reason: str = "") -> bool:
    """Whether a dep in this state is a rejection on the way: a rejected approval, or a step skipped for one."""
    return status == _REJECTED or (status == _SKIPPED and skip_reason == "rejected")


def fails_run(status: str, skip_reason: str = "") -> bool:
    """Whether a leaf in this state makes the run fail (DESIGN §3): it failed, was cancelled
    (aborted), or was skipped because something upstream failed."""
    return (status == _FAILED or status == _CANCELLED
            or (status == _SKIPPED and skip_reason == "upstream_failed"))


def rejects_run(status: str) -> bool:
    """Whether a step in this state makes a run that did not fail end as rejected."""
    return status == _REJECTED
