"""Audit: re-fold every run from the log and check it, writing nothing.

``baton replay [--verify]`` prints what this finds. Replay never calls a model
and never re-evaluates a decision: it folds the recorded events (DESIGN §3),
decoded as every reader decodes them (``flows.codec``, upcasters included).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.runlog import schema_version_of
from api.cli import progress
from eventstore import CorruptEventError, EventStore, RecordedEvent
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


def replay_log(store: EventStore, *, run_id: str | None = None, verify: bool = False) -> Replay:
    """Re-fold every run (or one) from the log; with ``verify``, check the hash chains too.

    Nothing is written. The log is read once, in position order, and each
    event is folded into its run's state as it comes; a run's state is let
    go once the run has ended (its summary line and problems are kept), so
    memory follows the runs in flight at a point of the log, not the log's
    size. An event that comes after its run ended (which an intact log never
    has) makes that run be folded again from its whole stream. A row that
    does not decode is a problem named by its position, and the reading
    goes on after it. Summaries and problems come out in the order the runs
    first appear in the log.
    """
    out = Replay()
    if run_id is not None:
        try:
            records = store.read_stream(stream_of(run_id))
        except CorruptEventError as exc:
            out.problems.append(f"stream run-{run_id} position {exc.position}: {exc.detail}")
        else:
            out.events = len(records)
            fold = _Fold(stream_of(run_id))
            for rec in records:
                fold.feed(rec)
            _finish(out, [fold.finish()])
    else:
        _replay_all(store, out)
    if verify:
        out.problems += store.verify(stream_of(run_id) if run_id else None)
    return out


def _replay_all(store: EventStore, out: Replay) -> None:
    results: list[tuple[str, list[str]]] = []  # per run, in order of first appearance
    folds: dict[str, _Fold] = {}  # runs not ended yet (or folded again), by stream
    ended: dict[str, int] = {}  # stream -> its index in results, for runs ended and let go
    after = 0
    while True:
        try:
            for rec in store.read_all(after=after):
                after, out.events = rec.position, out.events + 1
                fold = folds.get(rec.stream_id)
                if fold is None:
                    if run_id_of(rec.stream_id) is None:
                        continue
                    slot = ended.pop(rec.stream_id, None)
                    if slot is None:
                        fold = folds[rec.stream_id] = _Fold(rec.stream_id, len(results))
                        results.append(("", []))
                    else:  # an event after the run ended: fold it again from the start, to the end
                        fold = folds[rec.stream_id] = _Fold(rec.stream_id, slot, reopened=True)
                        fold.refeed(store, before=rec.position)
                fold.feed(rec)
                if fold.state.terminal and not fold.reopened:
                    results[fold.slot] = fold.finish()
                    del folds[rec.stream_id]
                    ended[rec.stream_id] = fold.slot
            break
        except CorruptEventError as exc:
            out.problems.append(f"position {exc.position}: {exc.detail}")
            after, out.events = exc.position, out.events + 1
    for fold in folds.values():
        results[fold.slot] = fold.finish()
    _finish(out, results)


def _finish(out: Replay, results: list[tuple[str, list[str]]]) -> None:
    for summary, problems in results:
        out.runs += 1
        out.summaries.append(summary)
        out.problems += problems


class _Fold:
    """One run being re-folded: its state so far, how many events, what was wrong."""

    __slots__ = ("events", "problems", "reopened", "slot", "state", "stream_id")

    def __init__(self, stream_id: str, slot: int = 0, *, reopened: bool = False) -> None:
        self.stream_id = stream_id
        self.slot = slot
        self.reopened = reopened
        self.state = RunState()
        self.events = 0
        self.problems: list[str] = []

    def refeed(self, store: EventStore, before: int) -> None:
        """Fold the stream's events before position ``before`` (read again from the store)."""
        try:
            records = store.read_stream(self.stream_id)
        except CorruptEventError:
            records = []  # its bad row was reported by the main read
        for rec in records:
            if rec.position < before:
                self.feed(rec)

    def feed(self, rec: RecordedEvent) -> None:
        self.events += 1
        self.state = _apply(self.stream_id, self.state, rec, self.problems)

    def finish(self) -> tuple[str, list[str]]:
        """The run's summary line and its problems (an ended run with steps never ended among them)."""
        state = self.state
        if state.terminal:
            open_steps = [sid for sid, s in state.steps.items() if not s.terminal]
            if open_steps:
                self.problems.append(f"stream {self.stream_id!r} version {state.version} (position "
                                     f"{state.position}): the run is {state.status} but steps "
                                     f"{', '.join(open_steps)} never ended")
        return progress.replay_line(run_id_of(self.stream_id) or "", state, self.events), self.problems


def refold(stream_id: str, records: list[RecordedEvent], problems: list[str]) -> RunState:
    """Fold one run's recorded events, noting every event that does not decode or apply."""
    fold = _Fold(stream_id)
    for rec in records:
        fold.feed(rec)
    fold.finish()
    problems += fold.problems
    return fold.state


def _apply(stream_id: str, state: RunState, rec: RecordedEvent, problems: list[str]) -> RunState:
    """``state`` with one more recorded event folded in, or as it was when the event is a problem."""

    def where() -> str:  # built only for a problem: most events have none
        return f"stream {stream_id!r} version {rec.version} (position {rec.position})"

    try:
        event = decode(rec.type, rec.data, schema_version_of(rec))
    except UnknownEventType:
        problems.append(f"{where()}: unknown event type {rec.type!r}")
        return state
    except CorruptEventError as exc:  # its schema version is not a number
        problems.append(f"{where()}: {exc.detail}")
        return state
    except (TypeError, ValueError) as exc:  # msgspec's ValidationError, an upcaster that failed
        problems.append(f"{where()}: {rec.type} does not decode: {exc}")
        return state
    if (rec.version == 1) != isinstance(event, RunLaunched):
        problems.append(f"{where()}: a run's stream must begin with RunLaunched, and only once")
        return state
    try:
        return evolve(state, event, rec.position)
    except Exception as exc:  # reported, not swallowed: this is what an audit is for
        problems.append(f"{where()}: {rec.type} does not apply to the run: {type(exc).__name__}: {exc}")
        return state
