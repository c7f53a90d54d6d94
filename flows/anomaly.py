"""The anomaly watch's decisions: stalls, repeated errors, malformed output.

Pure functions over the state; the RunActor arms the stall timers and applies
what they return. The policy of the step (or else of the flow) decides what
follows an anomaly:

- ``notify``: an AnomalyDetected event (and so a frame), nothing else;
- ``nudge``: the attempt ends and a new one starts with a short guidance
  message appended to its prompt;
- ``abort``: the step is cancelled (which downstream counts as a failure).

When neither the step nor its flow sets ``on_anomaly``, repeated errors and
malformed output notify, and a stall follows :data:`STALL_DEFAULT`: the first
stall of a step nudges (a new attempt, told to answer at once), a later stall
of the same step aborts it. A silent model otherwise holds its agent slot until
the read timeout, and notifying alone changes nothing. A policy set on the step
or the flow, ``notify`` included, is followed as written.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from flows import template
from flows.events import (
    AnomalyDetected,
    AnomalyKind,
    Event,
    Severity,
    StepCancelled,
    StepCompleted,
    StepFailed,
    ToolResult,
)
from flows.state import RunState
from flows.status import StepStatus

STALL_GUIDANCE = (
    "Note from the orchestrator: the previous attempt produced no output for {silent:.0f} s and was stopped. "
    "Answer directly and start writing at once."
)
MALFORMED_GUIDANCE = (
    "Note from the orchestrator: the previous answer's frontmatter could not be parsed ({error}). "
    "Begin the answer with a valid YAML frontmatter block between two '---' lines that sets: {fields}."
)
ERRORS_GUIDANCE = (
    "Note from the orchestrator: earlier attempts of this step failed {count} times (last error: {error}). "
    "Keep the answer short and follow the requested format exactly."
)


STALL_DEFAULT = "nudge once, then abort"
"""What a stall leads to when neither the step nor its flow sets ``on_anomaly``."""


def explicit_policy(state: RunState, step_id: str) -> str:
    """The anomaly policy the step or else its flow sets; "" when neither does."""
    return state.spec(step_id).on_anomaly or state.snapshot.on_anomaly


def policy(state: RunState, step_id: str) -> str:
    """The anomaly policy in force for a step's errors and malformed output: its own, else its flow's."""
    return explicit_policy(state, step_id) or "notify"


def needed_fields(state: RunState, step_id: str) -> list[str]:
    """Fields of ``step_id``'s frontmatter that a later prompt or ``when`` refers to."""
    wanted: list[str] = []
    for spec in state.snapshot.steps:
        for text in (spec.prompt, spec.when):
            for ref in template.refs(text or ""):
                if ref.step == step_id and ref.field and ref.field not in wanted:
                    wanted.append(ref.field)
    return wanted


def _action(state: RunState, step_id: str, max_errors: int, instead: str) -> str:
    """The policy, except that a step already nudged ``max_errors`` times gets ``instead``."""
    action = policy(state, step_id)
    if action == "nudge" and state.steps[step_id].failures >= max_errors:
        return instead
    return action


def stalled(
    state: RunState, step_id: str, attempt: int, silent_s: float, now: float, max_errors: int = 5
) -> list[Event]:
    """The decision for an attempt that has been silent for ``silent_s`` seconds.

    Under the default (:data:`STALL_DEFAULT`) the first stall of the step nudges
    and the next one aborts; under an explicit ``nudge``, a step that keeps
    stalling is aborted once it has failed ``max_errors`` times. The caller
    asks once per stall episode (see RunActor's stall watch).
    """
    st = state.steps.get(step_id)
    if st is None or st.status != StepStatus.RUNNING or st.attempt != attempt or state.terminal:
        return []
    if explicit_policy(state, step_id):
        action = _action(state, step_id, max_errors, "abort")
    else:  # STALL_DEFAULT
        action = "nudge" if st.stalls == 0 else "abort"
    detail = f"no output or activity for {silent_s:.0f} s"
    guidance = STALL_GUIDANCE.format(silent=silent_s) if action == "nudge" else ""
    events: list[Event] = [AnomalyDetected(step_id=step_id, attempt=attempt, kind="stall", severity="medium",
                                           detail=detail, action=action, guidance=guidance, at=now)]
    if action == "nudge":
        events.append(StepFailed(step_id=step_id, attempt=attempt, error=f"stalled: {detail}", will_retry=True,
                                 retry_at=now, at=now))
    elif action == "abort":
        events.append(StepCancelled(step_id=step_id, attempt=attempt, reason=f"aborted: {detail}", at=now))
    return events


