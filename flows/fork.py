"""Runs from runs: which recorded outcomes a fork (or a retry) keeps, as a pure decision.

A fork of run P from step S is a new run whose log is P's RunLaunched (with a
new run id and any changed inputs), a RunForked naming P and the position it
read up to, then copies of P's events for every step that is **not** S nor
downstream of S and whose outcome P recorded (so they are not run again and
the report credits P's events), and then whatever ``decide`` starts afresh.

A step whose outcome was a cancellation is not kept: cancelling says nothing
about what the step would have done. A step P had not finished is not kept
either: it runs again in the fork.

A retry is a fork from a step that failed, was cancelled or was lost, of a
run that has ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from msgspec.structs import replace

from flows.errors import BatonError, UnknownRun, UnknownStep
from flows.events import Event, RunForked, RunLaunched
from flows.launch import LaunchError
from flows.model import FlowSnapshot
from flows.state import RunState, StepState
from flows.status import StepStatus
from flows.text import check_text, check_value

History = Sequence[tuple[int, Event]]


class NotRetryable(BatonError):
    """A retry named a step that did not fail, was not cancelled or lost, or a run that has not ended."""

    def __init__(self, run_id: str, step_id: str, status: str, why: str) -> None:
        super().__init__(f"step {step_id!r} of run {run_id} cannot be retried: {why}")
        self.run_id = run_id
        self.step_id = step_id
        self.status = status


def downstream(snapshot: FlowSnapshot, step_id: str) -> frozenset[str]:
    """``step_id`` and every step that depends on it, directly or not."""
    children: dict[str, list[str]] = {s.id: [] for s in snapshot.steps}
    for spec in snapshot.steps:
        for dep in spec.deps:
            children[dep].append(spec.id)
    seen = {step_id}
    stack = [step_id]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return frozenset(seen)


def keeps(step: StepState) -> bool:
    """Whether a fork keeps a step's recorded outcome: it ended, and not by a cancellation."""
    if not step.terminal:
        return False
    return not (step.status == StepStatus.CANCELLED
                or (step.status == StepStatus.SKIPPED and step.skip_reason == "cancelled"))


def kept_steps(parent: RunState, from_step: str) -> list[str]:
    """The steps whose outcomes a fork from ``from_step`` copies, in graph order."""
    rerun = downstream(parent.snapshot, from_step)
    return [s.id for s in parent.snapshot.steps if s.id not in rerun and keeps(parent.steps[s.id])]


def retryable(parent: RunState, step_id: str) -> None:
    """Raise NotRetryable unless the run has ended and ``step_id`` failed, was cancelled or lost."""
    _check(parent, step_id)
    st = parent.steps[step_id]
    if not parent.terminal:
        raise NotRetryable(parent.run_id, step_id, st.status, f"the run is still {parent.status} (cancel it first)")
    ended_badly = st.status in (StepStatus.FAILED, StepStatus.CANCELLED) or (
        st.status == StepStatus.SKIPPED and st.skip_reason == "cancelled")
    if not ended_badly:
        raise NotRetryable(parent.run_id, step_id, st.status,
                           f"it is {st.status}; only a failed, cancelled or lost step is retried (fork it instead)")


def _check(parent: RunState, step_id: str) -> None:
    if parent.launched is None:
        raise UnknownRun(parent.run_id)
    if step_id not in parent.steps:
        raise UnknownStep(parent.run_id, step_id)


def fork(
    parent: RunState,
    history: History,
    from_step: str,
    *,
    run_id: str,
    now: float,
    by: str = "",
    inputs: Mapping[str, Any] | None = None,
    retry: bool = False,
) -> list[Event]:
    """The first events of a fork of ``parent`` from ``from_step``: RunLaunched, RunForked, the copies.

    ``history`` is the parent's ``(position, event)`` log. ``inputs`` change
    the run's inputs (the question included); the copied outcomes stay what
    they were. With ``retry``, the step must be retryable (NotRetryable).
    Raises UnknownRun, UnknownStep, UnstorableText (``by``, ``inputs``).
    """
    _check(parent, from_step)
    if retry:
        retryable(parent, from_step)
    check_text("by", by)
    changed = dict(inputs or {})
    check_value("inputs", changed)
    if "question" in changed and (not isinstance(changed["question"], str) or not changed["question"].strip()):
        raise LaunchError("inputs.question", "a run needs a non-empty question")
    launched: RunLaunched | None = parent.launched
    assert launched is not None
    kept = kept_steps(parent, from_step)
    keep = set(kept)
    copies = [(pos, ev) for pos, ev in history if getattr(ev, "step_id", None) in keep]
    forked_launch = replace(launched, run_id=run_id, input={**launched.input, **changed}, launched_by=by,
                            idempotency_key="", at=now)
    marker = RunForked(parent_run_id=parent.run_id, from_step=from_step, parent_position=parent.position,
                       copied_steps=kept, copied_positions=[pos for pos, _ in copies], inputs=changed,
                       retry=retry, by=by, at=now)
    return [forked_launch, marker, *(ev for _, ev in copies)]

