"""flows.state: a run's state is a pure fold over its events.

Replay (a restarted RunActor, a projection rebuild, an audit) gets its state
only from the log, so what matters is that ``fold(log)`` gives exactly what
the live engine held, and that the graph comes from the log, not from code.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flows import Flow, agent, approval, code
from flows.decide import decide, resume
from flows.codec import event_from_data
from flows.events import (
    AnomalyDetected,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunLaunched,
    RunQueued,
    RunRecovered,
    RunRejected,
    RunStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
    event_data,
)
from flows.state import RunState, evolve, fold

T0 = 500.0


def tally(ctx: Any) -> str:
    """A code step's function."""
    return "..."


FLOW = Flow("f", [
    agent("a", persona="investigator", prompt="Look at $input.question"),
    code("b", fn=tally),
    approval("gate", prompt="ok?", deps=["a"]),
])


def launched(flow: Flow = FLOW) -> RunLaunched:
    return RunLaunched(run_id="r1", flow=flow.name, snapshot=flow.snapshot(), input={"question": "why?"}, at=T0)


def a_log() -> list[Event]:
    """A run with a retry, a lost attempt, an anomaly, an approval and a result."""
    return [
        launched(),
        RunQueued(run_id="r1", reason="capacity", plan_position=2, at=T0 + 1),
        RunStarted(run_id="r1", reason="slot free", at=T0 + 2),
        StepStarted(step_id="b", attempt=1, kind="code", backend="code", at=T0 + 2),
        StepStarted(step_id="a", attempt=1, prompt="Look at why?", persona="investigator", backend="offline",
                    model="qwen", at=T0 + 3),
        AnomalyDetected(step_id="a", attempt=1, kind="stall", action="nudge", guidance="Hurry.", at=T0 + 4),
        StepFailed(step_id="b", attempt=1, error="boom", will_retry=True, retry_at=T0 + 6, duration_s=1, at=T0 + 5),
        StepFailed(step_id="a", attempt=1, error="lost", will_retry=True, retry_at=T0 + 7, lost=True, at=T0 + 7),
        RunRecovered(node="n2", steps=["a"], at=T0 + 7),
        StepStarted(step_id="a", attempt=2, prompt="Look at why?\n\nHurry.", persona="investigator", at=T0 + 7),
        StepStarted(step_id="b", attempt=2, kind="code", backend="code", at=T0 + 8),
        StepCompleted(step_id="b", attempt=2, output="---\nn: 2\n---\nok", fields={"n": 2}, duration_s=1, at=T0 + 9),
        StepCompleted(step_id="a", attempt=2, output="found E1", duration_s=3, at=T0 + 10),
        StepPaused(step_id="gate", prompt="ok?", at=T0 + 10),
        StepResumed(step_id="gate", decision="approved", by="ana", comment="fine", at=T0 + 20),
        RunCompleted(report="# report", at=T0 + 21),
    ]


def test_fold_is_evolve_applied_in_order() -> None:
    log = a_log()
    state = RunState()
    for i, event in enumerate(log, start=1):
        state = evolve(state, event, i)
        assert state == fold(list(enumerate(log[:i], start=1)))  # at every point, not just the end
    assert state.version == len(log) and state.position == len(log)


def test_fold_continues_from_a_state() -> None:
    log = a_log()
    assert fold(log[5:], fold(log[:5])) == fold(log)


def test_a_replay_through_the_stored_form_gives_the_same_state() -> None:
    """What the store keeps is (type, JSON data); decoding it back must fold to the same state."""
    log = a_log()
    stored = [(type(e).__name__, msgspec.json.decode(msgspec.json.encode(event_data(e)))) for e in log]
    assert fold([event_from_data(kind, data) for kind, data in stored]) == fold(log)


def test_the_whole_story_of_a_run() -> None:
    log = a_log()
    s = fold(log[:1])
    assert (s.run_id, s.status, s.launched_at, s.version) == ("r1", "queued", T0, 1)
    assert set(s.steps) == {"a", "b", "gate"} and all(st.status == "pending" for st in s.steps.values())

    s = fold(log[:2])
    assert (s.status, s.queue_reason) == ("queued", "capacity")
    s = fold(log[:3])
    assert (s.status, s.queue_reason, s.started_at) == ("running", "", T0 + 2)

    s = fold(log[:5])
    a = s.steps["a"]
    assert (a.status, a.attempt, a.started_at, a.persona, a.backend, a.model, a.prompt) == (
        "running", 1, T0 + 3, "investigator", "offline", "qwen", "Look at why?")
    assert sorted(s.running()) == ["a", "b"]

    s = fold(log[:6])
    assert (s.steps["a"].anomalies, s.steps["a"].guidance) == (1, "Hurry.")

    s = fold(log[:7])
    b = s.steps["b"]
    assert (b.status, b.not_before, b.failures, b.error) == ("pending", T0 + 6, 1, "boom")

    s = fold(log[:9])
    a = s.steps["a"]
    assert (a.status, a.failures, a.not_before) == ("pending", 0, T0 + 7)  # a lost attempt is not a failure
    assert s.recoveries == 1

    s = fold(log[:10])
    assert (s.steps["a"].status, s.steps["a"].not_before, s.steps["a"].error) == ("running", 0.0, "")

    s = fold(log[:13])
    assert s.outputs() == {"b": "---\nn: 2\n---\nok", "a": "found E1"}
    assert s.fields() == {"b": {"n": 2}, "a": {}}
    assert (s.steps["a"].duration_s, s.steps["a"].ended_at) == (3, T0 + 10)

    s = fold(log[:14])
    assert (s.status, s.steps["gate"].status, s.steps["gate"].prompt) == ("paused", "paused", "ok?")

    s = fold(log[:15])
    gate = s.steps["gate"]
    assert (s.status, gate.status, gate.output, gate.decided_by) == ("running", "completed", "fine", "ana")
    assert s.outputs()["gate"] == "fine"  # $gate.output is the approver's comment

    s = fold(log)
    assert (s.status, s.terminal, s.report, s.ended_at) == ("completed", True, "# report", T0 + 21)


