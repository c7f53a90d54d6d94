"""Durable stream frames as a pure function of recorded events (DESIGN §7)."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest

from eventstore import RecordedEvent
from flows.events import TERMINAL_RUN_EVENTS, RunLaunched, StepPaused, event_data
from flows.state import RunState, evolve
from projections.frames import Framer

_BENCH = Path(__file__).resolve().parents[2] / "bench" / "projections.py"
_spec = importlib.util.spec_from_file_location("bench_projections", _BENCH)
assert _spec and _spec.loader
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)

STEP_EVENTS = {"StepStarted", "StepCompleted", "StepFailed", "StepCancelled", "StepSkipped", "StepPaused",
               "StepResumed"}


def recorded_log(events: int = 1500, seed: int = 3):
    """A simulated log as the store would hand it out: (RecordedEvent, domain event) pairs."""
    out = []
    versions: dict[str, int] = defaultdict(int)
    position = 0
    for run_id, batch in sim.simulate(events, seed=seed):
        stream = f"run-{run_id}"
        for event in batch:
            position += 1
            versions[stream] += 1
            rec = RecordedEvent(position, stream, versions[stream], type(event).__name__, event_data(event),
                                {}, 0.0, "")
            out.append((rec, event))
    return out


@pytest.fixture(scope="module")
def log():
    return recorded_log()


def test_every_frame_is_keyed_by_its_event_position_and_names_its_run(log):
    framer = Framer()
    projects = {}
    for rec, event in log:
        if isinstance(event, RunLaunched):
            projects[event.run_id] = event.project_id
        for frame in framer.frames(rec):
            assert frame["id"] == rec.position
            assert frame["run_id"] == rec.stream_id[4:]
            assert frame["project_id"] == projects[frame["run_id"]]
            assert frame["type"] in {"flow_run_started", "flow_run_step_updated", "approval_requested", "anomaly"}


def test_step_frames_carry_the_status_evolve_folds(log):
    framer = Framer()
    states: dict[str, RunState] = defaultdict(RunState)
    seen = set()
    for rec, event in log:
        run_id = rec.stream_id[4:]
        states[run_id] = evolve(states[run_id], event, rec.position)
        frames = framer.frames(rec)
        if rec.type in STEP_EVENTS:
            update = frames[0]
            assert update["type"] == "flow_run_step_updated"
            assert update["step_id"] == event.step_id
            assert update["status"] == states[run_id].steps[event.step_id].status
            seen.add(update["status"])
    assert {"running", "completed", "pending", "failed", "skipped", "paused", "rejected"} <= seen


def test_a_run_starts_with_its_graph_and_ends_with_its_report(log):
    framer = Framer()
    by_run: dict[str, list[dict]] = defaultdict(list)
    ends = {}
    launches = {}
    for rec, event in log:
        by_run[rec.stream_id[4:]] += framer.frames(rec)
        if isinstance(event, TERMINAL_RUN_EVENTS):
            ends[rec.stream_id[4:]] = (type(event).__name__, event.report)
        if isinstance(event, RunLaunched):
            launches[event.run_id] = event
    assert ends
    for run_id, frames in by_run.items():
        first = frames[0]
        launched = launches[run_id]
        assert first["type"] == "flow_run_started"
        assert (first["flow_name"], first["band"]) == (launched.flow, launched.band)
        assert first["steps"] == [
            {"step_id": s.id, "agent": s.persona, "kind": s.kind, "label": s.label or s.id, "deps": list(s.deps)}
            for s in launched.snapshot.steps
        ]
        if run_id in ends:
            last = frames[-1]
            kind, report = ends[run_id]
            status = {"RunCompleted": "completed", "RunFailed": "failed", "RunRejected": "rejected",
                      "RunCancelled": "cancelled"}[kind]
            assert last["type"] == "flow_run_step_updated"
            assert last["step_id"] is None
            assert last["run_status"] == last["status"] == status
            assert last["report"] == report and report.startswith("# ")


def test_a_pause_asks_for_approval_with_the_prompt(log):
    framer = Framer()
    asked = 0
    for rec, event in log:
        frames = framer.frames(rec)
        if isinstance(event, StepPaused):
            assert [f["type"] for f in frames] == ["flow_run_step_updated", "approval_requested"]
            assert frames[1]["prompt"] == event.prompt and frames[1]["step_id"] == event.step_id
            asked += 1
        else:
            assert all(f["type"] != "approval_requested" for f in frames)
    assert asked


def test_queue_start_and_anomaly_frames(log):
    framer = Framer()
    kinds = defaultdict(list)
    for rec, event in log:
        for frame in framer.frames(rec):
            kinds[(rec.type, frame["type"])].append(frame)
    queued = kinds[("RunQueued", "flow_run_step_updated")][0]
    assert queued["step_id"] is None and queued["run_status"] == "queued" and queued["reason"] == "capacity"
    started = kinds[("RunStarted", "flow_run_step_updated")][0]
    assert started["run_status"] == "running"
    anomaly = kinds[("AnomalyDetected", "anomaly")][0]
    assert {"step_id", "kind", "severity", "detail", "action"} <= set(anomaly)
    assert kinds[("StepFailed", "flow_run_step_updated")][0]["error"]


def test_resuming_mid_log_asks_for_the_project(log):
    middle = len(log) // 2
    asked = []

    def project_of(run_id):
        asked.append(run_id)
        return f"project-of-{run_id}"

    framer = Framer(project_of)
    for rec, event in log[middle:]:
        for frame in framer.frames(rec):
            run_id = frame["run_id"]
            if run_id in asked:
                assert frame["project_id"] == f"project-of-{run_id}"
    assert asked and len(asked) == len(set(asked))  # asked once per run

    bare = Framer()
    rec = next(rec for rec, event in log[middle:] if rec.type == "StepCompleted")
    assert bare.frames(rec)[0]["project_id"] == ""


def test_a_project_not_known_yet_is_asked_again():
    answers = iter([None, "p1"])
    framer = Framer(lambda run_id: next(answers))
    rec = RecordedEvent(5, "run-r1", 3, "StepSkipped", {"step_id": "a", "reason": "condition"}, {}, 0.0, "")
    assert framer.frames(rec)[0]["project_id"] == ""
    assert framer.frames(rec)[0]["project_id"] == "p1"


def test_other_streams_and_unknown_types_give_no_frames():
    framer = Framer()
    assert framer.frames(RecordedEvent(1, "idempotency-x", 1, "IdempotencyKeyClaimed", {"key": "k"}, {}, 0.0, "")) == []
    assert framer.frames(RecordedEvent(2, "run-r1", 1, "SomethingNew", {"x": 1}, {}, 0.0, "")) == []
    assert framer.frames(RecordedEvent(3, "run-r1", 2, "RunRecovered", {"node": "n"}, {}, 0.0, "")) == []


def test_the_framer_forgets_runs_that_ended(log):
    framer = Framer()
    open_runs = set()
    for rec, event in log:
        framer.frames(rec)
        if isinstance(event, RunLaunched):
            open_runs.add(event.run_id)
        elif isinstance(event, TERMINAL_RUN_EVENTS):
            open_runs.discard(rec.stream_id[4:])
    assert set(framer._projects) == open_runs


def test_tool_calls_and_results_are_durable_frames_of_their_step():
    from flows.events import ToolCalled, ToolResult

    framer = Framer()
    called = ToolCalled(step_id="explore", attempt=1, call_id="c1", tool="search", arguments='{"pattern": "x"}',
                        turn=2, seq=3, at=7.0)
    answered = ToolResult(step_id="explore", attempt=1, call_id="c1", tool="search", ok=True, result="y" * 5000,
                          sha256="ab", bytes=5000, at=7.5)
    frames = [f for n, e in enumerate((called, answered), 10)
              for f in framer.frames(RecordedEvent(n, "run-r", n, type(e).__name__, event_data(e), {}, 0.0, ""))]
    assert frames[0] == {"id": 10, "run_id": "r", "project_id": "", "type": "tool_call", "step_id": "explore",
                         "attempt": 1, "call_id": "c1", "tool": "search", "arguments": '{"pattern": "x"}', "turn": 2,
                         "seq": 3, "role": "", "at": 7.0}
    assert frames[1]["type"] == "tool_result" and frames[1]["ok"] is True and frames[1]["bytes"] == 5000
    assert len(frames[1]["result"]) == 2000 and frames[1]["result_cut"] is True


def test_a_task_event_that_moves_its_step_is_a_step_frame_and_a_phase_is_none():
    from flows.events import Phase, TaskAborted, TaskDone, TaskFailed, TaskPhaseChanged, TaskStarted

    framer = Framer()
    events = (TaskStarted(step_id="a", attempt=1, at=1.0), TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.CODER, at=2.0),
              TaskFailed(step_id="a", attempt=1, error="lost", will_retry=True, at=3.0),
              TaskDone(step_id="a", attempt=2, merge_commit="abc", at=4.0),
              TaskAborted(step_id="b", reason="upstream a did not finish", by="baton", at=5.0),
              TaskAborted(step_id="c", reason="aborted by ann: wrong", by="ann", at=6.0))
    frames = {n: framer.frames(RecordedEvent(n, "run-r", n, type(e).__name__, event_data(e), {}, 0.0, ""))
              for n, e in enumerate(events, 10)}
    assert frames[11] == []  # phases are the engine's task_updated frames
    moves = [(f["step_id"], f["status"], f.get("attempt"), f.get("reason", ""))
             for n in (10, 12, 13, 14, 15) for f in frames[n]]
    assert moves == [("a", "running", 1, ""), ("a", "pending", 1, ""), ("a", "completed", 2, ""),
                     ("b", "skipped", None, "upstream_failed"), ("c", "cancelled", None, "")]
    assert frames[12][0]["will_retry"] is True and frames[15][0]["error"] == "aborted by ann: wrong"
    assert all(f["type"] == "flow_run_step_updated" and f["id"] == n for n, fs in frames.items() for f in fs)
    # a replay asks the database for the framed types alone: the task events that give frames are among them
    from projections.frames import FRAMED_TYPES
    assert {type(e).__name__ for n, e in enumerate(events, 10) if frames[n]} <= FRAMED_TYPES
    assert "TaskPhaseChanged" not in FRAMED_TYPES


def _every_framed_event() -> list[tuple[str, object]]:
    """(run id, event) pairs giving every frame there is, with the optional keys both present and absent."""
    import msgspec

    from flows.events import (
        AnomalyDetected, Answer, MapItemCompleted, MapItemFailed, RunCancelled, RunCompleted, RunFailed,
        RunForked, RunQueued, RunRecovered, RunRejected, RunStarted, StepCancelled, StepCompleted, StepFailed,
        StepResumed, StepSkipped, StepStarted, TaskAborted, TaskAnswered, TaskBlocked, TaskDone, TaskFailed,
        TaskReviewed, TaskStarted, ToolCalled, ToolResult)
    from flows.kinds import StepKind

    launched = [e for _, batch in sim.simulate(200, seed=5) for e in batch if isinstance(e, RunLaunched)]
    first, second = launched[0], msgspec.structs.replace(launched[1], parent_run_id="01PARENT", parent_step="fan")
    a, b = first.run_id, second.run_id
    text = 'é 日本 "quoted" \\ back\nslash \x00 nul \u2028'
    return [
        (a, first), (b, second), (a, RunQueued(run_id=a, reason="capacity", plan_position=3, at=1)),
        (a, RunStarted(run_id=a, reason="capacity available", at=2.5)),
        (a, StepStarted(step_id="s1", attempt=1, kind=StepKind.CODE, backend="code", at=3.0)),
        (b, StepStarted(step_id="m", attempt=2, kind=StepKind.AGENT, persona="writer", backend="openai", model="x",
                        items=[1, "two", {"three": [3]}], child_run_id="01CHILD", prompt=text, at=3.25)),
        (a, StepCompleted(step_id="s1", attempt=1, output=text, duration_s=2.6708999996571947e-05, at=4.0,
                          usage={"tokens": 3}, fields={"k": "v"})),
        (a, StepFailed(step_id="s2", attempt=1, error="boom", will_retry=True, retry_at=9.5, at=5.0)),
        (a, StepFailed(step_id="s2", attempt=2, error=text, at=5.5)),
        (a, StepCancelled(step_id="s3", attempt=1, reason="by ann", at=6.0)),
        (a, StepSkipped(step_id="s4", reason="condition", detail="no", at=6.5)),
        (a, StepPaused(step_id="gate", prompt="Go on?", at=7.0)),
        (b, StepPaused(step_id="gate", prompt=text, due_at=99.5, at=7.0)),
        (a, StepResumed(step_id="gate", decision="approved", by="ann", comment="fine", at=8.0)),
        (b, StepResumed(step_id="gate", decision="rejected", timer="t1", at=8.0)),
        (a, AnomalyDetected(step_id="s5", attempt=1, kind="errors", severity="high", detail=text, action="stop",
                            at=9.0)),
        (a, ToolCalled(step_id="s5", attempt=1, call_id="c1", tool="search", arguments='{"q": "x"}', turn=2, seq=3,
                       at=9.5)),
        (a, ToolResult(step_id="s5", attempt=1, call_id="c1", tool="search", result="é" * 5000, bytes=10000,
                       sha256="ab", at=9.75)),
        (a, ToolResult(step_id="s5", attempt=1, call_id="c2", ok=False, outcome="error", error="no", at=9.8)),
        (b, MapItemCompleted(step_id="m", attempt=2, index=0, item={"three": [3]}, output=text, at=10.0)),
        (b, MapItemFailed(step_id="m", attempt=2, index=1, item="two", error="bad", at=10.5)),
        (a, RunForked(parent_run_id="01OLD", from_step="s1", copied_steps=["s0"], retry=True, at=11.0)),
        (a, TaskStarted(step_id="t1", attempt=1, at=12.0)),
        (a, TaskBlocked(step_id="t1", attempt=1, reason="needs a key", at=12.5)),
        (a, TaskReviewed(step_id="t1", attempt=1, round=3, approved=False, capped=True, at=13.0)),
        (a, TaskAnswered(step_id="t1", answer=Answer.RETRY, context="try again", at=13.5)),
        (a, TaskFailed(step_id="t1", attempt=2, error="lost", will_retry=True, at=14.0)),
        (a, TaskDone(step_id="t1", attempt=3, at=14.5)),
        (a, TaskAborted(step_id="t2", reason="upstream t1 did not finish", by="baton", at=15.0)),
        (a, TaskAborted(step_id="t3", reason="aborted by ann", by="ann", at=15.5)),
        (a, RunRecovered(node="n", at=16.0)),
        (b, RunFailed(reason="s1 failed", report="# r\n" + text, at=17.0)),
        (b, RunRejected(reason="no", by="ann", report="# r", at=17.0)),
        (b, RunCancelled(reason="stop", by="bob", report="", at=17.0)),
        (a, RunCompleted(report="# report\n" + text, at=18.0)),
    ]


@pytest.mark.parametrize("form", ["bytes", "str", "values"])
def test_a_replay_encodes_every_frame_to_the_bytes_the_live_frames_encode_to(form):
    """``Framer.encode_rows`` (a stream's replay) builds no dicts, yet every frame it gives is the
    live frame (``Framer.frames``) byte for byte, from the store's JSON text (SQLite hands bytes,
    PostgreSQL str) or from JSON values; text holding a NUL comes out storable in both."""
    from api.http.stream import json_texts, sse_lines
    from eventstore.codec import encode_json
    from projections.frames import FRAMED_TYPES

    events = _every_framed_event()
    assert {type(e).__name__ for _, e in events} >= FRAMED_TYPES
    records = [RecordedEvent(n, f"run-{run}", n, type(e).__name__, event_data(e), {}, 0.0, "")
               for n, (run, e) in enumerate(events, 1)]
    records.append(RecordedEvent(len(records) + 1, "run-" + events[0][0], 99, "StepCompleted",
                                 {"step_id": "s9", "attempt": "one"}, {}, 0.0, ""))  # does not decode: no frame
    framer = Framer()
    live = [f for rec in records for f in framer.frames(rec)]

    def data(rec: RecordedEvent) -> object:
        text = encode_json(rec.data)
        return text.encode() if form == "bytes" else text if form == "str" else rec.data

    rows = [(r.position, r.stream_id[4:], r.type, data(r), None) for r in records]
    replayed = Framer().encode_rows(rows)
    assert replayed.frames() == live and len(live) > len(records) - 4  # StepPaused gives two
    assert sse_lines(replayed) == sse_lines(live)
    assert json_texts(replayed) == json_texts(live)
    assert "\x00" not in sse_lines(replayed).decode() and "\ufffd" in sse_lines(replayed).decode()
    # a project filter leaves out the frames of other projects' runs, as a stream's filter does
    project = events[1][1].project_id
    assert Framer().encode_rows(rows, project).frames() == [f for f in live if f["project_id"] == project]


def test_a_replay_of_a_simulated_log_is_the_live_frames_byte_for_byte(log):
    from api.http.stream import sse_lines
    from eventstore.codec import encode_json

    rows = [(rec.position, rec.stream_id[4:], rec.type, encode_json(rec.data).encode(), None) for rec, _ in log]
    framer, live = Framer(), Framer()
    encoded = b"".join(sse_lines(framer.encode_rows(rows[i:i + 100])) for i in range(0, len(rows), 100))
    assert encoded == sse_lines([f for rec, _ in log for f in live.frames(rec)])
    assert framer._projects == live._projects  # both forget the runs that ended


REPORTS = ["", "# report\n\nplain ascii, | a | table |", 'é 日本 😀 "quoted" \\ back\nslash\ttab \r\b\f',
           "controls \x01 \x0b \x1f del \x7f \u2028 \u2029 </script>", "nul \x00 in it",
           "a backslash before u: \\u0041 \\/"]


@pytest.mark.parametrize("form", ["bytes", "str"])
def test_a_replayed_report_is_the_live_frames_byte_for_byte_whatever_its_text(form):
    """A run's report is passed through a replay as its stored JSON text (not decoded and encoded
    again), yet the ending frame is the live one byte for byte: escapes, non-ASCII, control
    characters; a NUL made storable as live; a report written without the key."""
    from api.http.stream import sse_lines
    from eventstore.codec import encode_json
    from flows.events import RunCancelled, RunCompleted, RunFailed, RunRejected
    from projections.frame_structs import REPORT_TEXT, UNUSUAL, UNUSUAL_TEXT, with_report_text

    def as_form(text: str) -> bytes | str:
        return text.encode() if form == "bytes" else text

    events = [cls(report=report, at=18.5, **extra)  # type: ignore[arg-type]
              for report in REPORTS
              for cls, extra in ((RunCompleted, {}), (RunFailed, {"reason": "s1 failed"}),
                                 (RunRejected, {"reason": "no", "by": "ann"}),
                                 (RunCancelled, {"reason": "stop", "by": "bob"}))]
    records = [RecordedEvent(n, f"run-r{n}", 1, type(e).__name__, event_data(e), {}, 0.0, "")
               for n, e in enumerate(events, 1)]
    rows = [(r.position, r.stream_id[4:], r.type, as_form(encode_json(r.data)), None) for r in records]
    # a report left out (as an old writer might): the frame's report is "", live and replayed
    records.append(RecordedEvent(len(records) + 1, "run-rx", 1, "RunCompleted", {"at": 1.0}, {}, 0.0, ""))
    rows.append((len(rows) + 1, "rx", "RunCompleted", as_form('{"at":1.0}'), None))
    live = [f for rec in records for f in Framer().frames(rec)]
    replayed = Framer().encode_rows(rows)
    assert len(live) == len(rows) and replayed.frames() == live
    assert sse_lines(replayed) == sse_lines(live)
    assert live[-1]["report"] == "" and "\x00" not in sse_lines(replayed).decode()
    # the reports went through as text, but the NUL ones (decoded to be made storable) and the ones
    # whose text looks like an escape msgspec does not write (a backslash before u or /: decoded to be sure)
    unusual = (UNUSUAL if form == "bytes" else UNUSUAL_TEXT).search
    passed = [with_report_text(REPORT_TEXT[row[2]], unusual, row[3]) is not None for row in rows]
    assert passed == [REPORTS[i // 4][:3] not in ("nul", "a b") for i in range(len(rows) - 1)] + [True]


@pytest.mark.parametrize("form", ["bytes", "str"])
def test_a_report_another_writer_escaped_its_own_way_is_replayed_as_the_live_frame(form):
    """JSON text msgspec would not write (escapes of letters or '/', upper-case hex, a \\u escape of
    a newline) is decoded and encoded again: the frame is what a live reader of that row sends (a
    lone surrogate and a NUL made storable)."""
    import json

    from api.http.stream import sse_lines

    texts = [r'{"at":2.0,"report":"caf\u00e9 \/ path"}', r'{"at":2.0,"report":"ctl \u001F"}',
             r'{"at":2.0,"report":"a\u000ab"}', r'{"report": "spaced \u0041" , "at": 2.0}',
             r'{"at":2.0,"report":"lone \ud800 surrogate \u0000"}']
    rows = [(n, f"r{n}", "RunCompleted", t.encode() if form == "bytes" else t, None) for n, t in enumerate(texts, 1)]
    live = [f for n, t in enumerate(texts, 1)
            for f in Framer().frames(RecordedEvent(n, f"run-r{n}", 1, "RunCompleted", json.loads(t), {}, 0.0, ""))]
    assert [f["report"] for f in live][:4] == ["café / path", "ctl \x1f", "a\nb", "spaced A"]
    assert sse_lines(Framer().encode_rows(rows)) == sse_lines(live)


def test_a_report_that_does_not_decode_gives_no_frame_in_a_replay(caplog):
    """A report that is not a string, or bytes that are not UTF-8, fail the event's decoding live:
    a replay passing reports through as text drops (and logs) that frame too."""
    rows = [(1, "r1", "RunCompleted", b'{"at":1.0,"report":3}', None),
            (2, "r2", "RunFailed", b'{"at":1.0,"report":{"md":"x"}}', None),
            (3, "r3", "RunCompleted", b'{"at":1.0,"report":"bad \xff utf-8"}', None),
            (4, "r4", "RunCompleted", '{"at":1.0,"report":null}', None),
            (5, "r5", "RunCompleted", b'{"at":1.0,"report":"fine"}', None)]
    replayed = Framer().encode_rows(rows[:3] + rows[4:])
    assert [f["run_id"] for f in replayed.frames()] == ["r5"]
    assert len(Framer().encode_rows(rows[3:4])) == 0
    assert "cannot read event 3 (RunCompleted)" in caplog.text


@pytest.mark.parametrize("form", ["bytes", "str"])
def test_launches_sharing_a_snapshot_are_replayed_as_their_live_frames(form, monkeypatch, caplog):
    """A replay decodes each distinct snapshot text once and reuses its plan for every launch that
    carries it; the frames stay the live ones byte for byte, and a launch whose snapshot (or any other
    field) does not decode gives no frame, the first time and every time after (logged each time)."""
    import msgspec

    import projections.frames as frames
    from api.http.stream import sse_lines
    from eventstore.codec import encode_json

    monkeypatch.setattr(frames, "_PLANS_KEPT", 2)  # a replay of more snapshots than it keeps
    launched = [e for _, batch in sim.simulate(400, seed=11) for e in batch if isinstance(e, RunLaunched)]
    snapshots = {encode_json(event_data(e)["snapshot"]) for e in launched}
    assert len(launched) > 2 * len(snapshots) and len(snapshots) > 2  # reused, and more than kept
    launches = [*launched, msgspec.structs.replace(launched[0], run_id="01NUL", flow="nul \x00 flow")]
    records = [RecordedEvent(n, f"run-{e.run_id}", 1, "RunLaunched", event_data(e), {}, 0.0, "")
               for n, e in enumerate(launches, 1)]
    live = [f for rec in records for f in Framer().frames(rec)]

    def text(data: dict) -> bytes | str:
        out = encode_json(data)
        return out.encode() if form == "bytes" else out

    rows = [(r.position, r.stream_id[4:], r.type, text(r.data), None) for r in records]
    # a step whose kind is no kind, and a launch of a good snapshot whose band is not text: no frame, live or replayed
    bad = event_data(launched[0])
    bad_step = {**bad, "run_id": "01BAD", "snapshot": {**bad["snapshot"], "steps": [
        {**bad["snapshot"]["steps"][0], "kind": "no-such-kind"}]}}
    for n, data in enumerate([bad_step, bad_step, {**bad, "run_id": "01BAND", "band": 3}], len(rows) + 1):
        rows.append((n, data["run_id"], "RunLaunched", text(data), None))
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(data, RunLaunched)
    framer = Framer()
    replayed = framer.encode_rows(rows)
    assert sse_lines(replayed) == sse_lines(live) and len(live) == len(launches)
    assert "\x00" not in sse_lines(replayed).decode()
    unread = [m.split(" (")[0] for m in caplog.messages if m.startswith("cannot read event")]
    assert unread == [f"cannot read event {n}" for n in range(len(records) + 1, len(rows) + 1)]
    assert 0 < len(framer._plans) <= 2  # the plans were kept, and no more than it may keep
    # kept as the frame's JSON of their steps: a launch copies them, it does not encode them again
    assert {type(plan) for plan in framer._plans.values()} <= {msgspec.Raw, type(None)}


def test_a_replay_follows_an_upcaster_registered_between_two_of_its_pages():
    """A replay's framer keeps its decoding tables from page to page, as long as the codec's stay the
    same: an upcaster registered between two pages applies to the next page as it does to a live frame,
    and once it is gone the page after that is read as before."""
    from api.http.stream import sse_lines
    from eventstore.codec import encode_json
    from flows.codec import CODEC
    from flows.events import StepCompleted

    def row(position: int, output: str) -> tuple:
        data = event_data(StepCompleted(step_id="s1", attempt=1, output=output, at=float(position)))
        return (position, "r1", "StepCompleted", encode_json(data).encode(), None)

    def live(row: tuple) -> list[dict]:
        data = msgspec.json.decode(row[3])
        return Framer().frames(RecordedEvent(row[0], "run-r1", row[0], row[2], data, {}, 0.0, ""))

    def shout(data: dict) -> tuple[str, dict]:
        return "StepCompleted", {**data, "output": data["output"].upper()}

    framer = Framer()
    first = framer.encode_rows([row(1, "quiet")])
    assert first.frames() == live(row(1, "quiet"))
    with CODEC.upcasting("StepCompleted", 1, shout):
        second = framer.encode_rows([row(2, "quiet")])
        expected = live(row(2, "quiet"))
    assert second.frames() == expected and expected[0]["output"] == "QUIET"
    assert sse_lines(second) == sse_lines(expected)
    third = framer.encode_rows([row(3, "quiet")])
    assert third.frames() == live(row(3, "quiet")) and third.frames()[0]["output"] == "quiet"
    assert sse_lines(framer.encode_rows([])) == b""


@pytest.mark.parametrize("form", ["bytes", "str"])
def test_a_page_with_an_escape_in_one_row_takes_care_of_that_row_and_the_next_pages_as_before(form):
    """One framer, pages of rows that take the short path between which comes a page holding a NUL
    escape in one row and a report another writer escaped: every page's frames are the live ones,
    the NUL made storable, and the rows around it framed as usual."""
    from api.http.stream import sse_lines
    from eventstore.codec import encode_json
    from flows.events import RunCompleted, StepCompleted

    def row(position: int, event: object) -> tuple:
        text = encode_json(event_data(event))
        return (position, "r1", type(event).__name__, text.encode() if form == "bytes" else text, None)

    def live(page: list[tuple]) -> list[dict]:
        framer = Framer()
        return [f for r in page for f in framer.frames(
            RecordedEvent(r[0], "run-r1", r[0], r[2], msgspec.json.decode(r[3]), {}, 0.0, ""))]

    clean = [row(1, StepCompleted(step_id="a", attempt=1, output="fine", at=1.0)),
             row(2, RunCompleted(report="# done\n", at=2.0))]
    escaped = [row(3, StepCompleted(step_id="b", attempt=1, output="fine", at=3.0)),
               row(4, StepCompleted(step_id="c", attempt=1, output="nul \x00 here", at=4.0)),
               (5, "r1", "RunCompleted", (b'{"at":5.0,"report":"\\u00e9 \\/"}' if form == "bytes"
                                          else '{"at":5.0,"report":"\\u00e9 \\/"}'), None)]
    framer = Framer()
    for page in (clean, escaped, clean):
        replayed = framer.encode_rows(page)
        assert replayed.frames() == live(page) and sse_lines(replayed) == sse_lines(live(page))
    frames = framer.encode_rows(escaped).frames()
    assert frames[1]["output"] == "nul \ufffd here" and frames[2]["report"] == "é /"


def _kept(records: list[RecordedEvent], project_of=lambda run_id: None) -> bytes:
    """The bodies the projector keeps for these records (decoded as it decodes them), joined."""
    from projections.kept_frames import kept_rows
    from projections.source import from_recorded

    return b"".join(row[3] for row in kept_rows(from_recorded(records).items, project_of))


def test_the_frames_the_projector_keeps_are_the_live_frames_byte_for_byte():
    """``stream_frames`` rows (``kept_rows``, from the events as the projector decodes them) hold the
    SSE bytes of the live frames: every framed type, both frames of a pause, a NUL made storable, a
    run's project learned from its launch or from the read tables, none for an event without frames."""
    from api.http.stream import sse_lines

    events = _every_framed_event()
    records = [RecordedEvent(n, f"run-{run}", n, type(e).__name__, event_data(e), {}, 0.0, "")
               for n, (run, e) in enumerate(events, 1)]
    projects = {run: e.project_id for run, e in events if isinstance(e, RunLaunched)}
    live = Framer(projects.get)
    assert _kept(records, projects.get) == sse_lines([f for rec in records for f in live.frames(rec)])
    # a run launched before the page: its project is the read tables'
    later = [r for r in records if r.type != "RunLaunched"]
    assert _kept(later, projects.get) == sse_lines([f for rec in later for f in Framer(projects.get).frames(rec)])
    assert b"project-" in _kept(later, projects.get)


