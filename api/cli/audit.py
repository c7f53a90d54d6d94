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
from eventstore import CorruptEventError, EventStore, RecordedEvent, Seal, SqlStore
from flows.codec import CODEC, UnknownEventType, decode
from flows.events import RUN_STREAM_PREFIX, Event, RunLaunched, run_id_of, stream_of
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
        out.problems += store.verify(stream_of(run_id) if run_id else None, seal=seal)
    return out


_PAGE = 2000  # rows per query of the audit's read


def _replay_all(store: EventStore, out: Replay) -> None:
    results: list[tuple[str, list[str]]] = []  # per run, in order of first appearance
    folds: dict[str, _Fold] = {}  # runs not ended yet (or folded again), by stream
    ended: dict[str, int] = {}  # stream -> its index in results, for runs ended and let go
    for item in _log(store):
        out.events += 1
        if isinstance(item, CorruptEventError):
            out.problems.append(f"position {item.position}: {item.detail}")
            continue
        stream_id, position = (item.stream_id, item.position) if isinstance(item, RecordedEvent) else item[:2]
        fold = folds.get(stream_id)
        if fold is None:
            if run_id_of(stream_id) is None:
                continue
            slot = ended.pop(stream_id, None)
            if slot is None:
                fold = folds[stream_id] = _Fold(stream_id, len(results))
                results.append(("", []))
            else:  # an event after the run ended: fold it again from the start, to the end
                fold = folds[stream_id] = _Fold(stream_id, slot, reopened=True)
                fold.refeed(store, before=position)
        if isinstance(item, RecordedEvent):
            fold.feed(item)
        elif item[3] is not None:
            fold.feed_decoded(item[1], item[2], item[3])
        if fold.state.terminal and not fold.reopened:
            results[fold.slot] = fold.finish()
            del folds[stream_id]
            ended[stream_id] = fold.slot
    for fold in folds.values():
        results[fold.slot] = fold.finish()
    _finish(out, results)


Decoded = tuple[str, int, int, Event | None]  # stream, position, version, the event (None: not a run's)
_ROWS = ("SELECT position, stream_id, version, type, {1}, metadata FROM events WHERE position > {0} "
         "ORDER BY position LIMIT {0}")
_metadata = msgspec.json.Decoder(dict[str, Any]).decode
_any = msgspec.json.Decoder().decode


def _log(store: EventStore) -> Iterator[Decoded | RecordedEvent | CorruptEventError]:
    """Every event of the log in position order: decoded straight from its row's JSON text into its
    type where it can be (most rows: a run's event of a type no upcaster starts from, with a sound
    schema version), else as the store reads it (``RecordedEvent``, or the CorruptEventError naming
    a row that does not decode): what an audit reports is what the store's reading reports."""
    if not isinstance(store, SqlStore):
        yield from _log_records(store, 0)
        return
    fast = CODEC.fast()
    database = store.database
    dialect = database.dialect.name
    sql = _ROWS.format("%s" if dialect == "postgresql" else "?",
                       "CAST(data AS BLOB)" if dialect == "sqlite" else "data")
    after = 0
    while True:
        raw = database.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(sql, (after, _PAGE))
            rows = cursor.fetchall()
            cursor.close()
            if dialect == "postgresql":
                raw.rollback()
        finally:
            raw.close()
        for position, stream_id, version, type_name, data, metadata in rows:
            if not stream_id.startswith(RUN_STREAM_PREFIX):
                try:  # nothing to fold, but a row that does not decode is still a problem
                    _any(data), _metadata(metadata)
                except (msgspec.DecodeError, ValueError):
                    yield from _log_records(store, position - 1, 1)
                else:
                    yield stream_id, position, version, None
                continue
            decoder = fast.get(type_name)
            try:
                if decoder is None or not _sound_version(_metadata(metadata)):
                    raise ValueError
                yield stream_id, position, version, decoder.decode(data)
            except (msgspec.DecodeError, ValueError):  # the store's reading says what is wrong
                yield from _log_records(store, position - 1, 1)
        if len(rows) < _PAGE:
            return
        after = rows[-1][0]


def _sound_version(metadata: dict[str, Any]) -> bool:
    version = metadata.get("schema_version", 1)
    return isinstance(version, int) and not isinstance(version, bool)


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

    def feed_decoded(self, position: int, version: int, event: Event) -> None:
        """One event decoded on the fast path (its row was sound): the checks of ``_apply`` after decoding."""
        self.events += 1
        self.state = _evolve(self.stream_id, self.state, event, position, version, self.problems)

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
