"""Decisions: pure functions from a run's state (and what just happened) to events.

The RunActor loads the state, calls one of these, appends what it returns with
the stream's expected version, and only then acts. Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

import msgspec

from flows import children, conditions, mapping, report, rules, template
from flows.auth import check_four_eyes
from flows.errors import NotWaiting, RunFinished, UnknownRun, UnknownStep
from flows.events import Decision as ApprovalDecision
from flows.events import (
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunRecovered,
    RunRejected,
    SkipReason,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
)
from flows.kinds import kind_rules
from flows.model import FlowSnapshot, StepSpec
from flows.state import RunState, dep_ended, evolve, frontier, status_counts
from flows.status import RUN_UNDER_WAY, STEP_TERMINAL, RunStatus, StepStatus, fails_run, rejects_run
from flows.tasks import run as task_run
from flows.text import check_text

History = list[tuple[int, Event]]

FAST_NOTE = (
    "Fast mode: answer concisely. Lead with the conclusion, keep only the evidence that carries it, "
    "and keep the requested format (frontmatter included)."
)
"""Appended to every agent step's prompt of a run launched with ``fast`` (seed 002's fast mode);
decided here, so StepStarted records exactly the prompt that was sent."""

_PAUSED = StepStatus.PAUSED.value  # an enum's class attribute costs ~0.25 us

FIELDS_COPY_CHARS = 64 * 1024
"""Past this many characters of output, a StepCompleted does not copy the fields out of it."""


class Decision(NamedTuple):
    """What ``decide`` found: events to append, and what the actor must arrange.

    ``ready`` lists agent steps allowed to start that need an agent slot;
    ``wake_at`` is when a retry falls due; ``finished`` means every step has
    ended and ``finish`` decides the run's outcome. ``timer_at`` is when a
    paused approval's timer falls due: unlike ``wake_at`` it is no work of the
    run's own (a run waiting for a person until then holds no thread, and
    following it stops), so whoever keeps the timer wakes the run then.
    """

    events: list[Event]
    ready: list[str]
    wake_at: float | None
    finished: bool
    timer_at: float | None = None
    land: bool = False
    """A task run's landing gate was approved and no landing is recorded yet: the actor lands now
    (one compare-and-swap of the target ref, ``RunLanded`` or ``LandingRefused``), then the run finishes."""
    state: RunState | None = None
    """The state ``events`` lead to (folded by ``decide`` as it went), when it says: whoever records
    them starts from it rather than folding them again (None: fold them)."""


@functools.lru_cache(maxsize=1024)
def _condition(expr: str) -> conditions.Condition:
    return conditions.parse(expr)


def _on_reject_of(snapshot: FlowSnapshot) -> dict[str, frozenset[str]]:
    """Each approval's on_reject steps, kept in the snapshot's ``__dict__`` (asked at every decision)."""
    found: dict[str, frozenset[str]] | None = snapshot.__dict__.get("_on_reject_of")
    if found is None:
        found = snapshot.__dict__["_on_reject_of"] = {s.id: frozenset(s.on_reject) for s in snapshot.steps
                                                      if s.on_reject}
    return found


def _resolver(state: RunState) -> Callable[[template.Ref], tuple[Any, bool]]:
    inputs = state.launched.input if state.launched else {}
    outputs, fields = state.outputs(), state.fields()

    def resolve(ref: template.Ref) -> tuple[Any, bool]:
        return template.resolve(ref, inputs=inputs, outputs=outputs, fields=fields)

    return resolve


def render_prompt(state: RunState, spec: StepSpec) -> tuple[str, list[str]]:
    """The step's prompt with every ``$ref`` resolved, and the refs that did not resolve."""
    inputs = state.launched.input if state.launched else {}
    return template.render(spec.prompt, inputs=inputs, outputs=state.outputs(), fields=state.fields())