def test_the_frames_kept_for_a_simulated_log_are_the_live_frames_byte_for_byte(log):
    from api.http.stream import sse_lines

    records = [rec for rec, _ in log]
    projects = {e.run_id: e.project_id for _, e in log if isinstance(e, RunLaunched)}  # the read tables'
    kept = b"".join(_kept(records[i:i + 97], projects.get) for i in range(0, len(records), 97))
    assert kept == sse_lines([f for rec in records for f in Framer(projects.get).frames(rec)])
    assert b'"project_id":"project-' in kept


# What the frames of ``_every_framed_event`` hash to, and the upcasters registered, at each
# PROJECTION_VERSION: the projector keeps frames as the code of its version builds them.
# 10: a step column of the read tables (kept_from); the frames are those of 9.
KEPT_FRAMES_FINGERPRINT = {10: "030c0feb5b94cd5fece22ed65ebdae57389ebce2fa4421117f6c28cf2a29a974"}


def test_the_kept_frames_fingerprint_names_the_projection_version():
    """A change to a frame's bytes (or an upcaster added) changes what a resume would send for events
    projected from now on, but not the frames kept already: bump PROJECTION_VERSION (the next start
    rebuilds them), then write the new fingerprint here."""
    import hashlib

    from flows.codec import CODEC
    from projections.tables import PROJECTION_VERSION

    events = _every_framed_event()
    records = [RecordedEvent(n, f"run-{run}", n, type(e).__name__, event_data(e), {}, 0.0, "")
               for n, (run, e) in enumerate(events, 1)]
    upcasters = sorted(f"{name}/{version}/{getattr(f, '__qualname__', f)}"
                       for (name, version), f in CODEC.upcasters.items())
    digest = hashlib.sha256(_kept(records) + repr(upcasters).encode()).hexdigest()
    assert KEPT_FRAMES_FINGERPRINT.get(PROJECTION_VERSION) == digest, (
        f"the kept frames changed (fingerprint {digest}): bump projections.tables.PROJECTION_VERSION "
        "and pin the new fingerprint in KEPT_FRAMES_FINGERPRINT")
