"""``StepContext.of``: outputs, fields and statuses made from the state on first read, the same
plain dicts the constructor would hold."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest

from flows import StepContext
from flows.state import RunState
from tests.unit.test_decide import T0, paused_at_gate


def at_the_gate() -> RunState:
    sim = paused_at_gate()
    sim.resume("gate", "rejected", T0 + 10, by="bo", comment="too risky")
    sim.decide(T0 + 11)  # notify starts (an on_reject step)
    return sim.state


def eager(state: RunState, step_id: str, attempt: int) -> StepContext:
    """What ``of`` made before it kept the state: every mapping built at once."""
    assert state.launched is not None
    return StepContext(state.launched.input, state.outputs(), state.fields(), state.run_id, step_id, attempt,
                       state.launched.band, {sid: st.status for sid, st in state.steps.items()})


def test_of_gives_what_the_state_held_as_plain_dicts() -> None:
    state = at_the_gate()
    ctx = StepContext.of(state, "notify", 1)
    assert ctx.outputs == {"draft": "The draft E1", "gate": "too risky"}
    assert ctx.statuses["gate"] == "rejected" and ctx.statuses["notify"] == "running"
    assert ctx.fields == state.fields() and ctx.input == {"question": "Why?"}
    assert (ctx.run_id, ctx.step_id, ctx.attempt, ctx.band) == ("r1", "notify", 1, "medium")
    for mapping in (ctx.outputs, ctx.fields, ctx.statuses):
        assert type(mapping) is dict
    assert ctx.outputs is ctx.outputs  # made once
    assert ctx == eager(state, "notify", 1) and repr(ctx) == repr(eager(state, "notify", 1))
    assert json.loads(json.dumps(dataclasses.asdict(ctx))) == json.loads(json.dumps(dataclasses.asdict(
        eager(state, "notify", 1))))


def test_a_context_of_a_state_does_not_follow_later_states_and_copies_as_a_value() -> None:
    sim = paused_at_gate()
    ctx = StepContext.of(sim.state, "gate", 1)
    sim.resume("gate", "approved", T0 + 10, by="ana", comment="ship it")
    assert ctx.outputs == {"draft": "The draft E1"} and ctx.statuses["gate"] == "paused"
    item = dataclasses.replace(StepContext.of(sim.state, "publish", 1), input={"item": 3})
    assert type(item) is StepContext and item.input == {"item": 3} and item.outputs["gate"] == "ship it"
    for twin in (copy.copy(ctx), copy.deepcopy(ctx), pickle.loads(pickle.dumps(ctx))):
        assert twin == ctx
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.outputs = {}  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ctx.nothing  # type: ignore[attr-defined]  # noqa: B018
