"""A poisoned log: events the read tables cannot take as they are, on both backends.

The log is append-only, so what is in it stays. Text the tables cannot hold
(NUL, a lone surrogate) is projected escaped (U+FFFD), never dropped; an
event that cannot be applied at all is skipped, recorded in
``projection_errors`` with its position and error, and everything after it
is applied. The events are appended straight to the store (as an older
version, a model's output or another tool could have), bypassing the checks
a command now gets at the door. Every path that writes rows is exercised:
the live projector, a catch-up at start, and a rebuild.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from eventstore import NewEvent
from flows import Flow, agent
from flows.catalog import FlowRegistry
from flows.events import (
    AnomalyDetected,
    Event,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
    event_data,
    stream_of,
)
from flows.launch import LaunchParams, prepare
from projections import Projector, ReadModel, rebuild
from tests.integration.read_rows import dump

WAIT = 20.0  # seconds: only ever spent when something is wrong
FFFD = "\ufffd"

_FLOW = Flow("poison", category="Analysis", description="Two steps in a row.", steps=[
    agent("look", persona="investigator", prompt="Look at: $input.question"),
    agent("tell", persona="writer", deps=["look"], prompt="Tell: $look.output"),
])
_REGISTRY = FlowRegistry()
_REGISTRY.register(_FLOW)


def launched(run_id: str, question: str = "fine", **fields: Any) -> Event:
    """A RunLaunched as the engine writes it, then with ``fields`` replaced (bypassing the door)."""
    event = prepare(_REGISTRY, LaunchParams("poison", "q", band="medium"), run_id=run_id, now=1.0)
    return msgspec.structs.replace(event, **{"input": {**event.input, "question": question}, **fields})


def append(store, run_id: str, *events: Event | tuple[str, dict[str, Any]]) -> int:
    """Append events (or raw ``(type, data)`` pairs) to the run's stream; the last position."""
    stream = stream_of(run_id)
    version = len(store.read_stream(stream))
    new = [NewEvent(*e) if isinstance(e, tuple) else NewEvent(type(e).__name__, event_data(e)) for e in events]
    return store.append(stream, new, expected_version=version)[-1].position


def a_fine_run(store, run_id: str) -> int:
    return append(store, run_id, launched(run_id, "all fine"), RunStarted(run_id=run_id, at=2.0),
                  StepStarted(step_id="look", attempt=1, prompt="Look at: all fine", at=3.0),
                  StepCompleted(step_id="look", attempt=1, output="looked", at=4.0))


@contextmanager
def projected(store, mode: str) -> Iterator[None]:
    """Append inside the block; then a fine run "after", and the tables hold them all (``project``)."""
    projector = project(store, mode) if mode == "live" else None
    try:
        yield
        head = a_fine_run(store, "after")
        if projector is not None:
            assert projector.wait_for(head, WAIT), projector.last_error
        else:
            project(store, mode)
    finally:
        if projector is not None:
            projector.stop()


def project(store, mode: str) -> Projector | None:
    """Bring the tables to the head: ``live`` follows appends as they come (the caller appends after
    this), ``catch_up`` starts after them, ``rebuild`` replays them. Returns a live projector to stop."""
    if mode == "live":
        return Projector(store, batch_size=3).start()
    if mode == "catch_up":
        projector = Projector(store, catch_up_chunk=4).start()
        assert projector.wait_for(store.head(), WAIT), projector.last_error
        projector.stop()
    else:
        rebuild(store, chunk=4)
    return None


MODES = ["live", "catch_up", "rebuild"]