def decide(state: RunState, now: float) -> Decision:
    """Every decision the state allows now: skips, pauses, code-step starts.

    Skips cascade within one call, so one append carries a whole cascade.
    """
    if state.launched is None or state.status not in RUN_UNDER_WAY:
        return Decision([], [], None, False)
    if state.tasks is not None:  # a task run: the coordinator's scheduling (flows.tasks.run)
        return _decide_task_run(state, now)
    snapshot = state.snapshot
    on_reject_of = _on_reject_of(snapshot)
    events: list[Event] = []
    ready: list[str] = []
    wake_at: float | None = None
    if status_counts(state)[1]:  # some step is paused (the fold counts them): an approval's timer may be due
        for sid, st in state.steps.items():
            if st.status == _PAUSED and st.due_at and now >= st.due_at:
                resumed = timed_out(state.spec(sid), now)
                events.append(resumed)
                state = evolve(state, resumed)
    specs = snapshot.steps
    changed = True
    while changed:
        changed = False
        ready.clear()
        # The steps in order, as the state stands when each is reached, but only those of its frontier:
        # every other pending step waits whatever its rule (no dep has ended), and a step that is not
        # pending has nothing to decide. A skip can put a later step in the frontier (looked at in this
        # pass) or an earlier one (in the next: a skip makes another).
        after = 0
        while True:
            front = frontier(state)
            k = bisect.bisect_left(front, after)
            if k == len(front):
                break
            after = front[k] + 1
            spec = specs[after - 1]
            st = state.steps[spec.id]
            if st.not_before and now < st.not_before:
                wake_at = st.not_before if wake_at is None else min(wake_at, st.not_before)
                continue
            if st.not_before and spec.deps and spec.trigger_rule != "always" and not dep_ended(spec, state.steps):
                continue  # a retry due is in the frontier whatever its deps: it waits like any other step
            verdict = rules.evaluate(spec.trigger_rule, rules.tally(spec, state.steps, on_reject_of))
            if verdict.verdict == "wait":
                continue
            event: Event
            if verdict.verdict == "skip":
                event = StepSkipped(step_id=spec.id, reason=cast(SkipReason, verdict.reason), detail=verdict.detail, at=now)
            elif spec.when and st.attempt == 0 and not (cond := _check_when(state, spec))[0]:
                event = StepSkipped(step_id=spec.id, reason="condition", detail=cond[1], at=now)
            elif (kind := kind_rules(spec.kind)).pauses_for_person:
                prompt, unresolved = render_prompt(state, spec)
                event = StepPaused(step_id=spec.id, prompt=prompt, unresolved=unresolved, at=now,
                                   due_at=now + spec.timeout_s if spec.timeout_s else 0.0)
            elif kind.fans_out:
                for fanned in mapping.started(state, spec, now):
                    events.append(fanned)
                    state = evolve(state, fanned)
                changed = True
                continue
            elif kind.needs_agent_slot:
                ready.append(spec.id)
                continue
            else:
                event = _started(state, spec, now)
            events.append(event)
            state = evolve(state, event)
            # Another pass only after a step ended: the trigger rules, conditions and prompts read ended
            # steps alone, so a start or a pause lets no other step go (a chain's step is one pass, not two).
            changed = changed or event.__class__ is StepSkipped
    moving, paused = status_counts(state)
    # A step moving or paused has not ended: the pass over every step is left for a run's last decision.
    finished = not moving and not paused and all(s.status in STEP_TERMINAL for s in state.steps.values())
    timer_at = min((s.due_at for s in state.steps.values() if s.status == _PAUSED and s.due_at),
                   default=None) if paused else None
    return Decision(events, [] if finished else list(ready), wake_at, finished, timer_at, state=state)


