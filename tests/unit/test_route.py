"""actors.runlog.route: where a person's command for a run is carried out (a pure decision)."""

from __future__ import annotations

import pytest

from actors.runlog import Route, route
from flows import Flow, agent, approval
from flows.catalog import FlowRegistry
from flows.decide import decide, start
from flows.events import RunCancelled, RunStarted, StepCompleted
from flows.launch import LaunchParams, prepare
from flows.state import RunState, evolve

FLOW = Flow("routed", steps=[agent("work", persona="analyst", prompt="$input.question"),
                             approval("gate", deps=["work"], prompt="ok?")])


def fold(*events) -> RunState:
    state = RunState()
    for event in events:
        state = evolve(state, event)
    return state


LAUNCHED = prepare(FlowRegistry([FLOW]), LaunchParams("routed", "q"), run_id="R1", now=1.0)
STARTED = RunStarted(run_id="R1", at=1.0)
RUNNING = fold(LAUNCHED, STARTED, *start(fold(LAUNCHED, STARTED), ["work"], 1.0))
_DONE = evolve(RUNNING, StepCompleted(step_id="work", attempt=1, output="x", at=2.0))
PAUSED = fold(LAUNCHED, STARTED, *start(fold(LAUNCHED, STARTED), ["work"], 1.0),
              StepCompleted(step_id="work", attempt=1, output="x", at=2.0), *decide(_DONE, 2.0).events)
ENDED = evolve(PAUSED, RunCancelled(at=3.0))
LIVE = {"a", "b"}


def never() -> str:
    raise AssertionError("missing() asked although the answer did not depend on it")


@pytest.mark.parametrize("state,last,me,missing,expected", [
    (RUNNING, "a", "b", never, Route(node="a")),            # a drives it: hand it over
    (RUNNING, "gone", "b", lambda: "", Route()),            # its driver is gone: take it over
    (RUNNING, "b", "b", lambda: "", Route()),               # ours
    (PAUSED, "a", "b", lambda: "", Route()),                # waiting for a person: anyone may take it
    (PAUSED, "a", "b", lambda: "mine", Route(node="a")),    # ...but not one that cannot run its code
    (PAUSED, "gone", "b", lambda: "mine", Route(missing="mine")),  # and nobody live can: refuse
    (PAUSED, "b", "b", lambda: "mine", Route(missing="mine")),     # not even its last driver
    (ENDED, "a", "b", never, Route()),                      # the run's actor answers RunFinished
    (RunState(run_id="R9"), "", "b", never, Route()),       # ...or UnknownRun
])
def test_route(state, last, me, missing, expected):
    assert route(state, last, me, LIVE, missing) == expected


def test_the_states_above_are_what_their_names_say():
    assert (RUNNING.status, PAUSED.status, ENDED.status) == ("running", "paused", "cancelled")
    assert RUNNING.running() == ["work"] and not PAUSED.running()
