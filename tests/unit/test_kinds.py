"""Step kinds as a table: every kind has its rules (flows.kinds) and, if it runs, its executor."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from actors.step import EXECUTORS
from flows import Flow, FlowDefinitionError, StepKind, agent, approval, code
from flows.decide import decide, start
from flows.codec import event_from_data
from flows.events import RunLaunched, RunStarted, event_data
from flows.kinds import KINDS, kind_rules
from flows.model import StepSpec
from flows.state import fold


def test_every_kind_has_its_rules_and_every_kind_that_runs_an_executor():
    assert set(KINDS) == set(StepKind)
    assert all(rules.kind is kind for kind, rules in KINDS.items())
    assert set(EXECUTORS) == {kind for kind in StepKind if not kind_rules(kind).pauses_for_person}


def test_a_kind_is_looked_up_by_its_value_as_well():
    assert kind_rules("approval") is KINDS[StepKind.APPROVAL]
    with pytest.raises(KeyError):
        kind_rules("teleport")


def test_the_kind_is_encoded_as_before_and_old_logs_decode():
    spec = StepSpec(id="gate", kind=StepKind.APPROVAL, prompt="go?")
    assert msgspec.json.encode(spec) == b'{"id":"gate","kind":"approval","prompt":"go?"}'
    old = msgspec.json.decode(b'{"id":"a","kind":"agent","persona":"reviewer"}', type=StepSpec)
    assert old.kind is StepKind.AGENT
    started = event_from_data("StepStarted", {"step_id": "x", "attempt": 1, "kind": "code"})
    assert started.kind is StepKind.CODE and event_data(started)["kind"] == "code"
    assert event_from_data("StepStarted", {"step_id": "x", "attempt": 1}).kind is StepKind.AGENT  # before kinds
    with pytest.raises(msgspec.ValidationError):
        event_from_data("StepStarted", {"step_id": "x", "attempt": 1, "kind": "teleport"})


def test_validation_asks_of_each_kind_what_its_row_says():
    def refused(*steps) -> str:
        with pytest.raises(FlowDefinitionError) as caught:
            Flow("kinds", list(steps))
        return caught.value.problem

    assert refused(agent("a", persona="", prompt="p")) == "an agent step needs a persona"
    assert refused(agent("a", persona="reviewer", prompt=" ")) == "an agent step needs a prompt"
    assert refused(approval("g", prompt="")) == "an approval step needs a prompt (what is the person asked?)"
    assert refused(code("c", fn=None)) == "a code step needs a callable fn"  # type: ignore[arg-type]
    rejecting_agent = dataclasses.replace(agent("a", persona="reviewer", prompt="p"), on_reject=("b",))
    assert refused(rejecting_agent, agent("b", persona="reviewer", prompt="p", deps=["a"])) == (
        "only an approval step can have on_reject")


def test_a_step_starts_as_its_kind_says():
    """An agent step waits for a slot; a code step starts at once; an approval pauses for a person."""
    flow = Flow("kinds", [agent("a", persona="reviewer", prompt="A"), code("c", fn=len),
                          approval("g", prompt="Go?")])
    state = fold([RunLaunched(run_id="r", flow="kinds", snapshot=flow.snapshot("medium"), backend="offline",
                              model="m", at=1.0), RunStarted(run_id="r", at=1.0)])
    decision = decide(state, 2.0)
    assert decision.ready == ["a"]
    started = {type(e).__name__: e for e in decision.events}
    assert started["StepStarted"].step_id == "c" and started["StepStarted"].kind is StepKind.CODE
    assert (started["StepStarted"].backend, started["StepStarted"].model, started["StepStarted"].prompt) == (
        "code", "", "")
    assert started["StepPaused"].step_id == "g" and started["StepPaused"].prompt == "Go?"
    [agent_started] = start(state, ["a"], 3.0)
    assert (agent_started.backend, agent_started.model, agent_started.prompt) == ("offline", "m", "A")
