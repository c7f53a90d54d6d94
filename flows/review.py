"""The report's closing tables, from a run's history read once: the provenance table and the after-action review.

Pure, as the report (``flows.report``) that ends with them: a function of the
state and the ``(position, event)`` history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from flows.events import (
    AnomalyDetected,
    Event,
    RunForked,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
    TaskStarted,
    ToolCalled,
    ToolResult,
)
from flows.kinds import kind_rules
from flows.state import RunState
from flows.status import succeeded
from flows.tasks import report as task_report

PARALLEL_CLAIM = 1.5
"""Average steps at a time (while any ran) from which parallelism counts as something that went right."""


def count(n: int, noun: str, plural: str = "") -> str:
    """``n`` and ``noun``, plural when ``n`` is not 1: "1 run", "2 runs", "3 evidence items"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def credits(history: Sequence[tuple[int, Event]]) -> dict[int, tuple[str, int]]:
    """In a fork's history: each copied event's position -> (the parent run, the parent's position of it)."""
    out: dict[int, tuple[str, int]] = {}
    for i, (_, ev) in enumerate(history):
        if isinstance(ev, RunForked):
            following = history[i + 1:i + 1 + len(ev.copied_positions)]
            for (pos, _), parent_pos in zip(following, ev.copied_positions):
                out[pos] = (ev.parent_run_id, parent_pos)
            break
    return out


class Reading(NamedTuple):
    """What the report's tables take from a run's history, gathered by :func:`read` in one pass over it."""

    attempts: dict[tuple[str, int], list[Any]]
    """(step, attempt) -> [its StepStarted, that event's position, its end's position (0: none), duration,
    tool calls, usage]: the provenance table's rows."""
    resumed: list[tuple[int, StepResumed]]
    """Approvals answered, in order: the provenance table's last rows."""
    completed_at: dict[str, int]
    """Each step's last StepCompleted's position."""
    frames_of: dict[str, Sequence[str]]
    """Each step's last StepFailed's frames."""
    credit: dict[int, tuple[str, int]]
    """:func:`credits`: empty but in a fork."""
    incidents: list[tuple[int, Event]]
    """Failed attempts, anomalies and rejections, in order: what went wrong."""
    spans: list[tuple[float, float]]
    """(start, end) of every attempt, a step's or a task's, that ended after it started."""
    person_wait: float
    """Time steps were paused for a person, from each StepPaused to its StepResumed."""
    slot_wait: float
    """Sum over agent attempts of start time minus the time the step was free to start."""


_ATTEMPT_ENDS = (StepCompleted, StepFailed, StepCancelled, *task_report.ATTEMPT_ENDS)
"""The events that end an attempt, a step's or a task's (those that start one: StepStarted, TaskStarted)."""


