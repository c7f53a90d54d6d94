"""Reading a run's log: its state, its history, who is driving it, and following it.

Shared by the orchestrator (recovery, ownership), the RunActor (load), the
Engine (``wait``) and the command line (``baton launch --follow`` & co).
Every event is decoded through ``flows.codec`` (upcasters included).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from actors.errors import RunNotSettled
from eventstore import CorruptEventError, EventStore, NewEvent, RecordedEvent, UnknownEventTypeError
from flows.codec import CODEC, INITIAL_SCHEMA_VERSION, EventCodec, UnknownEventType, UpcastError
from flows.events import TERMINAL_RUN_TYPES, Event, event_data, run_id_of, stream_of
from flows.state import RunState, evolve
from flows.status import RunStatus

# Types only: a `baton` command sent to a server folds runs with this module, without the engine's context
# (the backends) or the SQL store (SQLAlchemy) (docs/PERFORMANCE.md, "CLI start-up").
if TYPE_CHECKING:
    from actors.context import EngineContext
    from eventstore import SqlStore

History = list[tuple[int, Event]]


def schema_version_of(rec: RecordedEvent) -> int:
    """The schema version a recorded event's data was written at (its metadata's; 1 when absent).

    Raises CorruptEventError naming the position when it is not an integer.
    """
    version = rec.metadata.get("schema_version", INITIAL_SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CorruptEventError(rec.position, f"schema_version {version!r} is not an integer")
    return version


def decode(rec: RecordedEvent, codec: EventCodec = CODEC) -> Event:
    """The domain event behind a recorded one, upcast to its current shape (``flows.codec``;
    ``codec`` is the run events' unless given, e.g. ``flows.projects.PROJECT_CODEC``).

    Raises UnknownEventTypeError or CorruptEventError naming the position.
    """
    version = schema_version_of(rec)
    try:
        return codec.decode(rec.type, rec.data, version)
    except UnknownEventType as exc:
        raise UnknownEventTypeError(rec.position, exc.type_name) from None
    except UpcastError as exc:
        raise CorruptEventError(rec.position, str(exc)) from exc
    except msgspec.ValidationError as exc:
        raise CorruptEventError(rec.position, f"data does not fit type {rec.type!r}: {exc}") from None


def new_events(events: Sequence[Event], metadata: dict[str, Any], codec: EventCodec = CODEC) -> list[NewEvent]:
    """Events about to be appended, each with ``metadata`` and the schema version its type is written at."""
    by_version: dict[int, dict[str, Any]] = {}
    out = []
    for event in events:
        name = type(event).__name__
        version = codec.schema_version(name)
        meta = by_version.get(version)
        if meta is None:  # one dict per version, shared by the batch's events of that version
            meta = by_version[version] = {**metadata, "schema_version": version}
        out.append(NewEvent(name, event_data(event), meta))
    return out


def fold_records(records: Sequence[RecordedEvent], run_id: str = "") -> tuple[RunState, History]:
    """Fold recorded events of one run: its state and its ``(position, event)`` history.

    The state starts with ``run_id``, so a run the log does not have still
    knows which run it is: a command refused with UnknownRun names it.
    """
    state = RunState(run_id=run_id)
    history: History = []
    for rec in records:
        event = decode(rec)
        state = evolve(state, event, rec.position)
        history.append((rec.position, event))
    return state, history


def load(ctx: EngineContext, run_id: str) -> tuple[RunState, History]:
    """Fold a run's stream: its state and its ``(position, event)`` history."""
    return fold_records(ctx.store.read_stream(stream_of(run_id)), run_id)


def load_with_owner(ctx: EngineContext, run_id: str) -> tuple[RunState, History, str]:
    """The run's state and history, and the node that recorded its last event."""
    return read_with_owner(ctx.store, run_id)


def load_with_owner_and_leases(ctx: EngineContext, run_id: str) -> tuple[RunState, History, str, dict[str, str] | None]:
    """``load_with_owner``, and the live leases (``Leases.held``) read right after the run's stream on
    the same connection, in one round trip: what a command's ownership check needs (``route``). The
    leases are None when this store cannot read them beside the stream (they are then read apart)."""
    held = ctx.leases.held_read()
    read_and = getattr(ctx.store, "read_stream_and", None)
    if held is None or read_and is None:
        return (*load_with_owner(ctx, run_id), None)
    records, rows = read_and(stream_of(run_id), *held)
    return (*fold_records(records, run_id), _last_node(records), ctx.leases.held_from(rows))


def read_with_owner(store: EventStore, run_id: str) -> tuple[RunState, History, str]:
    """``load_with_owner`` on a bare store (a process without an engine, e.g. ``baton plan``)."""
    records = store.read_stream(stream_of(run_id))
    return (*fold_records(records, run_id), _last_node(records))


def _last_node(records: Sequence[RecordedEvent]) -> str:
    """The node that recorded the run's last event ("" for none)."""
    return records[-1].metadata.get("node", "") if records else ""


def load_many_with_owner(ctx: EngineContext, run_ids: list[str],
                         chunk: int = 500) -> Iterator[tuple[str, RunState, History, str]]:
    """``load_with_owner`` of many runs (a recovery), in order, their streams read ``chunk`` at a time."""
    for start in range(0, len(run_ids), chunk):
        ids = run_ids[start : start + chunk]
        streams = ctx.store.read_streams([stream_of(run_id) for run_id in ids])
        for run_id in ids:
            records = streams.get(stream_of(run_id), [])
            yield (run_id, *fold_records(records, run_id), _last_node(records))


DRAIN = 1000
"""Events ``follow`` takes from the subscription at once before it asks its predicate again."""


def follow(
    store: EventStore,
    run_id: str,
    until: Callable[[RunState], bool],
    on_state: Callable[[RunState], None] | None = None,
    *,
    timeout: float | None = None,
) -> RunState:
    """Follow a run's stream until ``until(state)`` holds; return that state (``Engine.wait``, the CLI).

    Subscribes to the run's stream at the store's head before reading the
    stream, so no event is missed between the two (and the commits of other
    runs neither wake nor cost it anything); then folds each new event of the run onto the
    state (reading the stream again on a gap). ``until`` is asked, and
    ``on_state`` told, once the events at hand are folded, not after each:
    an append of several events is seen whole (up to DRAIN events at a time).
    No timer polls the store: it waits on the subscription. Raises
    RunNotSettled (a TimeoutError) after ``timeout`` seconds (None: never).
    """
    stream = stream_of(run_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    subscription = store.subscribe(after=store.head(), stream_id=stream)
    try:
        state = fold_records(store.read_stream(stream), run_id)[0]
        if on_state is not None:
            on_state(state)
        while not until(state):
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise RunNotSettled(run_id, state, timeout or 0.0)
            rec = subscription.next_event(timeout=wait)
            changed, taken = False, 0
            while rec is not None:
                if rec.stream_id == stream and rec.version > state.version:
                    changed = True
                    if rec.version == state.version + 1:
                        state = evolve(state, decode(rec), rec.position)  # the next event: fold it on
                    else:
                        state = fold_records(store.read_stream(stream), run_id)[0]  # a gap: read it again
                taken += 1
                if taken == DRAIN:
                    break
                rec = subscription.next_event(timeout=0)  # the rest of what was committed meanwhile
            if changed and on_state is not None:
                on_state(state)
        return state
    finally:
        subscription.close()


ParkedRun = tuple[str, float, float | None]
"""A run the read tables show waiting only for a person: ``(flow, launched_at, approval timer due or None)``."""

KnownRuns = tuple[int, dict[str, int]] | tuple[int, dict[str, int], Mapping[str, ParkedRun]]
"""What the read tables know of the open runs (``ReadModel.open_runs``): ``(position, {run: launch
position})``, and perhaps ``{run: ParkedRun}`` of those parked at an approval."""


def parked_runs(known: KnownRuns | None) -> Mapping[str, ParkedRun]:
    """The runs parked at an approval that ``known`` names ({} when it names none)."""
    if known is None or len(known) < 3:
        return {}
    return known[2]


def unended_runs(store: EventStore, known: KnownRuns | None = None, touched: set[str] | None = None) -> list[str]:
    """The runs the log shows launched and not ended, in the order they were launched.

    ``known`` = ``(position, {run: launch position}, ...)``, the runs not ended as
    of ``position`` (``ReadModel.open_runs``: the read tables), makes it read
    only the log after ``position``: its cost then follows the unfinished
    runs, not the log. ``touched``, given with ``known``, gets the runs with any event after
    ``position`` (the read tables do not know their latest state).
    """
    after, launched = (0, {}) if known is None else (known[0], dict(known[1]))
    types = None if touched is not None and known is not None else ("RunLaunched", *TERMINAL_RUN_TYPES)
    ended: set[str] = set()
    for rec in store.read_all(after=after, types=types):
        run_id = run_id_of(rec.stream_id)
        if run_id is None:
            continue
        if touched is not None:
            touched.add(run_id)
        if rec.type == "RunLaunched":
            launched[run_id] = rec.position
        elif rec.type in TERMINAL_RUN_TYPES:
            ended.add(run_id)
    return sorted((r for r in launched if r not in ended), key=launched.__getitem__)


def run_ids_starting(store: SqlStore, prefix: str, limit: int = 10) -> list[str]:
    """Ids of runs whose id starts with ``prefix``, in order, at most ``limit``.

    Read from the log itself (each run stream's first event), not a read
    model, so a run launched a moment ago by another process is found. A
    full id is one indexed lookup; a shorter prefix scans the first events
    of every stream (on SQLite through the stream index; on PostgreSQL the
    database's collation may not order ids byte-wise, so there it scans).
    """
    lo = stream_of(prefix)
    params: dict[str, object] = {"lo": lo, "n": len(lo), "limit": limit}
    where = "version = 1 AND substr(stream_id, 1, :n) = :lo"
    database = store.database
    if database.dialect.name == "sqlite":  # byte-wise order: the range rides the (stream_id, version) index
        where += " AND stream_id >= :lo AND stream_id < :hi"
        params["hi"] = lo + "\x7f"
    import sqlalchemy as sa  # imported already: the store is open

    query = sa.text(f"SELECT stream_id FROM events WHERE {where} ORDER BY stream_id LIMIT :limit")
    with database.connect() as conn:
        return [row[0][len(stream_of("")):] for row in conn.execute(query, params)]


NODE_LEASE = "node-"


def node_lease(node: str) -> str:
    """The lease a process named ``node`` holds while it lives (its owner is the process: host:pid)."""
    return NODE_LEASE + node


SERVER_LEASE = "server-"


def server_lease(url: str) -> str:
    """The lease a ``baton serve`` listening at ``url`` holds while it serves (owner: its host:pid)."""
    return SERVER_LEASE + url


def live_servers(held: dict[str, str]) -> list[tuple[str, str]]:
    """``(url, owner)`` of every server whose lease is alive, from ``Leases.held()``."""
    return sorted((name[len(SERVER_LEASE):], owner) for name, owner in held.items() if name.startswith(SERVER_LEASE))


def live_nodes(held: dict[str, str]) -> set[str]:
    """The node names whose lease is alive, from ``Leases.held()``."""
    return {name[len(NODE_LEASE):] for name in held if name.startswith(NODE_LEASE)}


def driven_elsewhere(state: RunState, last_node: str, me: str, live: set[str]) -> bool:
    """Whether another live process is driving the run now.

    The node that recorded a run's last event drives it until it ends or only
    waits for a person; a node counts while its lease is alive.
    """
    if state.terminal or not last_node or last_node == me or last_node not in live:
        return False
    return not (state.status == RunStatus.PAUSED and not state.running())


class Route(NamedTuple):
    """Where a command for a run is carried out.

    ``node`` set: hand it to that node's inbox (it drives the run, or can
    run what this process cannot). ``missing`` set: refuse it, naming the
    flows module this process lacks. Neither: carry it out here.
    """

    node: str = ""
    missing: str = ""


def route(state: RunState, last_node: str, me: str, live: set[str], missing: Callable[[], str]) -> Route:
    """Who should carry out a command for the run: here, the node driving it, or nobody.

    ``missing()`` names a flows module of the run's pending code steps this
    process cannot import ("" when it can import them all); it is asked only
    when this process would take the run over, and must be "" for a command
    that runs no code (cancel). A run this process cannot drive goes to the
    node that recorded its last event while that node lives, else nowhere:
    taking it over would fail its code steps.
    """
    if driven_elsewhere(state, last_node, me, live):
        return Route(node=last_node)
    if state.terminal or state.launched is None:
        return Route()  # the run's own actor answers (RunFinished, UnknownRun)
    module = missing()
    if not module:
        return Route()
    if last_node and last_node != me and last_node in live:
        return Route(node=last_node)
    return Route(missing=module)