def test_a_run_is_paused_only_when_nothing_else_can_move() -> None:
    base = [launched(), RunStarted(run_id="r1", at=T0)]
    running_b = StepStarted(step_id="b", attempt=1, kind="code", at=T0)
    paused = StepPaused(step_id="gate", at=T0)
    assert fold([*base, paused]).status == "paused"
    assert fold([*base, running_b, paused]).status == "running"  # b may still finish
    retry = StepFailed(step_id="b", attempt=1, error="x", will_retry=True, retry_at=T0 + 9, at=T0)
    assert fold([*base, running_b, paused, retry]).status == "running"  # a retry is due
    gave_up = StepFailed(step_id="b", attempt=1, error="x", at=T0)
    assert fold([*base, running_b, paused, gave_up]).status == "paused"
    assert fold([*base, running_b, paused, gave_up]).steps["b"].status == "failed"


def test_a_rejection_is_recorded_with_who_and_why() -> None:
    s = fold([launched(), RunStarted(run_id="r1", at=T0), StepPaused(step_id="gate", at=T0),
              StepResumed(step_id="gate", decision="rejected", by="bo", comment="no", at=T0 + 1)])
    gate = s.steps["gate"]
    assert (gate.status, gate.decided_by, gate.output, gate.ended_at) == ("rejected", "bo", "no", T0 + 1)
    assert s.outputs()["gate"] == "no"  # a rejection's comment feeds $gate.output, for on_reject steps


def test_skips_and_cancels() -> None:
    s = fold([launched(), RunStarted(run_id="r1", at=T0),
              StepStarted(step_id="b", attempt=1, kind="code", at=T0),
              StepCancelled(step_id="b", attempt=1, reason="user", at=T0 + 1),
              StepSkipped(step_id="a", reason="cancelled", detail="user", at=T0 + 1)])
    assert (s.steps["b"].status, s.steps["b"].error) == ("cancelled", "user")
    a = s.steps["a"]
    assert (a.status, a.skip_reason, a.detail, a.terminal) == ("skipped", "cancelled", "user", True)


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (RunFailed(reason="step 'a' failed", report="r"), "failed"),
        (RunRejected(reason="no", by="bo", report="r"), "rejected"),
        (RunCancelled(reason="stop", by="ana", report="r"), "cancelled"),
        (RunCompleted(report="r"), "completed"),
    ],
)
def test_terminal_events_end_the_run(event: Event, status: str) -> None:
    s = fold([launched(), RunStarted(run_id="r1", at=T0), event])
    assert (s.status, s.terminal, s.report) == (status, True, "r")
    assert s.reason == getattr(event, "reason", "")


def test_an_event_the_fold_does_not_know_only_advances_the_version() -> None:
    class Note(Event):
        text: str = ""

    before = fold([launched()])
    after = evolve(before, Note(text="hi"), 7)
    assert after.version == before.version + 1 and after.position == 7
    assert msgspec.structs.replace(after, version=before.version, position=before.position) == before


def test_a_state_without_a_launch_has_no_snapshot() -> None:
    with pytest.raises(AssertionError):
        RunState().snapshot  # noqa: B018


def test_the_pinned_snapshot_drives_replay_and_resume_after_the_flow_changed() -> None:
    """LangGraph applied the newest graph to old threads; baton reads the graph from RunLaunched."""
    v1 = Flow("pinned", [approval("gate", prompt="Ship?"), code("ship", fn=tally, deps=["gate"])])
    log: list[Event] = [RunLaunched(run_id="r9", flow="pinned", snapshot=v1.snapshot(), at=T0),
                        RunStarted(run_id="r9", at=T0)]
    log += decide(fold(log), T0).events  # the gate pauses

    # The module is edited and reloaded: same name, different graph.
    v2 = Flow("pinned", [code("other", fn=tally)])
    assert v2.snapshot() != v1.snapshot()

    stored = [(type(e).__name__, msgspec.json.encode(event_data(e))) for e in log]
    replayed = fold([event_from_data(kind, msgspec.json.decode(data)) for kind, data in stored])
    assert [s.id for s in replayed.snapshot.steps] == ["gate", "ship"]
    log += resume(replayed, "gate", "approved", T0 + 5, by="ana")
    decision = decide(fold(log), T0 + 6)
    assert [(type(e).__name__, e.step_id) for e in decision.events] == [("StepStarted", "ship")]


def test_a_step_aborted_beside_a_paused_approval_leaves_the_run_paused() -> None:
    """Nothing runs and a person is awaited: paused, whichever event ended the last attempt."""
    flow = Flow("side", [agent("a", persona="investigator", prompt="x"), approval("gate", prompt="ok?")])
    s = fold([launched(flow), RunStarted(run_id="r1", at=T0),
              StepStarted(step_id="a", attempt=1, at=T0), StepPaused(step_id="gate", at=T0)])
    assert s.status == "running"
    assert evolve(s, StepCancelled(step_id="a", attempt=1, reason="aborted", at=T0 + 1)).status == "paused"


def test_step_events_of_a_cancel_do_not_move_a_queued_run() -> None:
    s = fold([launched(), RunQueued(run_id="r1", at=T0), StepSkipped(step_id="a", reason="cancelled", at=T0)])
    assert s.status == "queued"
