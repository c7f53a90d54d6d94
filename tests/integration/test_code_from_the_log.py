"""What the log can make baton run: code steps resolve only among the flows registered at start."""

from __future__ import annotations

import sys
import time

import msgspec

from actors.engine import Engine
from eventstore import NewEvent, open_store
from flows import Flow, code
from flows.catalog import FlowRegistry
from flows.events import event_data, stream_of
from flows.launch import LaunchParams, prepare

PLANTED = "tests.integration.planted"


def tally(ctx):
    return "tallied"


REGISTRY = FlowRegistry([Flow("tally-once", steps=[code("tally", fn=tally)])])


def test_a_forged_launch_naming_an_unregistered_function_fails_without_importing_it(store_url):
    launched = prepare(REGISTRY, LaunchParams("tally-once", "q"), run_id="01F0RGED000000000000000000", now=time.time())
    step = msgspec.structs.replace(launched.snapshot.steps[0], fn=f"{PLANTED}:steal")
    forged = msgspec.structs.replace(launched, snapshot=msgspec.structs.replace(launched.snapshot, steps=(step,)))
    sys.modules.pop(PLANTED, None)
    with open_store(store_url) as store:
        store.append(stream_of(forged.run_id), [NewEvent("RunLaunched", event_data(forged))], 0)
        with Engine(store, REGISTRY) as engine:  # recovery at start takes the forged run up
            state = engine.wait(forged.run_id, timeout=20)
            assert state.status == "failed"
            failed = [r.data for r in store.read_stream(stream_of(forged.run_id)) if r.type == "StepFailed"]
            assert failed and "is not a code step of any flow registered at start" in failed[-1]["error"]
            assert PLANTED not in sys.modules  # never imported, so never called
            ok = engine.launch("tally-once", "q").run_id  # the registered function still runs
            assert engine.wait(ok, timeout=20).status == "completed"


def _gated(scale: int) -> FlowRegistry:
    """The flow as a module defines it: built again by each process that imports the module, so its lambda
    and its closure are new function objects there, with the same module and qualified name."""

    def times(ctx):  # a closure over scale
        return str(scale * len(ctx.outputs))

    from flows import approval

    return FlowRegistry([Flow("gated-lambdas", steps=[
        approval("gate", prompt="Go on?"),
        code("shout", fn=lambda ctx: ctx.input["question"].upper(), deps=["gate"]),
        code("count", fn=times, deps=["shout"]),
    ])])


def test_a_lambda_and_a_closure_are_found_again_by_a_process_that_defined_the_flow_again(store_url):
    """A run paused before its lambda and closure steps, then approved by another engine with the flow
    built again (a restart re-imports the module): both steps run there, found by their pinned names."""
    with open_store(store_url) as store:
        with Engine(store, _gated(10)) as first:
            run_id = first.launch("gated-lambdas", "why?").run_id
            first.wait(run_id, lambda s: s.status == "paused")
        with Engine(store, _gated(10)) as second:
            second.approve(run_id, "gate", by="ann")
            state = second.wait(run_id, timeout=20)
    assert state.status == "completed", state.steps
    assert state.steps["shout"].output == "WHY?" and state.steps["count"].output == "20"


def test_a_partial_or_a_callable_object_is_refused_when_the_flow_is_defined():
    """Neither has a module and qualified name to pin: its pin would be its repr, memory address and all,
    and no later process could find it (every run of it stopped there after a restart)."""
    import functools

    import pytest

    from flows import FlowDefinitionError, map

    def scaled(ctx, factor):
        return str(factor)

    class Counter:
        def __call__(self, ctx):
            return "1"

    for fn in (functools.partial(scaled, factor=2), Counter()):
        with pytest.raises(FlowDefinitionError, match="no module and qualified name baton can find again"):
            Flow("unfindable", steps=[code("c", fn=fn)])
        with pytest.raises(FlowDefinitionError, match="give a function \\(def or lambda\\) that calls it"):
            Flow("unfindable-map", steps=[code("l", fn=tally),
                                          map("m", over="$l.output.items", step=code("i", fn=fn))])
