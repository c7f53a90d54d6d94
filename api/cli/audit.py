"""Audit: re-fold every run from the log and check it, writing nothing.

``baton replay [--verify]`` prints what this finds. Replay never calls a model
and never re-evaluates a decision: it folds the recorded events (DESIGN §3),
decoded as every reader decodes them (``flows.codec``, upcasters included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.runlog import schema_version_of
from api.cli import progress
from eventstore import CorruptEventError, EventStore, RecordedEvent, Seal
from flows.codec import UnknownEventType, decode
from flows.events import RunLaunched, run_id_of, stream_of
from flows.state import RunState, evolve


@dataclass
class Replay:
    """What re-folding the log found: counts, one summary line per run, and every problem."""

    events: int = 0
    runs: int = 0
    summaries: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def replay_log(store: EventStore, *, run_id: str | None = None, verify: bool = False,
               seal: Seal | None = None) -> Replay:
    """Re-fold every run (or one) from the log; with ``verify``, check the hash chains and seals too
    (``seal``: one kept outside the database, see ``eventstore.seal``).

    Nothing is written. A row that does not decode is a problem named by its
    position, and the reading goes on after it.
    """
    out = Replay()
    streams: dict[str, list[RecordedEvent]] = {}
    after = 0
    while run_id is None:
        try:
            for rec in store.read_all(after=after):
                after, out.events = rec.position, out.events + 1
                if run_id_of(rec.stream_id) is not None:
                    streams.setdefault(rec.stream_id, []).append(rec)
            break
        except CorruptEventError as exc:
            out.problems.append(f"position {exc.position}: {exc.detail}")
            after, out.events = exc.position, out.events + 1
    if run_id is not None:
        try:
            streams[stream_of(run_id)] = store.read_stream(stream_of(run_id))
        except CorruptEventError as exc:
            out.problems.append(f"stream run-{run_id} position {exc.position}: {exc.detail}")
        out.events = sum(len(r) for r in streams.values())
    for stream_id, records in streams.items():
        state = refold(stream_id, records, out.problems)
        out.runs += 1
        out.summaries.append(progress.replay_line(run_id_of(stream_id) or "", state, len(records)))
    if verify:
        out.problems += store.verify(stream_of(run_id) if run_id else None, seal=seal)
    return out


def refold(stream_id: str, records: list[RecordedEvent], problems: list[str]) -> RunState:
    """Fold one run's recorded events, noting every event that does not decode or apply."""
    state = RunState()
    for rec in records:
        where = f"stream {stream_id!r} version {rec.version} (position {rec.position})"
        try:
            event = decode(rec.type, rec.data, schema_version_of(rec))
        except UnknownEventType:
            problems.append(f"{where}: unknown event type {rec.type!r}")
            continue
        except CorruptEventError as exc:  # its schema version is not a number
            problems.append(f"{where}: {exc.detail}")
            continue
        except (TypeError, ValueError) as exc:  # msgspec's ValidationError, an upcaster that failed
            problems.append(f"{where}: {rec.type} does not decode: {exc}")
            continue
        if (rec.version == 1) != isinstance(event, RunLaunched):
            problems.append(f"{where}: a run's stream must begin with RunLaunched, and only once")
            continue
        try:
            state = evolve(state, event, rec.position)
        except Exception as exc:  # reported, not swallowed: this is what an audit is for
            problems.append(f"{where}: {rec.type} does not apply to the run: {type(exc).__name__}: {exc}")
    if state.terminal:
        open_steps = [sid for sid, s in state.steps.items() if not s.terminal]
        if open_steps:
            problems.append(f"stream {stream_id!r} version {state.version} (position {state.position}): the run "
                            f"is {state.status} but steps {', '.join(open_steps)} never ended")
    return state