def read(state: RunState, history: Sequence[tuple[int, Event]]) -> Reading:
    """The history read once for the provenance table and the after-action review.

    Each table had a pass of its own (nine in all, with the render's): one
    pass, each event asked its class once, the two of nearly every step
    first, took a 20-step chain's render from ~820 to ~560 opcodes a step
    (bench/report_render.py).
    """
    snap = state.snapshot
    run_started = state.started_at or state.launched_at
    attempts: dict[tuple[str, int], list[Any]] = {}
    resumed: list[tuple[int, StepResumed]] = []
    completed_at: dict[str, int] = {}
    frames_of: dict[str, Sequence[str]] = {}
    incidents: list[tuple[int, Event]] = []
    begun: dict[tuple[str, int], float] = {}  # attempts started and not yet ended -> their start
    spans: list[tuple[float, float]] = []
    ended_at: dict[str, float] = {}  # for the slot wait: when each step last ended
    retry_at: dict[str, float] = {}
    paused: dict[str, float] = {}
    person_wait = slot_wait = 0.0
    forked = False
    for pos, ev in history:
        if ev.__class__ is StepCompleted:
            key = (ev.step_id, ev.attempt)
            if (row := attempts.get(key)) and not row[2]:
                row[2], row[3], row[5] = pos, ev.duration_s, ev.usage
            completed_at[ev.step_id] = pos
            if (start := begun.pop(key, None)) is not None and ev.at > start:
                spans.append((start, ev.at))
            ended_at[ev.step_id] = ev.at
        elif ev.__class__ is StepStarted:
            key = (ev.step_id, ev.attempt)
            attempts[key] = [ev, pos, 0, 0.0, 0, {}]
            begun[key] = ev.at
            spec = snap.step(ev.step_id)
            if kind_rules(spec.kind).needs_agent_slot:
                ready = max([run_started, retry_at.get(ev.step_id, 0.0), *(ended_at.get(d, 0.0) for d in spec.deps)])
                slot_wait += max(0.0, ev.at - ready)
        elif ev.__class__ is ToolCalled:
            if row := attempts.get((ev.step_id, ev.attempt)):
                row[4] += 1
        elif ev.__class__ is AnomalyDetected:
            incidents.append((pos, ev))
        elif ev.__class__ is not ToolResult:  # a rarer event: any with a step and an attempt ends that attempt's row
            if (row := attempts.get((getattr(ev, "step_id", ""), getattr(ev, "attempt", -1)))) and not row[2]:
                row[2], row[3] = pos, getattr(ev, "duration_s", 0.0)
                if ev.__class__ is StepFailed:
                    row[5] = ev.usage
            if ev.__class__ is TaskStarted:
                begun[(ev.step_id, ev.attempt)] = ev.at
            elif isinstance(ev, _ATTEMPT_ENDS):
                if (start := begun.pop((ev.step_id, ev.attempt), None)) is not None and ev.at > start:
                    spans.append((start, ev.at))
            if ev.__class__ is StepFailed:
                frames_of[ev.step_id] = ev.frames
                incidents.append((pos, ev))
                if ev.will_retry:
                    retry_at[ev.step_id] = ev.retry_at
                else:
                    ended_at[ev.step_id] = ev.at
            elif ev.__class__ is StepSkipped or ev.__class__ is StepCancelled:
                ended_at[ev.step_id] = ev.at
            elif ev.__class__ is StepPaused:
                paused[ev.step_id] = ev.at
            elif ev.__class__ is StepResumed:
                ended_at[ev.step_id] = ev.at
                if ev.step_id in paused:
                    person_wait += max(0.0, ev.at - paused.pop(ev.step_id))
                resumed.append((pos, ev))
                if ev.decision == "rejected":
                    incidents.append((pos, ev))
            elif ev.__class__ is RunForked:
                forked = True
    return Reading(attempts, resumed, completed_at, frames_of, credits(history) if forked else {}, incidents,
                    spans, person_wait, slot_wait)


def provenance(state: RunState, history: Sequence[tuple[int, Event]]) -> list[str]:
    """One row per attempt: what ran where, for how long, its tool calls and tokens, and which events say so.

    In a fork, an event copied from the parent is credited to it: ``<parent>@<position>``.
    """
    return provenance_rows(read(state, history))