def after_failure(state: RunState, events: list[Event], max_errors: int, now: float) -> list[Event]:
    """Review a StepFailed just decided: past ``max_errors`` failures it is an anomaly.

    ``abort`` turns a retry into giving up; ``nudge`` adds guidance to the retry.
    """
    if not events or not isinstance(events[0], StepFailed) or events[0].lost:
        return events
    failed = events[0]
    count = state.steps[failed.step_id].failures + 1
    if count <= max_errors:
        return events
    action = policy(state, failed.step_id)
    guidance = ERRORS_GUIDANCE.format(count=count, error=failed.error[:200]) if action == "nudge" else ""
    anomaly = AnomalyDetected(step_id=failed.step_id, attempt=failed.attempt, kind="errors", severity="medium",
                              detail=f"{count} failed attempts (more than {max_errors}); last: {failed.error}",
                              action=action, guidance=guidance, at=now)
    if action == "abort" and failed.will_retry:
        from msgspec.structs import replace

        failed = replace(failed, will_retry=False, retry_at=0.0)
    return [anomaly, failed, *events[1:]]


def after_completion(state: RunState, events: list[Event], now: float, max_errors: int = 5) -> list[Event]:
    """Review a StepCompleted just decided: frontmatter that later steps need but cannot be read.

    A step nudged ``max_errors`` times keeps its last output (notify) instead.
    """
    if not events or not isinstance(events[0], StepCompleted) or not events[0].fields_error:
        return events
    done = events[0]
    wanted = needed_fields(state, done.step_id)
    if not wanted:
        return events
    action = _action(state, done.step_id, max_errors, "notify")
    detail = f"frontmatter needed for {', '.join(wanted)} cannot be parsed: {done.fields_error}"
    guidance = (MALFORMED_GUIDANCE.format(error=done.fields_error, fields=", ".join(wanted))
                if action == "nudge" else "")
    anomaly = AnomalyDetected(step_id=done.step_id, attempt=done.attempt, kind="malformed", severity="high",
                              detail=detail, action=action, guidance=guidance, at=now)
    if action == "nudge":
        return [anomaly, StepFailed(step_id=done.step_id, attempt=done.attempt, error=f"malformed output: {detail}",
                                    will_retry=True, retry_at=now, duration_s=done.duration_s, at=now)]
    if action == "abort":
        return [anomaly, StepCancelled(step_id=done.step_id, attempt=done.attempt, reason=f"aborted: {detail}",
                                       at=now)]
    return [anomaly, *events]


TOOL_ERRORS_LIMIT = 5
"""More tool errors than this in one step attempt is an ``errors`` anomaly (seed 003's heuristics)."""

DEGRADATION_GUIDANCE = (
    "Note from the orchestrator: the previous attempt made a malformed tool call ({error}). Call only the "
    "tools offered, by their exact names, with JSON arguments matching their schema."
)
TOOL_ERRORS_GUIDANCE = (
    "Note from the orchestrator: the previous attempt's tool calls failed {count} times (last: {error}). "
    "Read each tool error: it names the rule; use paths relative to the root and search before reading."
)


class ToolTally(msgspec.Struct, frozen=True):
    """A step attempt's tool calls that went wrong so far: ``errors`` counts malformed ones too."""

    attempt: int = 0
    errors: int = 0
    malformed: int = 0


