"""An upcaster, once registered in flows.codec, applies to every reader of the log (both backends).

The log holds a run written by an older baton: its StepCompleted named the
output ``text``, its StepResumed said ``verdict: approve`` and ``approver``
(schema version 1 of both, in the events' metadata). With two upcasters
registered, the engine loads the run and finishes it, the live projector and a
rebuild show it, the frames carry it, and ``baton replay`` re-folds it without
a problem. Without them, the same log is unreadable.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from actors.config import EngineConfig
from actors.engine import Engine
from api.cli.audit import replay_log
from api.cli.main import main as baton
from eventstore import NewEvent
from flows import Flow, StepContext, agent, approval, code
from flows.catalog import FlowRegistry
from flows.codec import CODEC
from flows.events import RunLaunched, RunStarted, StepPaused, StepStarted, event_data, stream_of
from projections import Framer, Projector, ReadModel, rebuild
from projections.tables import PRIMARY_KEYS, READ_TABLES

WAIT = 20.0


def summarise(ctx: StepContext) -> str:
    return f"{ctx.outputs['a']} / approved with {ctx.outputs['gate']!r} by {ctx.statuses['gate']}"


FLOW = Flow("old-log", category="Review", steps=[
    agent("a", persona="reviewer", prompt="Review $input.question"),
    approval("gate", deps=["a"], prompt="Ship it?"),
    code("c", fn=summarise, deps=["gate"]),
])


def completed_v1(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """StepCompleted at version 1 called its output ``text``."""
    data = dict(data)
    data["output"] = data.pop("text")
    return "StepCompleted", data


def resumed_v1(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """StepResumed at version 1 said ``verdict`` (approve / reject) and ``approver``."""
    data = dict(data)
    verdict = data.pop("verdict")
    data["decision"] = {"approve": "approved", "reject": "rejected"}[verdict]
    data["by"] = data.pop("approver")
    return "StepResumed", data


def old_log(store, run_id: str) -> None:
    """The run as an older baton recorded it, up to the approval (the code step is left to do)."""
    t = time.time() - 60
    current = [RunLaunched(run_id=run_id, flow=FLOW.name, snapshot=FLOW.snapshot("medium"), backend="offline",
                           input={"question": "the old change"}, at=t),
               RunStarted(run_id=run_id, at=t + 1),
               StepStarted(step_id="a", attempt=1, prompt="Review the old change", persona="reviewer",
                           backend="offline", at=t + 2)]
    events = [NewEvent(type(e).__name__, event_data(e), {"schema_version": 1}) for e in current]
    events.append(NewEvent("StepCompleted", {"step_id": "a", "attempt": 1, "text": "E1: old findings", "at": t + 3},
                           {"schema_version": 1}))
    events.append(NewEvent("StepPaused", event_data(StepPaused(step_id="gate", prompt="Ship it?", at=t + 4)),
                           {"schema_version": 1}))
    events.append(NewEvent("StepResumed", {"step_id": "gate", "verdict": "approve", "approver": "ada",
                                           "comment": "fine by me", "at": t + 5}, {"schema_version": 1}))
    store.append(stream_of(run_id), events, expected_version=0)


def dump(engine: sa.Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*[t.c[k] for k in PRIMARY_KEYS[t.name]]))]
                for t in READ_TABLES}


def test_a_registered_upcaster_applies_to_the_engine_the_projector_the_frames_and_replay(store, store_url, capsys):
    run_id = "01OLDLOG0000000000000000RN"
    with CODEC.upcasting("StepCompleted", 1, completed_v1), CODEC.upcasting("StepResumed", 1, resumed_v1):
        old_log(store, run_id)
        projector = Projector(store, batch_size=2).start()  # live: follows the log as it grows
        engine = Engine(store, FlowRegistry([FLOW]), EngineConfig()).start()  # recovers the run and drives it
        try:
            state = engine.wait(run_id, timeout=WAIT)
            assert state.status == "completed", state.reason
            assert state.steps["a"].output == "E1: old findings"
            assert (state.steps["gate"].status, state.steps["gate"].decided_by) == ("completed", "ada")
            assert state.steps["c"].output == "E1: old findings / approved with 'fine by me' by completed"
            # What this baton writes is at the version after the upcasters: read as it is, never upcast.
            written = {r.type: r.metadata["schema_version"] for r in store.read_stream(stream_of(run_id))[6:]}
            assert written["StepCompleted"] == 2 and written["RunCompleted"] == 1

            assert projector.wait_for(store.head(), WAIT), projector.last_error
            reads = ReadModel(store.database, projector)
            got = reads.get_run(run_id)
            assert got["problems"] == []
            assert got["run"]["status"] == "completed"
            steps = {s["step_id"]: s for s in got["steps"]}
            assert (steps["a"]["status"], steps["a"]["output"]) == ("completed", "E1: old findings")
            assert (steps["gate"]["status"], steps["gate"]["decided_by"], steps["gate"]["output"]) == (
                "completed", "ada", "fine by me")
            assert "E1: old findings" in reads.report(run_id)
        finally:
            engine.stop()
            projector.stop()

        live = dump(store.database)
        rebuild(store, chunk=3)  # pages read straight from the table, the schema version from the metadata
        assert dump(store.database) == live

        frames = [f for rec in store.read_all(after=0) for f in Framer().frames(rec)]
        resumed = next(f for f in frames if f.get("step_id") == "gate" and "decision" in f)
        assert (resumed["status"], resumed["decision"], resumed["by"]) == ("completed", "approved", "ada")
        first = next(f for f in frames if f.get("step_id") == "a" and f["status"] == "completed")
        assert first["output"] == "E1: old findings"

        replay = replay_log(store, verify=True)
        assert replay.problems == []
        assert run_id in replay.summaries[0] and "completed" in replay.summaries[0]
        assert baton(["replay", "--verify", "--db", store_url]) == 0
        assert f"{run_id}  old-log" in capsys.readouterr().out

    # The same log, with the upcasters gone: the old decision is unreadable, the old output lost.
    problems = replay_log(store).problems
    assert any("StepResumed does not decode" in p for p in problems), problems
    assert any("steps gate never ended" in p for p in problems), problems
    records = store.read_stream(stream_of(run_id))
    assert Framer().frames(records[5]) == []
    assert Framer().frames(records[3])[0]["output"] == ""
