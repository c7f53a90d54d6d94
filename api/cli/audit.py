"""Audit: re-fold every run from the log and check it, writing nothing.

``baton replay [--verify]`` prints what this finds. Replay never calls a model
and never re-evaluates a decision: it folds the recorded events (DESIGN §3),
decoded as every reader decodes them (``flows.codec``, upcasters included).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from actors.runlog import schema_version_of
from api.cli import progress
from eventstore import CorruptEventError, EventStore, RecordedEvent, Seal, SqlEventStore
from eventstore.logcheck import LogCheck, log_pages, stream_pages
from flows.codec import CODEC, UnknownEventType, decode
from flows.events import RUN_STREAM_PREFIX, Event, RunLaunched, run_id_of, stream_of
from flows.state import RunState, evolve
from flows.status import RUN_TERMINAL


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

    Nothing is written. The log is read once, in position order, and each
    event is folded into its run's state as it comes; a run's state is let
    go once the run has ended (its summary line and problems are kept), so
    memory follows the runs in flight at a point of the log, not the log's
    size. An event that comes after its run ended (which an intact log never
    has) makes that run be folded again from its whole stream. A row that
    does not decode is a problem named by its position, and the reading
    goes on after it. Summaries and problems come out in the order the runs
    first appear in the log. With ``verify``, the whole log of an SQL store
    has its hash chains, holes and seals checked on the same read
    (``eventstore.logcheck``); those problems come after the fold's, as
    ``store.verify()`` gives them.
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
        if verify:
            out.problems += store.verify(stream_of(run_id), seal=seal)
    elif isinstance(store, SqlEventStore):  # the hash chains and seals checked on the fold's own read
        check = LogCheck.for_store(store, seal) if verify else None
        runs = _Runs(store, out, check)
        runs.fold_rows()
        runs.finish()
        if check is not None:
            out.problems += check.finish(lambda stream_id: stream_pages(store, stream_id))
    else:
        runs = _Runs(store, out)
        for item in _log_records(store, 0):
            runs.take(item)
        runs.finish()
        if verify:
            out.problems += store.verify(seal=seal)
    return out


_metadata = msgspec.json.Decoder(dict[str, Any]).decode
_any = msgspec.json.Decoder().decode


class _Runs:
    """The runs of the log being re-folded as its events come, in position order.

    A run's state is let go once it has ended (its summary line and problems are kept in
    ``results``); an event after that folds the run again from its whole stream.
    """

    def __init__(self, store: EventStore, out: Replay, check: LogCheck | None = None) -> None:
        self.store = store
        self.out = out
        self.check = check
        self.results: list[tuple[str, list[str]]] = []  # per run, in order of first appearance
        self.folds: dict[str, _Fold] = {}  # runs not ended yet (or folded again), by stream
        self.ended: dict[str, int] = {}  # stream -> its index in results, for runs ended and let go

    def fold_of(self, stream_id: str, position: int) -> _Fold | None:
        """The run's fold (a new one, or its whole stream folded again up to ``position``); None: not a run."""
        fold = self.folds.get(stream_id)
        if fold is None:
            if run_id_of(stream_id) is None:
                return None
            slot = self.ended.pop(stream_id, None)
            if slot is None:
                fold = self.folds[stream_id] = _Fold(stream_id, len(self.results))
                self.results.append(("", []))
            else:  # an event after the run ended: fold it again from the start, to the end
                fold = self.folds[stream_id] = _Fold(stream_id, slot, reopened=True)
                fold.refeed(self.store, before=position)
        return fold

    def done(self, fold: _Fold) -> None:
        """The run has ended: keep its summary and problems, let its state go."""
        self.results[fold.slot] = fold.finish()
        del self.folds[fold.stream_id]
        self.ended[fold.stream_id] = fold.slot
        if self.check is not None:
            self.check.let_go(fold.stream_id)

    def take(self, item: RecordedEvent | CorruptEventError) -> None:
        """One event as the store reads it (or the row it could not read)."""
        self.out.events += 1
        if isinstance(item, CorruptEventError):
            self.out.problems.append(f"position {item.position}: {item.detail}")
            return
        fold = self.fold_of(item.stream_id, item.position)
        if fold is None:
            return
        fold.feed(item)
        if fold.state.terminal and not fold.reopened:
            self.done(fold)

    def fold_rows(self) -> None:
        """Every row of the log (an SqlEventStore's) in position order, each page handed to the check
        first; a row is decoded straight from its JSON text into its type where it can be (most rows:
        a run's event of a type no upcaster starts from, with a sound schema version), else taken as the
        store reads it (``take``): what an audit reports is what the store's reading reports."""
        assert isinstance(self.store, SqlEventStore)
        fast, check, folds, out = CODEC.fast(), self.check, self.folds, self.out
        for rows in log_pages(self.store):
            if check is not None:
                check.feed(rows)
            for position, _, stream_id, version, type_name, data, metadata, _, _ in rows:
                event: Event | None = None
                if not stream_id.startswith(RUN_STREAM_PREFIX):
                    try:  # nothing to fold, but a row that does not decode is still a problem
                        _any(data), _metadata(metadata)
                    except (msgspec.DecodeError, ValueError):
                        pass
                    else:
                        out.events += 1
                        continue
                else:
                    decoder = fast.get(type_name)
                    if decoder is not None:
                        try:
                            schema_version = _schema_version(metadata).schema_version
                            if type(schema_version) is int:  # not a bool, nor a text: the store's reading says
                                event = decoder.decode(data)
                        except (msgspec.DecodeError, ValueError):
                            pass
                if event is None:  # the store's reading says what is wrong
                    for item in _log_records(self.store, position - 1, 1):
                        self.take(item)
                    continue
                out.events += 1
                fold = folds.get(stream_id) or self.fold_of(stream_id, position)
                if fold is None:
                    continue
                fold.events += 1
                if (version == 1) != isinstance(event, RunLaunched):  # _evolve's checks, inline: once per event
                    _evolve(stream_id, fold.state, event, position, version, fold.problems)
                    continue
                try:
                    state = fold.state = evolve(fold.state, event, position)
                except Exception:  # noqa: BLE001 - _evolve says what went wrong
                    _evolve(stream_id, fold.state, event, position, version, fold.problems)
                    continue
                if state.status in RUN_TERMINAL and not fold.reopened:
                    self.done(fold)

    def finish(self) -> None:
        for fold in self.folds.values():
            self.results[fold.slot] = fold.finish()
        _finish(self.out, self.results)