def _decide_task_run(state: RunState, now: float) -> Decision:
    """A task run: its tasks' scheduling, then its landing gate (``flows.tasks.run.open_gate``) once every
    task has ended. Approved, it asks the actor to land; the run finishes once the landing is recorded."""
    assert state.tasks is not None and state.launched is not None
    target = str(state.launched.input.get("target", ""))
    events, ready, tasks_ended = task_run.decide_run(state.tasks)
    gate = state.steps.get(task_run.LAND_STEP)
    if not tasks_ended or gate is None:  # a run launched without a target (or before the gate) has none
        return Decision(events, ready, None, tasks_ended)
    for event in events:
        state = evolve(state, event)
    assert state.tasks is not None
    spec = state.spec(task_run.LAND_STEP)
    if gate.status == StepStatus.PENDING:
        opened = task_run.open_gate(state.tasks, spec, run_id=state.run_id,
                                    target=target, now=now)
        events.append(opened)
        state = evolve(state, opened)
    elif gate.status == StepStatus.PAUSED and gate.due_at and now >= gate.due_at:
        resumed = timed_out(spec, now)
        events.append(resumed)
        state = evolve(state, resumed)
    gate = state.steps[task_run.LAND_STEP]
    assert state.tasks is not None
    land = gate.status == StepStatus.COMPLETED and not state.tasks.landing
    timer_at = gate.due_at if gate.status == StepStatus.PAUSED and gate.due_at else None
    return Decision(events, [], None, gate.terminal and not land, timer_at, land)


def timed_out(spec: StepSpec, now: float) -> StepResumed:
    """The decision of an approval's timer: ``on_timeout``, recorded as the timer's, not a person's."""
    decision: ApprovalDecision = "approved" if spec.on_timeout == "approve" else "rejected"
    return StepResumed(step_id=spec.id, decision=decision, timer=f"{spec.id}.timeout_s={spec.timeout_s:g}",
                       comment=f"no decision within {spec.timeout_s:g} s: {decision} by its timer", at=now)


def has_work(state: RunState, now: float) -> bool:
    """Whether the run has something to do without a person: a step to start (or waiting for a slot),
    a retry falling due, or an attempt under way (a branch beside a waiting approval)."""
    decision = decide(state, now)
    return bool(decision.events or decision.ready or decision.wake_at or decision.land or state.running())


def settled(state: RunState, now: float) -> bool:
    """Whether following a run can stop: it has ended, or it is paused with nothing to do but wait for
    a person (a sibling step waiting for an agent slot is something: the run moves on without anyone).

    What ``baton launch --follow``, ``approve`` & co wait for (``actors.runlog.follow``)."""
    return state.terminal or (state.status == RunStatus.PAUSED and not has_work(state, now))


def _check_when(state: RunState, spec: StepSpec) -> tuple[bool, str]:
    cond = _condition(spec.when)
    ok, seen = cond.evaluate(_resolver(state))
    return ok, conditions.describe(cond, seen, ok)


def _started(state: RunState, spec: StepSpec, now: float) -> StepStarted:
    st = state.steps[spec.id]
    launched = state.launched
    assert launched is not None
    kind = kind_rules(spec.kind)
    prompt, unresolved = render_prompt(state, spec) if kind.sends_prompt else ("", [])
    if launched.fast and kind.sends_prompt:
        prompt = f"{prompt}\n\n{FAST_NOTE}"
    if st.guidance and kind.sends_prompt:
        prompt = f"{prompt}\n\n{st.guidance}"
    return StepStarted(
        step_id=spec.id,
        attempt=st.attempt + 1,
        kind=spec.kind,
        prompt=prompt,
        persona=spec.persona,
        backend=launched.backend if kind.sends_prompt else kind.backend,
        model=launched.model if kind.sends_prompt else "",
        unresolved=unresolved,
        child_run_id=children.child_run_id(state.run_id, spec.id, st.failures) if kind.launches_run else "",
        at=now,
    )


def start(state: RunState, step_ids: Iterable[str], now: float) -> list[Event]:
    """StepStarted for agent steps that got a slot and are still pending (TaskStarted for tasks)."""
    if state.tasks is not None:
        return [] if state.terminal else task_run.start(state.tasks, step_ids, now)
    events: list[Event] = []
    for sid in step_ids:
        st = state.steps.get(sid)
        if st is not None and st.status == StepStatus.PENDING and not state.terminal:
            events.append(_started(state, state.spec(sid), now))
            # An id given twice (ready lists merged by the caller) must not start
            # the same attempt twice: that would be two model calls for one attempt.
            state = evolve(state, events[-1])
    return events