@pytest.mark.parametrize("mode", MODES)
def test_text_the_tables_cannot_hold_is_projected_escaped_never_dropped(store, mode):
    """NUL in every kind of text an event carries: PostgreSQL refused it (the projector then retried
    the batch forever, and every later run was a 404); now it reads as U+FFFD, on both backends."""
    with projected(store, mode):
        append(store, "nul", launched("nul", project_id="p\x00", launched_by="ana\x00",
                                      input={"note\x00": "x\x00y", "question": "a\x00b"}),
               RunStarted(run_id="nul", at=2.0),
               StepStarted(step_id="look", attempt=1, prompt="Look at: a\x00b", at=3.0),
               StepCompleted(step_id="look", attempt=1, output="out\x00put", fields={"k": "v\x00"}, at=4.0),
               StepStarted(step_id="tell", attempt=1, prompt="Tell: out\x00put", at=5.0),
               StepFailed(step_id="tell", attempt=1, error="boom\x00", at=6.0),
               RunFailed(reason="tell failed\x00", report="# report\x00", at=7.0))
    reads = ReadModel(store.database)
    got = reads.get_run("nul")
    assert got is not None
    run = got["run"]
    assert (run["question"], run["project_id"], run["launched_by"], run["reason"], run["status"]) == (
        f"a{FFFD}b", f"p{FFFD}", f"ana{FFFD}", f"tell failed{FFFD}", "failed")
    assert run["inputs"] == {f"note{FFFD}": f"x{FFFD}y", "question": f"a{FFFD}b"}
    steps = {s["step_id"]: s for s in got["steps"]}
    assert (steps["look"]["output"], steps["look"]["prompt"], steps["look"]["fields"]) == (
        f"out{FFFD}put", f"Look at: a{FFFD}b", {"k": f"v{FFFD}"})
    assert steps["tell"]["error"] == f"boom{FFFD}"
    assert got["report"] == reads.report("nul") == f"# report{FFFD}"
    assert got["problems"] == [] and reads.projection_problems() == ([], 0)
    assert [r["run_id"] for r in reads.list_runs(project_id=f"p{FFFD}")[0]] == ["nul"]
    assert reads.get_run("after")["run"]["question"] == "all fine"
    # The log keeps what was written: the audit trail is not escaped.
    assert store.read_stream(stream_of("nul"))[0].data["input"]["question"] == "a\x00b"
    live = dump(store.database)
    rebuild(store)
    assert dump(store.database) == live


def _unappliable() -> AnomalyDetected:
    # Decodes as an AnomalyDetected, but no database takes it into anomalies.attempt (an integer
    # column): sqlite3 raises OverflowError, psycopg "int too big to convert" (COPY).
    return AnomalyDetected(step_id="look", attempt=2**63, kind="stall", severity="high", detail="?", at=1.5)


@pytest.mark.parametrize("mode", MODES)
def test_an_event_that_cannot_be_applied_is_skipped_recorded_and_the_rest_applied(store, mode):
    """Before: the projector retried the failing batch forever; every later event waited behind it."""
    with projected(store, mode):
        a_fine_run(store, "before")
        bad = append(store, "stuck", launched("stuck"), _unappliable())
        undecodable = append(store, "stuck", ("StepStarted", {"step_id": 7, "attempt": "one"}))
        append(store, "stuck", RunStarted(run_id="stuck", at=2.0),
               StepStarted(step_id="look", attempt=1, prompt="Look at: fine", at=3.0))
    reads = ReadModel(store.database)
    problems, total = reads.projection_problems()
    assert total == 2
    assert [(p["position"], p["run_id"], p["event_type"]) for p in problems] == [
        (undecodable, "stuck", "StepStarted"), (bad, "stuck", "AnomalyDetected")]
    assert "OverflowError" in problems[1]["error"], problems[1]
    assert "Expected `int`, got `str` - at `$.attempt`" in problems[0]["error"]
    stuck = reads.get_run("stuck")
    assert stuck["run"]["status"] == "running"  # RunStarted, after the bad event, was applied
    assert stuck["run"]["anomalies"] == 0 and reads.anomalies("stuck") == []  # skipped whole
    assert {s["step_id"]: s["status"] for s in stuck["steps"]} == {"look": "running", "tell": "pending"}
    assert [p["position"] for p in stuck["problems"]] == [bad, undecodable]
    assert reads.get_run("before")["problems"] == reads.get_run("after")["problems"] == []
    assert reads.get_run("after")["steps"][0]["output"] == "looked"
    with store.database.connect() as conn:
        position = conn.execute(sa.text("SELECT position FROM projection_checkpoints")).scalar()
    assert position == store.head()
    # Durable: a restart neither loses nor repeats them, and a rebuild writes the same rows.
    live = dump(store.database)
    restarted = Projector(store).start()
    try:
        assert not restarted.rebuilt_on_start and restarted.position == store.head()
        assert restarted.problems()[1] == 2
    finally:
        restarted.stop()
    rebuild(store)
    assert dump(store.database) == live