def tally_tools(tally: ToolTally, attempt: int, results: Sequence[Event]) -> ToolTally:
    """``tally`` after ``results`` (ToolResult events of ``attempt``; another attempt starts at zero)."""
    if tally.attempt != attempt:
        tally = ToolTally(attempt=attempt)
    bad = [r for r in results if isinstance(r, ToolResult) and r.outcome in ("error", "malformed")]
    malformed = sum(1 for r in bad if r.outcome == "malformed")
    return ToolTally(attempt=attempt, errors=tally.errors + len(bad), malformed=tally.malformed + malformed)


def after_tool_results(state: RunState, step_id: str, attempt: int, before: ToolTally, after: ToolTally,
                       results: Sequence[Event], now: float, max_errors: int = 5) -> list[Event]:
    """The anomalies a batch of tool results raises (DESIGN §11), and what the policy makes of them.

    ``degradation`` (high) at the first malformed call of the attempt;
    ``errors`` (medium) when its tool errors pass :data:`TOOL_ERRORS_LIMIT`.
    ``notify`` records the anomaly; ``nudge`` ends the attempt and retries it
    with guidance; ``abort`` cancels the step.
    """
    st = state.steps.get(step_id)
    if st is None or st.status != StepStatus.RUNNING or st.attempt != attempt or state.terminal:
        return []
    found = _tool_anomalies(before, after, results)
    if not found:
        return []
    action = _action(state, step_id, max_errors, "abort")
    events: list[Event] = [AnomalyDetected(step_id=step_id, attempt=attempt, kind=kind, severity=severity,
                                           detail=detail, action=action,
                                           guidance=guidance if action == "nudge" else "", at=now)
                           for kind, severity, detail, guidance in found]
    if action == "nudge":
        events.append(StepFailed(step_id=step_id, attempt=attempt, error=f"nudged: {found[0][2]}",
                                 will_retry=True, retry_at=now, at=now))
    elif action == "abort":
        events.append(StepCancelled(step_id=step_id, attempt=attempt, reason=f"aborted: {found[0][2]}", at=now))
    return events


def after_task_tool_results(state: RunState, step_id: str, attempt: int, who: str, before: ToolTally,
                            after: ToolTally, results: Sequence[Event], now: float) -> list[Event]:
    """The anomalies a batch of a task's agent's tool results raises: the same two as a flow step's
    (:func:`after_tool_results`), counted per agent of the attempt (``who``: "implementor" or "reviewer",
    named in the detail), and always ``notify``: a task ends by its own events (its lifecycle's guard),
    never by a step's ``StepFailed``/``StepCancelled``; a person answers an anomaly with the task's
    ``message`` or ``abort``."""
    st = state.steps.get(step_id)
    if st is None or st.status != StepStatus.RUNNING or st.attempt != attempt or state.terminal:
        return []
    return [AnomalyDetected(step_id=step_id, attempt=attempt, kind=kind, severity=severity,
                            detail=f"{who}: {detail}", action="notify", at=now)
            for kind, severity, detail, _ in _tool_anomalies(before, after, results)]


def _tool_anomalies(before: ToolTally, after: ToolTally,
                    results: Sequence[Event]) -> list[tuple[AnomalyKind, Severity, str, str]]:
    """``(kind, severity, detail, guidance)`` of each anomaly the tally's move from ``before`` to ``after``
    raises (``results``: the batch that moved it)."""
    bad = [r for r in results if isinstance(r, ToolResult) and r.outcome in ("error", "malformed")]
    found: list[tuple[AnomalyKind, Severity, str, str]] = []
    if before.malformed == 0 and after.malformed > 0:
        first = next(r for r in bad if r.outcome == "malformed")
        error = f"{first.tool or '?'}: {first.error}"
        found.append(("degradation", "high", f"malformed tool call ({error}): {first.result[:200]}",
                      DEGRADATION_GUIDANCE.format(error=error)))
    if before.errors <= TOOL_ERRORS_LIMIT < after.errors:
        last = bad[-1]
        error = f"{last.tool or '?'}: {last.error}"
        detail = f"{after.errors} tool errors in this attempt (more than {TOOL_ERRORS_LIMIT}); last: {error}"
        found.append(("errors", "medium", detail, TOOL_ERRORS_GUIDANCE.format(count=after.errors, error=error)))
    return found
