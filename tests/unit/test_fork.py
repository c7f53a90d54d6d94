"""Forks and retries in the pure core (flows.fork): what a fork keeps, and that it ends as a fresh run would.

The property drives random flows through the same tiny engine as
tests/unit/test_properties.py: a run (sometimes cancelled half-way) is
forked from any of its steps, the fork is driven with the same scripted step
results, and it must end exactly as a fresh, uncancelled run of the same
script: the same outcome and every step in the same status.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows import Flow, agent, code
from flows.errors import UnknownStep
from flows.events import (
    RunForked,
    RunLaunched,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from flows.fork import NotRetryable, downstream, fork, kept_steps
from flows.report import render
from flows.review import credits
from flows.state import fold
from tests.unit.test_properties import (
    SETTINGS,
    Engine,
    Scenario,
    _final,
    _first,
    chooser,
    scenarios,
)


class ForkEngine(Engine):
    """The property tests' engine, started from a fork's first events instead of a launch."""

    def check(self, event: Any, source: str) -> None:
        if source != "fork":  # copies were checked when the parent recorded them
            super().check(event, source)

    def run_fork(self, prefix: list[Any]) -> None:
        self.append([*prefix, RunStarted(run_id="f1", at=self.now)], "fork")
        self.loop()


@settings(SETTINGS, max_examples=120)  # ~3 s; raise it locally to hunt
@given(scenario=scenarios(cancels=True, timing_free_whens=True), data=st.data())
def test_a_fork_from_any_step_ends_as_a_fresh_run(scenario: Scenario, data: st.DataObject) -> None:
    parent = Engine(scenario, chooser(data))
    parent.run()
    from_step = data.draw(st.sampled_from([s.id for s in parent.snap.steps]), label="from_step")
    now = parent.now + 10
    prefix = fork(parent.state, parent.history, from_step, run_id="f1", now=now, by="p")

    kept = kept_steps(parent.state, from_step)
    assert not set(kept) & downstream(parent.snap, from_step)
    forked = ForkEngine(dataclasses.replace(scenario, cancel_at=None), chooser(data), now=now)
    forked.scores = {sid: score for sid, score in parent.scores.items() if sid in kept}
    forked.run_fork(prefix)
    for sid in kept:  # a kept step is not run again: its outcome is the parent's, event for event
        assert forked.state.steps[sid] == parent.state.steps[sid]

    fresh = _final(dataclasses.replace(scenario, cancel_at=None), _first)
    assert (forked.state.status, {k: (v.status, v.skip_reason) for k, v in forked.state.steps.items()}) == fresh
    assert forked.state.parent_run_id == "p1" and forked.state.forked_from == from_step


def _two_step_run() -> Engine:
    flow = Flow("pair", [code("a", fn=_ok), agent("b", persona="investigator", prompt="$a.output", deps=["a"])])
    engine = Engine(Scenario(flow, {}, False), _first)
    engine.scenario.scripts.update({"a": _script(0), "b": _script(9)})  # b fails every attempt
    engine.run()
    return engine


def _ok(ctx: Any) -> str:
    return "ok"


def _script(fails: int) -> Any:
    from tests.unit.test_properties import Script

    return Script(fails=fails, score=3)


def test_a_fork_begins_with_the_launch_then_names_its_parent_then_copies() -> None:
    parent = _two_step_run()
    assert parent.state.status == "failed"
    events = fork(parent.state, parent.history, "b", run_id="f1", now=1.0, by="ann", inputs={"extra": 1})
    launched, marker, *copies = events
    assert isinstance(launched, RunLaunched) and launched.run_id == "f1" and launched.launched_by == "ann"
    assert launched.input == {"question": "q", "flag": False, "extra": 1}
    assert isinstance(marker, RunForked)
    assert (marker.parent_run_id, marker.from_step, marker.copied_steps) == ("p1", "b", ["a"])
    assert marker.parent_position == parent.history[-1][0]
    assert [type(e) for e in copies] == [StepStarted, StepCompleted]
    assert marker.copied_positions == [pos for pos, ev in parent.history if getattr(ev, "step_id", "") == "a"]
    state = fold(events)
    assert state.steps["a"].status == "completed" and state.steps["b"].status == "pending"


def test_the_report_of_a_fork_credits_the_parents_events() -> None:
    parent = _two_step_run()
    events = fork(parent.state, parent.history, "b", run_id="f1", now=1.0)
    history = list(enumerate(events, start=100))
    copied = credits(history)
    assert copied == {102: ("p1", parent.history[2][0]), 103: ("p1", parent.history[3][0])}
    body = render(fold(history), history, "failed", "x", 2.0)
    assert "Forked from run `p1` at step `b`" in body
    assert f"p1@{parent.history[2][0]}, p1@{parent.history[3][0]}" in body  # a's attempt, in the provenance


def test_retry_takes_only_a_step_that_ended_badly_in_an_ended_run() -> None:
    parent = _two_step_run()
    events = fork(parent.state, parent.history, "b", run_id="f1", now=1.0, retry=True)
    assert isinstance(events[1], RunForked) and events[1].retry
    with pytest.raises(NotRetryable, match="it is completed"):
        fork(parent.state, parent.history, "a", run_id="f1", now=1.0, retry=True)
    with pytest.raises(UnknownStep):
        fork(parent.state, parent.history, "zz", run_id="f1", now=1.0)
    running = fold([e for _, e in parent.history if not type(e).__name__.startswith("RunF")])
    assert running.status == "running"
    with pytest.raises(NotRetryable, match="still running"):
        fork(running, parent.history, "b", run_id="f1", now=1.0, retry=True)
    assert any(isinstance(e, StepFailed) for _, e in parent.history)