def test_a_database_error_is_retried_not_skipped(store):
    """A failure of the database itself (here: the connection lost at commit, three times) is
    retried from the checkpoint; no event is skipped for it."""
    failures: list[int] = []

    def lose_connection(conn: sa.Connection) -> None:
        if len(failures) < 3:
            failures.append(1)
            raise sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("server closed the connection"))

    head = a_fine_run(store, "one")
    with Projector(store, _before_commit=lose_connection) as projector:
        assert projector.wait_for(head, WAIT), projector.last_error
        assert projector.last_error is None
    assert len(failures) == 3
    reads = ReadModel(store.database)
    assert reads.projection_problems() == ([], 0)
    assert reads.get_run("one")["steps"][0]["output"] == "looked"


def _raw_insert(store, position: int, run_id: str, version: int, type_name: str, data: str) -> None:
    with store.database.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO events (position, event_id, stream_id, version, type, data, metadata, recorded_at, hash) "
            "VALUES (:p, :id, :s, :v, :t, :d, '{}', 0, '')"
        ), {"p": position, "id": f"raw-{position}", "s": stream_of(run_id), "v": version, "t": type_name,
            "d": data})


@pytest.mark.parametrize("mode", MODES)
def test_a_lone_surrogate_written_straight_into_the_store_is_projected_escaped(store, mode):
    """The store's encoder cannot write a lone surrogate, but another writer's JSON can hold one as
    an escape (``"\\ud800"``), which the store's decoder refuses. It was dropped (catch-up) or
    retried forever (live); now it reads as U+FFFD."""
    with projected(store, mode):
        head = a_fine_run(store, "before")
        text = msgspec.json.encode(event_data(launched("odd", "QUESTION"))).decode()
        _raw_insert(store, head + 1, "odd", 1, "RunLaunched", text.replace("QUESTION", "a\\ud800b"))
    reads = ReadModel(store.database)
    assert reads.get_run("odd")["run"]["question"] == f"a{FFFD}b"
    assert reads.get_run("after")["run"]["question"] == "all fine"
    assert reads.projection_problems() == ([], 0)
    live = dump(store.database)
    rebuild(store)
    assert dump(store.database) == live


@pytest.mark.parametrize("mode", ["catch_up", "rebuild"])
def test_several_bad_events_in_one_page_are_each_skipped_and_the_others_applied(store, mode):
    """The page (one of 100 events here) is halved down to the events that fail alone: exactly
    those are skipped."""
    bad = []
    for n in range(6):
        run_id = f"run{n}"
        append(store, run_id, launched(run_id), RunStarted(run_id=run_id, at=2.0))
        if n % 2:
            bad.append(append(store, run_id, _unappliable()))
        append(store, run_id, AnomalyDetected(step_id="look", attempt=1, kind="stall", severity="low",
                                              detail=f"fine {n}", at=3.0))
    if mode == "rebuild":
        assert rebuild(store, chunk=100).position == store.head()
    else:
        with Projector(store, catch_up_chunk=100) as projector:
            assert projector.wait_for(store.head(), WAIT), projector.last_error
    reads = ReadModel(store.database)
    problems, total = reads.projection_problems()
    assert total == 3 and sorted(p["position"] for p in problems) == bad
    for n in range(6):
        assert [a["detail"] for a in reads.anomalies(f"run{n}")] == [f"fine {n}"]
        assert reads.get_run(f"run{n}")["run"]["anomalies"] == 1
