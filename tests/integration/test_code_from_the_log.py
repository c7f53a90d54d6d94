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
