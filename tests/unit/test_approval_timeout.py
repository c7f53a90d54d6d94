"""An approval's timeout in the pure core: the timer's due time is in the log, and its decision is its own."""

from __future__ import annotations

import pytest

from flows import Flow, FlowDefinitionError, agent, approval
from flows.decide import decide, finish, has_work, resume, settled
from flows.events import RunLaunched, RunStarted, StepPaused, StepResumed
from flows.report import render
from flows.state import fold


def _flow(on_timeout: str = "reject") -> Flow:
    return Flow("timed", [
        approval("gate", prompt="Ship it?", timeout_s=60, on_timeout=on_timeout),
        agent("after", persona="writer", deps=["gate"], prompt="Write: $gate.output"),
    ])


def _paused(flow: Flow) -> list:
    events = [RunLaunched(run_id="r1", flow="timed", snapshot=flow.snapshot(), input={"question": "q"}, at=100.0),
              RunStarted(run_id="r1", at=100.0)]
    decision = decide(fold(events), 100.0)
    return events + decision.events


def test_pausing_records_when_the_timer_decides_and_the_run_settles_until_then() -> None:
    events = _paused(_flow())
    paused = events[-1]
    assert isinstance(paused, StepPaused) and paused.due_at == 160.0
    state = fold(events)
    assert decide(state, 159.0).events == [] and decide(state, 159.0).timer_at == 160.0
    assert settled(state, 159.0) and not has_work(state, 159.0)  # nobody follows a timer: it is not work


@pytest.mark.parametrize(("on_timeout", "decision", "run"), [("reject", "rejected", "rejected"),
                                                             ("approve", "approved", None)])
def test_the_timer_decides_on_timeout_and_names_itself(on_timeout: str, decision: str, run: str | None) -> None:
    events = _paused(_flow(on_timeout))
    due = decide(fold(events), 160.0)
    resumed = due.events[0]
    assert isinstance(resumed, StepResumed) and resumed.decision == decision
    assert resumed.by == "" and resumed.timer == "gate.timeout_s=60"
    state = fold(events + due.events)
    assert state.steps["gate"].decided_by == "timer gate.timeout_s=60"
    if run:
        history = list(enumerate(events + due.events, 1))
        end = finish(state, history, 161.0)
        assert type(end).__name__ == "RunRejected" and end.by == "timer gate.timeout_s=60"
        assert "(timer: gate.timeout_s=60)" in render(state, history, "rejected", "", 161.0)
    else:
        assert due.ready == ["after"]


def test_a_person_first_disarms_the_timer() -> None:
    events = _paused(_flow())
    events += resume(fold(events), "gate", "approved", 120.0, by="ann")
    decision = decide(fold(events), 500.0)
    assert decision.timer_at is None and not any(isinstance(e, StepResumed) for e in decision.events)


def test_on_timeout_is_checked_when_the_flow_is_defined() -> None:
    with pytest.raises(FlowDefinitionError, match="on_timeout must be"):
        Flow("bad", [approval("gate", prompt="?", timeout_s=5, on_timeout="maybe")])