class _Metadata(msgspec.Struct):
    """What the fast read needs of a row's metadata (decoding it also checks it is a JSON object)."""

    schema_version: Any = 1


_schema_version = msgspec.json.Decoder(_Metadata).decode


def _log_records(store: EventStore, after: int, limit: int | None = None) -> Iterator[RecordedEvent | CorruptEventError]:
    """The store's own reading from ``after`` (``limit`` events); a row that does not decode is handed
    out as its CorruptEventError and the reading goes on after it."""
    while True:
        try:
            for rec in store.read_all(after=after, limit=limit):
                after = rec.position
                yield rec
            return
        except CorruptEventError as exc:
            yield exc
            if limit is not None:
                return
            after = exc.position


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
    return _evolve(stream_id, state, event, rec.position, rec.version, problems, rec.type)


def _evolve(stream_id: str, state: RunState, event: Event, position: int, version: int,
            problems: list[str], type_name: str = "") -> RunState:
    """``state`` with a decoded event folded in, or as it was when the event does not belong there."""
    if (version == 1) != isinstance(event, RunLaunched):
        problems.append(f"stream {stream_id!r} version {version} (position {position}): a run's stream must "
                        "begin with RunLaunched, and only once")
        return state
    try:
        return evolve(state, event, position)
    except Exception as exc:  # noqa: BLE001 - reported, not swallowed: this is what an audit is for
        problems.append(f"stream {stream_id!r} version {version} (position {position}): "
                        f"{type_name or type(event).__name__} does not apply to the run: "
                        f"{type(exc).__name__}: {exc}")
        return state
