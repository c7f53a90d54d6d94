"""The status rules of flows.status, and the three places that keep statuses agreeing on any log.

The catalogue's real logs are checked in tests/integration/test_status_agreement.py;
here hypothesis writes logs the engine never would (events in any order, stray
events after the end, a second launch), and the fold, the projector's rows and
the frames must still say the same after every event.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import RecordedEvent
from flows import Flow, agent, approval
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
from flows.state import fold
from flows.status import (
    RUN_STATUSES,
    RUN_TERMINAL,
    STEP_TERMINAL,
    RunStatus,
    StepStatus,
    run_status,
    run_status_of,
    step_status_of,
)
from tests.status_views import views

FLOW = Flow("statuses", category="Analysis", steps=[
    agent("a", persona="reviewer", prompt="A"),
    approval("gate", prompt="Go?"),
    agent("b", persona="reviewer", prompt="B $a.output", deps=["a"]),
])
SNAPSHOT = FLOW.snapshot("medium")
STEPS = [s.id for s in SNAPSHOT.steps]


def launched(at: float = 1.0) -> RunLaunched:
    return RunLaunched(run_id="r1", flow=FLOW.name, snapshot=SNAPSHOT, at=at)


def recorded(events: list[Event]) -> list[RecordedEvent]:
    return [RecordedEvent(n, "run-r1", n, type(e).__name__, event_data(e), {}, 0.0, "")
            for n, e in enumerate(events, 1)]


def agree(events: list[Event]) -> list[dict]:
    said = views(recorded(events), lambda rec: event_from_data(rec.type, rec.data))
    for n, view in enumerate(said, 1):
        assert view["rows"] == view["fold"], (n, events[n - 1])
        assert view["frames"] == view["fold"], (n, events[n - 1])
    return said


def test_the_enums_are_the_statuses_of_design_3():
    assert [s.value for s in RUN_STATUSES] == ["queued", "running", "paused", "completed", "failed", "rejected",
                                               "cancelled"]
    assert {s.value for s in StepStatus} == {"pending", "running", "paused", "completed", "failed", "rejected",
                                             "skipped", "cancelled"}
    assert RUN_TERMINAL == {"completed", "failed", "rejected", "cancelled"}
    assert STEP_TERMINAL == RUN_TERMINAL | {"skipped"}
    # StrEnum: equal to, hashed and formatted as the value, so logs, rows and frames read as before.
    assert RunStatus.PAUSED == "paused" and f"{RunStatus.PAUSED}" == "paused" and "paused" in RUN_TERMINAL | {
        RunStatus.PAUSED}


@pytest.mark.parametrize("steps, expected", [
    ([("paused", False), ("pending", False)], "paused"),  # a person is awaited, nothing else can move
    ([("paused", False), ("pending", True)], "running"),  # a retry is pending beside the approval
    ([("paused", False), ("running", False)], "running"),
    ([("completed", False), ("skipped", False)], "running"),  # nothing awaited: the run is about to end
])
def test_a_run_under_way_is_paused_only_when_a_person_is_awaited_and_nothing_else_can_move(steps, expected):
    for current in ("running", "paused"):
        assert run_status(current, steps) == expected
    for current in ("queued", "completed", "cancelled"):
        assert run_status(current, steps) == current  # not under way: step events do not move it


def test_each_event_names_its_status():
    assert step_status_of(StepFailed(step_id="a", attempt=1, error="x", will_retry=True)) == "pending"
    assert step_status_of(StepFailed(step_id="a", attempt=1, error="x")) == "failed"
    assert step_status_of(StepResumed(step_id="gate", decision="approved")) == "completed"
    assert step_status_of(StepResumed(step_id="gate", decision="rejected")) == "rejected"
    assert step_status_of(RunStarted(run_id="r1")) is None
    assert run_status_of(launched()) == "queued"
    assert run_status_of(RunCancelled()) == "cancelled"
    assert run_status_of(StepStarted(step_id="a", attempt=1)) is None


def test_an_ended_run_keeps_its_first_ending_everywhere():
    """The fold used to take the last ending (and a later RunQueued/RunStarted), the rows kept the first
    ending but took a later RunQueued: now all three keep the first ending, its reason and report."""
    events = [launched(), RunStarted(run_id="r1", at=2.0), RunFailed(reason="first", report="# one", at=3.0),
              RunCompleted(report="# two", at=4.0), RunQueued(run_id="r1", at=5.0), RunStarted(run_id="r1", at=6.0),
              RunCancelled(reason="late", at=7.0)]
    said = agree(events)
    assert {view["fold"][0] for view in said[2:]} == {"failed"}
    state = fold(events)
    assert (state.status, state.reason, state.report, state.ended_at) == ("failed", "first", "# one", 3.0)
    assert state.version == len(events)


def test_a_second_launch_changes_nothing():
    """The fold used to start the run over at a second RunLaunched; the rows ignored it. Now both do."""
    events = [launched(), RunStarted(run_id="r1", at=2.0), StepStarted(step_id="a", attempt=1, at=3.0),
              launched(at=4.0)]
    agree(events)
    state = fold(events)
    assert state.steps["a"].status == "running" and state.status == "running" and state.launched_at == 1.0


def _events() -> st.SearchStrategy[Event]:
    step = st.sampled_from(STEPS)
    at = st.floats(min_value=1.0, max_value=100.0)  # recorded events always carry the clock's time
    return st.one_of(
        st.builds(RunQueued, run_id=st.just("r1"), at=at),
        st.builds(RunStarted, run_id=st.just("r1"), at=at),
        st.builds(StepStarted, step_id=step, attempt=st.integers(1, 3), at=at),
        st.builds(StepCompleted, step_id=step, attempt=st.integers(1, 3), output=st.just("out"), at=at),
        st.builds(StepFailed, step_id=step, attempt=st.integers(1, 3), error=st.just("x"),
                  will_retry=st.booleans(), retry_at=st.sampled_from([0.0, 50.0]), at=at),
        st.builds(StepCancelled, step_id=step, attempt=st.integers(1, 3), at=at),
        st.builds(StepSkipped, step_id=step, reason=st.sampled_from(["condition", "upstream_failed", "rejected"]),
                  at=at),
        st.builds(StepPaused, step_id=step, at=at),
        st.builds(StepResumed, step_id=step, decision=st.sampled_from(["approved", "rejected"]), at=at),
        st.builds(AnomalyDetected, step_id=step, at=at),
        st.builds(RunRecovered, at=at),
        st.builds(RunCompleted, at=at),
        st.builds(RunFailed, reason=st.just("f"), at=at),
        st.builds(RunRejected, reason=st.just("r"), at=at),
        st.builds(RunCancelled, reason=st.just("c"), at=at),
        st.just(launched(at=9.0)),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_events(), max_size=25))
def test_fold_rows_and_frames_agree_after_every_event_of_any_log(events):
    said = agree([launched(), *events])
    for view in said:
        run, steps = view["fold"]
        assert run in {s.value for s in RunStatus}
        assert set(steps.values()) <= {s.value for s in StepStatus}