def provenance_rows(reading: Reading) -> list[str]:
    credit = reading.credit

    def credited(pos: int) -> str:
        return f"{credit[pos][0]}@{credit[pos][1]}" if pos in credit else str(pos)

    where = credited if credit else str  # no fork: every event is this run's own

    rows = ["## Provenance", "",
            ("| step | persona | backend | model | attempt | duration | tool calls | tokens (prompt + completion) "
             "| events |"),
            "|---|---|---|---|---|---|---|---|---|"]
    all_calls = all_prompt = all_completion = 0
    for (sid, attempt), (started, pos, end, duration, calls, usage) in reading.attempts.items():
        positions = f"{where(pos)}, {where(end)}" if end else where(pos)
        prompt, completion = (_tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")) if usage else (0, 0)
        all_calls, all_prompt, all_completion = all_calls + calls, all_prompt + prompt, all_completion + completion
        tokens = f"{prompt:,} + {completion:,}" if usage else "-"
        rows.append(
            f"| {sid} | {started.persona or '-'} | {started.backend} | {started.model or '-'} | {attempt} "
            f"| {seconds(duration)} | {calls} | {tokens} | {positions} |"
        )
    rows.append(f"| **total** | | | | | | {all_calls} | {all_prompt:,} + {all_completion:,} | |")
    for pos, ev in reading.resumed:
        who = f"(timer: {ev.timer})" if ev.timer else f"(person: {ev.by or 'unknown'})"
        rows.append(f"| {ev.step_id} | {who} | approval | - | 1 | - | - | - | {where(pos)} |")
    return rows + [""]


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def after_action_review(state: RunState, history: Sequence[tuple[int, Event]], wall: float) -> list[str]:
    """What went right, what went wrong, what could be better, and where the time went: from the events alone."""
    return review(state, read(state, history), wall)


def review(state: RunState, reading: Reading, wall: float) -> list[str]:
    snap = state.snapshot
    right: list[str] = []
    wrong: list[str] = []
    better: list[str] = []

    first_time = [sid for sid, st in state.steps.items()
                  if succeeded(st.status) and st.attempt == 1
                  and not kind_rules(snap.step(sid).kind).pauses_for_person]
    if first_time:
        right.append(f"- {count(len(first_time), 'step')} passed first time: {', '.join(first_time)}.")
    step_time, running = _step_time(reading.spans)
    parallelism = step_time / running if running > 0 else 0.0
    if parallelism >= PARALLEL_CLAIM:
        right.append(f"- Steps ran side by side: {parallelism:.2f} at a time on average while any step ran.")

    for pos, ev in reading.incidents:
        if isinstance(ev, StepFailed):
            what = "retried" if ev.will_retry else "gave up"
            where = f" at `{ev.frames[-1]}`" if ev.frames else ""
            wrong.append(f"- Step {ev.step_id} attempt {ev.attempt} failed ({ev.error}){where}; {what} [event {pos}].")
        elif isinstance(ev, AnomalyDetected):
            wrong.append(f"- Anomaly on {ev.step_id}: {ev.kind} ({ev.severity}) - {ev.detail}; "
                         f"action {ev.action} [event {pos}].")
        elif isinstance(ev, StepResumed):
            wrong.append(f"- Step {ev.step_id} was rejected by {ev.by or 'someone'}"
                         + (f": {ev.comment}" if ev.comment else "") + f" [event {pos}].")

    timed = [(st.duration_s, sid) for sid, st in state.steps.items() if st.duration_s > 0]
    if timed:
        d, sid = max(timed)
        better.append(f"- Slowest step: {sid} ({seconds(d)}).")
    slot_wait = reading.slot_wait
    if slot_wait > 0.0005:
        better.append(f"- Time steps waited for an agent slot: {seconds(slot_wait)}.")

    out = ["## After-action review", "", "### What went right", ""]
    out += right or ["- Nothing stood out."]
    out += ["", "### What went wrong", ""]
    out += wrong or ["- Nothing: no failures, retries, stalls or rejections."]
    out += ["", "### What could be better", ""]
    out += better or ["- Nothing measurable."]
    out += ["", *_time(wall, running, step_time, reading.person_wait, slot_wait)]
    return out + [""]


def _time(wall: float, running: float, step_time: float, person: float, slots: float) -> list[str]:
    """Where the wall time went, and the parallelism measured over the time steps ran (a neutral account).

    Parallelism is step time (every attempt, failed ones too) over the time at
    least one step was running: waiting for a person or for an agent slot,
    when nothing ran, neither helps nor hurts it. 1.00 is one step at a time.
    """
    if wall <= 0 and running <= 0:
        return []
    parts = [f"a step was running for {seconds(running)}"]
    if person > 0:
        parts.append(f"a person was awaited for {seconds(person)}")
    if slots > 0.0005:
        parts.append(f"steps waited {seconds(slots)} in all for an agent slot")
    lines = ["### Where the time went", "", f"- Wall time {seconds(wall)}: {'; '.join(parts)}."]
    if running > 0:
        lines.append(f"- Parallelism {step_time / running:.2f}: {seconds(step_time)} of step time in the "
                     f"{seconds(running)} when at least one step was running.")
    return lines


def _step_time(spans: list[tuple[float, float]]) -> tuple[float, float]:
    """(sum of every attempt's time, time at least one attempt was running), from the attempts' spans."""
    total = sum(end - start for start, end in spans)
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return total, covered