def code_output(value: Any) -> tuple[str, dict[str, Any] | None]:
    """What a code step's return value records: text, or a dict that is both
    the output (as JSON) and its fields (``$step.output.field``)."""
    if value is None:
        return "", None
    if isinstance(value, str):
        return value, None
    if isinstance(value, Mapping):
        fields = msgspec.to_builtins(dict(value), str_keys=True)  # {1: "one"} -> {"1": "one"}, as in its JSON
        return msgspec.json.encode(fields).decode(), fields
    return str(value), None


def _current(state: RunState, step_id: str, attempt: int) -> bool:
    st = state.steps.get(step_id)
    return st is not None and st.status == StepStatus.RUNNING and st.attempt == attempt and not state.terminal


def complete(
    state: RunState,
    step_id: str,
    attempt: int,
    output: str,
    now: float,
    *,
    duration_s: float = 0.0,
    usage: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
) -> list[Event]:
    """StepCompleted for the current attempt (nothing for a stale one).

    ``fields`` (a code step's returned dict) wins over frontmatter parsed from
    ``output``. An output longer than FIELDS_COPY_CHARS keeps its fields only
    in itself (``fields_in_output``): a 1 MB dict is recorded once, as text.
    """
    if not _current(state, step_id, attempt):
        return []
    error = ""
    if fields is None:
        fields, error = template.parse_frontmatter(output)
    in_output = len(output) > FIELDS_COPY_CHARS
    return [
        StepCompleted(
            step_id=step_id,
            attempt=attempt,
            output=output,
            fields={} if in_output else fields,
            fields_in_output=in_output,
            fields_error=error,
            duration_s=duration_s,
            usage=usage or {},
            at=now,
        )
    ]


def fail(
    state: RunState,
    step_id: str,
    attempt: int,
    error: str,
    now: float,
    *,
    duration_s: float = 0.0,
    lost: bool = False,
    frames: Iterable[str] = (),
    usage: Mapping[str, Any] | None = None,
) -> list[Event]:
    """StepFailed for the current attempt, retrying with exponential backoff.

    A lost attempt (crash) is always retried and does not use up a retry.
    ``frames`` are where a code step's exception came from ("file:line in func");
    ``usage`` what the model turns of a failed attempt cost (a tool loop that hit its limit).
    """
    if not _current(state, step_id, attempt):
        return []
    st, spec = state.steps[step_id], state.spec(step_id)
    will_retry = lost or st.failures < spec.retries
    delay = 0.0 if lost else spec.retry_delay_s * (2 ** st.failures)
    return [
        StepFailed(
            step_id=step_id,
            attempt=attempt,
            error=error,
            will_retry=will_retry,
            retry_at=now + delay if will_retry else 0.0,
            duration_s=duration_s,
            lost=lost,
            frames=list(frames),
            usage=dict(usage or {}),
            at=now,
        )
    ]


def resume(state: RunState, step_id: str, decision: str, now: float, *, by: str = "", comment: str = "") -> list[Event]:
    """StepResumed for a paused approval; raises UnstorableText (``comment``, ``by``: see
    ``flows.text``), NotWaiting, UnknownStep, UnknownRun, RunFinished, or FourEyesRefused
    when the step needs four eyes and ``by`` launched the run.

    ValueError when ``decision`` is neither "approved" nor "rejected": the
    event's type only admits those two, so another word would be appended and
    then fail to decode on every replay.
    """
    if decision not in ("approved", "rejected"):
        raise ValueError(f"decision must be 'approved' or 'rejected', not {decision!r}")
    check_text("comment", comment)
    check_text("by", by)
    if state.launched is None:
        raise UnknownRun(state.run_id)
    if step_id not in state.steps:
        raise UnknownStep(state.run_id, step_id)
    if state.terminal:
        raise RunFinished(state.run_id, state.status)
    st = state.steps[step_id]
    if st.status != StepStatus.PAUSED:
        raise NotWaiting(state.run_id, step_id, st.status)
    if state.spec(step_id).four_eyes:
        check_four_eyes(state.run_id, step_id, state.launched.launched_by, by)
    return [StepResumed(step_id=step_id, decision=cast(ApprovalDecision, decision), by=by, comment=comment, at=now)]


