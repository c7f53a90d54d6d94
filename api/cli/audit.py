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
    folds: dict[str, RunFold] = {}  # one state per run, not its events: memory grows with runs, not the log
    after = 0
    while run_id is None:
        try:
            for rec in store.read_all(after=after):
                after, out.events = rec.position, out.events + 1
                if run_id_of(rec.stream_id) is not None:
                    fold = folds.get(rec.stream_id)
                    if fold is None:
                        fold = folds[rec.stream_id] = RunFold(rec.stream_id)
                    fold.add(rec, out.problems)
            break
        except CorruptEventError as exc:
            out.problems.append(f"position {exc.position}: {exc.detail}")
            after, out.events = exc.position, out.events + 1
    if run_id is not None:
        fold = folds[stream_of(run_id)] = RunFold(stream_of(run_id))
        try:
            for rec in store.read_stream(stream_of(run_id)):
                fold.add(rec, out.problems)
        except CorruptEventError as exc:
            out.problems.append(f"stream run-{run_id} position {exc.position}: {exc.detail}")
        out.events = fold.events
    for stream_id, fold in folds.items():
        state = fold.finish(out.problems)
        out.runs += 1
        out.summaries.append(progress.replay_line(run_id_of(stream_id) or "", state, fold.events))
    if verify:
        out.problems += store.verify(stream_of(run_id) if run_id else None, seal=seal)
    return out


class RunFold:
    """One run re-folded event by event, noting every event that does not decode or apply."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.state = RunState()
        self.events = 0

    def add(self, rec: RecordedEvent, problems: list[str]) -> None:
        """Fold one recorded event of the run (in the order recorded)."""
        self.events += 1
        where = f"stream {self.stream_id!r} version {rec.version} (position {rec.position})"
        try:
            event = decode(rec.type, rec.data, schema_version_of(rec))
        except UnknownEventType:
            problems.append(f"{where}: unknown event type {rec.type!r}")
            return
        except CorruptEventError as exc:  # its schema version is not a number
            problems.append(f"{where}: {exc.detail}")
            return
        except (TypeError, ValueError) as exc:  # msgspec's ValidationError, an upcaster that failed
            problems.append(f"{where}: {rec.type} does not decode: {exc}")
            return
        if (rec.version == 1) != isinstance(event, RunLaunched):
            problems.append(f"{where}: a run's stream must begin with RunLaunched, and only once")
            return
        try:
            self.state = evolve(self.state, event, rec.position)
        except Exception as exc:  # noqa: BLE001 - reported, not swallowed: this is what an audit is for
            problems.append(f"{where}: {rec.type} does not apply to the run: {type(exc).__name__}: {exc}")

    def finish(self, problems: list[str]) -> RunState:
        """The run's state, noting a run that ended with steps that never did."""
        state = self.state
        if state.terminal:
            open_steps = [sid for sid, s in state.steps.items() if not s.terminal]
            if open_steps:
                problems.append(f"stream {self.stream_id!r} version {state.version} (position {state.position}): "
                                f"the run is {state.status} but steps {', '.join(open_steps)} never ended")
        return state


def refold(stream_id: str, records: list[RecordedEvent], problems: list[str]) -> RunState:
    """Fold one run's recorded events, noting every event that does not decode or apply."""
    fold = RunFold(stream_id)
    for rec in records:
        fold.add(rec, problems)
    return fold.finish(problems)