def cancel(state: RunState, history: History, now: float, *, reason: str = "", by: str = "",
           evidence: report.Evidence | None = None) -> list[Event]:
    """Stop every attempt, skip every step not yet ended, and end the run as cancelled.

    ``history`` is the run's recorded ``(position, event)`` pairs, for the report.
    Raises UnstorableText (``reason``, ``by``: see ``flows.text``), UnknownRun or RunFinished.
    """
    check_text("reason", reason)
    check_text("by", by)
    if state.launched is None:
        raise UnknownRun(state.run_id)
    if state.terminal:
        raise RunFinished(state.run_id, state.status)
    events: list[Event] = []
    if state.tasks is not None:  # a task run: every task not ended is aborted (its step mirrors it: cancelled)
        why = "the run was cancelled" + (f" by {by}" if by else "") + (f": {reason}" if reason else "")
        events += task_run.abort_all(state.tasks, why, by=by, now=now)
    after = functools.reduce(evolve, events, state)
    steps: list[Event] = []
    for sid, st in after.steps.items():
        if st.status == StepStatus.RUNNING:
            steps.append(StepCancelled(step_id=sid, attempt=st.attempt, reason=reason or "run cancelled", at=now))
        elif not st.terminal:
            steps.append(StepSkipped(step_id=sid, reason="cancelled", detail=reason or "run cancelled", at=now))
    after = functools.reduce(evolve, steps, after)
    events += steps
    body = report.render(after, [*history, *((0, e) for e in events)], RunStatus.CANCELLED, reason or "cancelled", now,
                         evidence)
    events.append(RunCancelled(reason=reason, by=by, report=body, at=now))
    return events


def recover(state: RunState, now: float, *, node: str = "") -> list[Event]:
    """After a restart: attempts found running were lost; each gets a new attempt."""
    if state.terminal or state.launched is None:
        return []
    running = state.running()
    if state.tasks is not None:
        return [*task_run.recover(state.tasks, now), RunRecovered(node=node, steps=running, at=now)]
    events: list[Event] = [
        StepFailed(step_id=sid, attempt=state.steps[sid].attempt, error="lost: the process running it stopped",
                   will_retry=True, retry_at=now, lost=True, at=now)
        for sid in running
    ]
    events.append(RunRecovered(node=node, steps=running, at=now))
    return events


def leaves(snapshot: FlowSnapshot) -> list[str]:
    """Steps nothing depends on: they decide the run's outcome (a task run's landing gate does not hide
    the tasks it follows: they decide too, before it)."""
    needed = {d for s in snapshot.steps if not task_run.is_gate(s) for d in s.deps}
    return [s.id for s in snapshot.steps if s.id not in needed]


def outcome(state: RunState) -> tuple[RunStatus, str]:
    """(status, reason) of a run whose steps have all ended (DESIGN §3; the rules: ``flows.status``)."""
    for sid in leaves(state.snapshot):
        st = state.steps[sid]
        if fails_run(st.status, st.skip_reason):
            culprit = next(
                (f"step {k!r} failed: {v.error}" for k, v in state.steps.items() if v.status == StepStatus.FAILED),
                f"step {sid!r} {st.status}",
            )
            return RunStatus.FAILED, culprit
    for sid, st in state.steps.items():
        if rejects_run(st.status):
            # Who rejected is RunRejected.by, not part of the reason: shown together, it was said twice.
            return RunStatus.REJECTED, f"step {sid!r} was rejected" + (f": {st.output}" if st.output else "")
    return RunStatus.COMPLETED, ""


def finish(state: RunState, history: History, now: float, evidence: report.Evidence | None = None) -> Event:
    """The terminal event of a run whose steps have all ended, with its report (``evidence``: checked items)."""
    status, reason = outcome(state)
    body = report.render(state, history, status, reason, now, evidence)
    if status == RunStatus.FAILED:
        return RunFailed(reason=reason, report=body, at=now)
    if status == RunStatus.REJECTED:
        rejected_by = next((s.decided_by for s in state.steps.values() if rejects_run(s.status)), "")
        return RunRejected(reason=reason, by=rejected_by, report=body, at=now)
    return RunCompleted(report=body, at=now)
