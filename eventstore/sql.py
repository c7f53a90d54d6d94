"""The event store on SQLAlchemy Core: SQLite (embedded default) or PostgreSQL.

``open_store(url)`` picks the backend from the URL, checks the database is
reachable, sets the schema up (idempotent) and starts the store's single
writer thread. Appends from every thread of the process go through the
store's one writing connection and are group-committed (see
``eventstore.writer``); reads use other connections and never block the
writer.
"""

from __future__ import annotations

import functools
import operator
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol, Self, runtime_checkable

import sqlalchemy as sa

from eventstore import schema
from eventstore.chain import Chain, ChainVerifier
from eventstore.codec import (
    EMPTY_OBJECT,
    decode_row,
    decode_rows,
    encode_json,
    encode_metadata,
    encode_new_event,
)
from eventstore.seal import (
    SEAL_STREAM,
    SEAL_TYPE,
    LogDigest,
    Seal,
    SealCheck,
    check_recorded,
    recorded_seals,
    seal_data,
)
from eventstore.store import (
    EventStore,
    NewEvent,
    Outage,
    RecordedEvent,
    StoreClosedError,
    StoreUnavailableError,
)
from eventstore.subscription import PollingWatcher, Subscription, WakeupHub
from eventstore.writer import GroupCommitWriter, PendingAppend

_COLUMNS = "position, stream_id, version, type, data, metadata, recorded_at, hash, event_id"
_READ_ALL = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_READ_STREAM = (
    f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND version > ? ORDER BY version"
)
_FOLLOW_STREAM = (  # the stream's index finds its rows; position orders them as the log does
    f"SELECT {_COLUMNS} FROM events WHERE stream_id = ? AND position > ? ORDER BY position LIMIT ?"
)
_HEAD = "SELECT coalesce(max(position), 0) FROM events"
_VERIFY_COLUMNS = "stream_id, version, position, type, data, hash, event_id, metadata, recorded_at"
_VERIFY_ALL = (
    f"SELECT {_VERIFY_COLUMNS} FROM events"
    " WHERE (stream_id, version) > (?, ?) ORDER BY stream_id, version LIMIT ?"
)
_VERIFY_STREAM = (
    f"SELECT {_VERIFY_COLUMNS} FROM events"
    " WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?"
)
_DIGEST_ROWS = (
    "SELECT position, event_id, stream_id, version, type, data, metadata, recorded_at, hash FROM events"
    " WHERE position > ? AND position <= ? ORDER BY position LIMIT ?"
)
_IN_CHUNK = 900
_POSITION = operator.itemgetter(0)  # of a row (codec.ROW_COLUMNS)
_OPTIONS = {
    "poll_interval", "pool_size", "connect_timeout", "busy_timeout_ms", "lock_timeout_s",
    "max_backoff_s", "max_group_events", "page_size",
    "chain_key", "_unsafe_no_order_lock", "_before_commit", "_on_lock_wait",
}


@runtime_checkable
class SqlStore(EventStore, Protocol):
    """An event store whose log lives in a SQL database it shares: the seam to the read side.

    Some parts keep their tables in the store's own database, and must: the
    projections commit each batch of read rows with their checkpoint in one
    transaction of it (exactly-once, DESIGN §6); the leases sit beside the
    log so a lease and the events it fences are one database's truth; the
    log readers that outrun ``read_all`` (projection catch-up pages, run ids
    by prefix) query the events table on it. They get it here and nowhere
    else: ``database``, a SQLAlchemy Engine (a pool of connections; its
    ``dialect.name`` is "sqlite" or "postgresql"). ``open_store`` returns
    one (``SqlEventStore``); a wrapper that forwards ``database`` is one too.
    """

    @property
    def database(self) -> sa.Engine:
        """The store's database, shared with the read tables and the leases."""
        ...


class SqlEventStore:
    """An append-only event store in one SQL database (see ``open_store``); a ``SqlStore``.

    Thread-safe: share one instance per process and database. ``database`` is
    the SQLAlchemy Engine (other packages keep their own tables in the same
    database through it: see ``SqlStore``); ``dialect`` is "sqlite" or
    "postgresql".
    """

    # ``append(last=...)`` renders a last event from the positions of the ones before it (see append)
    renders_last = True

    def __init__(
        self, url: str, database: sa.Engine, backend: Any, options: dict[str, Any], chain: Chain | None = None
    ) -> None:
        self.url = url
        self._chain = chain or Chain()
        self.database = database
        self.dialect: str = backend.dialect
        self._backend = backend
        # Pages of ~1000 rows read fastest: bigger ones keep more decoded
        # objects alive at once, and the garbage collector scans them all.
        self._page_size: int = options.get("page_size", 1000)
        self._poll_interval: float = options.get("poll_interval", 0.5)
        self._sql = _dialect_sql(backend.placeholder)
        self._hub = WakeupHub()
        self._watcher: Any = None
        # Weak: a subscription its consumer dropped without closing may go.
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self._writer = GroupCommitWriter(
            backend,
            self._committed,
            max_group_events=options.get("max_group_events", 5000),
            max_backoff_s=options.get("max_backoff_s", 5.0),
        )
        self._read_failure: Outage | None = None  # the last read that failed, until one succeeds
        self._saw_head: Callable[[str, int, str], None] | None = getattr(backend, "saw_head", None)

    def _committed(self, last: int, group: list[PendingAppend]) -> None:
        """The writer committed ``group`` (up to ``last``): hand its rows to the hub, wake the subscribers.

        A subscription in this process then takes them from the hub instead
        of reading them back from the table.
        """
        if len(group) == 1:
            rows = group[0].rows  # ascending: a commit gives an append's events rising positions
        else:
            rows = [row for pending in group for row in pending.rows]  # a refused append has none
            rows.sort(key=_POSITION)  # PostgreSQL inserts rendered last events after the others
        self._hub.committed(rows, last)

    def __repr__(self) -> str:
        safe = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        return f"<SqlEventStore {safe}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None = None,
        *,
        timeout: float | None = None,
        last: Callable[[list[int]], NewEvent] | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to a stream atomically and return them as recorded.

        ``last``, when given, renders the final event from the positions of
        the events before it, in the transaction that gives them those
        positions: an event citing them (a run's report) is committed with
        them, not in a commit of its own after theirs. ``events[-1]`` stands
        for it until then: the event ``last`` returns must keep its id (a
        retry is recognised by its ids). At least two events.

        ``expected_version`` is the stream's current version (0 for a new
        stream); None skips the check. Blocks until the events are durable:
        while the database is away, for as long as that lasts, or at most
        ``timeout`` seconds (then StoreUnavailableError: maybe recorded, see
        ``GroupCommitWriter.submit``).
        Retrying an append whose event ids are all recorded (in this stream)
        returns the recorded events and appends nothing, whatever the version.

        Raises ConcurrencyError (nothing appended) on a version mismatch,
        EventIdConflictError when only some ids are recorded (or elsewhere),
        TypeError for data that is not JSON-encodable, ValueError for a bad
        stream id or duplicate ids in one call, StoreUnavailableError when the
        database cannot be written, StoreClosedError after ``close()``.
        """
        if not isinstance(stream_id, str) or not stream_id or "\x00" in stream_id:
            raise ValueError(f"a stream id must be a non-empty string, not {stream_id!r}")
        if expected_version is not None and expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, not {expected_version}")
        if not events:
            return []
        ids: list[str] = []
        types: list[str] = []
        data: list[str] = []
        metadata: list[str] = []
        # A batch's events mostly share one metadata dict (actors.runlog.new_events): encoded once.
        last_metadata: Any = None
        metadata_text = EMPTY_OBJECT
        for event in events:
            if not isinstance(event, NewEvent):
                raise TypeError(f"append takes NewEvent values, not {type(event).__name__}")
            type_, event_id = event.type, event.id
            if not type_ or "\x00" in type_ or "\x00" in event_id:
                raise ValueError(f"bad event type or id: {type_!r}, {event_id!r}")
            data.append(encode_json(event.data))
            if event.metadata is not last_metadata:
                last_metadata = event.metadata
                metadata_text = encode_metadata(last_metadata)
            ids.append(event_id)
            types.append(type_)
            metadata.append(metadata_text)
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream {stream_id!r}: the same event id appears twice in one append")
        render: Callable[[list[int]], tuple[str, str, str]] | None = None
        if last is not None:
            if len(events) < 2:
                raise ValueError("append(last=...) renders the last of at least two events")
            render = functools.partial(_render_last, last, ids[-1])
        pending = self._writer.submit(
            PendingAppend(stream_id, expected_version, ids, types, data, metadata, render), timeout
        )
        if pending.duplicate:
            recorded = self._read_ids(ids)
            # A retry of an append whose commit's outcome was lost: nobody told the hub of it.
            self._hub.advance(max((event.position for event in recorded), default=0))
            return recorded
        return decode_rows(pending.rows)  # the rows it inserted, as a read would return them

    # -- reading -----------------------------------------------------------

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The stream's events after ``after_version``, in version order ([] if none)."""
        rows = self._query(self._sql[_READ_STREAM], (stream_id, after_version))
        if rows and self._saw_head is not None:  # the writer need not read this head again to append
            self._saw_head(stream_id, rows[-1][2], rows[-1][7])
        return decode_rows(rows)

    def read_stream_and(self, stream_id: str, sql: str,
                        params: tuple[Any, ...] = ()) -> tuple[list[RecordedEvent], list[tuple[Any, ...]]]:
        """``read_stream(stream_id)``, then one more SELECT (``?`` placeholders, as ``read_sql``) right
        after it on the same connection: one round trip on PostgreSQL. The second sees at least what
        was committed when the stream was read (a command's ownership check reads the leases after the
        run's stream: a process that recorded the run's last event held its lease before it did)."""
        try:
            rows, more = self._backend.query_many([(self._sql[_READ_STREAM], (stream_id, 0)),
                                                   (sql.replace("?", self._backend.placeholder), params)])
        except StoreUnavailableError as exc:
            if self._read_failure is None:
                self._read_failure = Outage(time.time(), " ".join(str(exc).split()))
            raise
        self._read_failure = None
        if rows and self._saw_head is not None:
            self._saw_head(stream_id, rows[-1][2], rows[-1][7])
        return decode_rows(rows), more

    def read_streams(self, stream_ids: Collection[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams' events, each in version order, in one read per ``_IN_CHUNK`` streams (a
        recovery of 10,000 parked runs read one stream per round trip: 3 s on PostgreSQL); a stream with
        no event is left out."""
        wanted = list(dict.fromkeys(stream_ids))
        found: dict[str, list[RecordedEvent]] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            marks = ",".join([self._backend.placeholder] * len(chunk))
            rows = self._query(f"SELECT {_COLUMNS} FROM events WHERE stream_id IN ({marks}) ORDER BY position",
                               tuple(chunk))
            by_stream: dict[str, list[tuple[Any, ...]]] = {}
            for row in rows:
                by_stream.setdefault(row[1], []).append(row)
            for stream_id, stream_rows in by_stream.items():
                if self._saw_head is not None:
                    self._saw_head(stream_id, stream_rows[-1][2], stream_rows[-1][7])
                found[stream_id] = decode_rows(stream_rows)
        return found

    def read_all(
        self, after: int = 0, limit: int | None = None, *, types: Collection[str] | None = None
    ) -> Iterator[RecordedEvent]:
        """Every event after global position ``after``, ascending, at most ``limit``.

        ``types`` keeps only events of those types, filtered in the database
        (a scan for a few kinds of event decodes nothing else). Reads lazily,
        page by page, holding no connection between pages. Raises
        CorruptEventError (naming the position) when it reaches a row that
        cannot be decoded, after yielding every event before it.
        """
        remaining = limit
        wanted = tuple(types) if types is not None else None
        if wanted == ():
            return
        while remaining is None or remaining > 0:
            size = self._page_size if remaining is None else min(self._page_size, remaining)
            rows = self._read_rows(after, size) if wanted is None else self._read_typed(after, size, wanted)
            for row in rows:
                yield decode_row(row)  # decoded as consumed: see codec.decode_rows
            if len(rows) < size:
                return
            after = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def head(self) -> int:
        """The last committed global position (0 when the store is empty)."""
        return int(self._query(_HEAD)[0][0])

    def subscribe(self, after: int = 0, *, page_size: int = 500, stream_id: str | None = None) -> Subscription:
        """Follow every event after ``after``: the backlog first, then live.

        With ``stream_id``, only that stream's events (read through the
        stream's index, so a follower of one quiet stream, such as a node's
        inbox, does not read the whole log). See
        ``eventstore.subscription.Subscription`` for the iteration and
        shutdown API. All subscriptions of a store share one watcher.
        """
        with self._lock:
            if self._closed:
                raise StoreClosedError("the event store is closed")
            if self._watcher is None:
                self._watcher = self._start_watcher()
            subscription = Subscription(
                self._read_rows if stream_id is None else functools.partial(self._follow_stream, stream_id),
                self._hub,
                after,
                stream_id=stream_id,
                page_size=page_size,
                recheck_s=max(5.0, self._poll_interval * 4),
                on_close=self._forget,
            )
            self._subscriptions.add(subscription)
            return subscription

    def read_sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one SELECT (``?`` placeholders) on the store's reading connections, every row.

        For the small tables kept beside the log (the leases, read by every
        command's ownership check): one round trip, as the store's own reads.
        Raises StoreUnavailableError when the database cannot be read.
        """
        return self._query(sql.replace("?", self._backend.placeholder), params)

    def watching(self, timeout: float) -> bool:
        """Follow other processes' commits now (the first ``subscribe`` would start it) and wait, at most
        ``timeout`` seconds, until it does: on PostgreSQL its LISTEN connection is up and the head read.
        True once it does."""
        with self._lock:
            if self._closed:
                raise StoreClosedError("the event store is closed")
            if self._watcher is None:
                self._watcher = self._start_watcher()
            watcher = self._watcher
        return bool(watcher.ready.wait(timeout))

    @property
    def chain(self) -> Chain:
        """How this store's hashes are made and checked (keyed when opened with the chain key)."""
        return self._chain

    def verify(self, stream_id: str | None = None, *, seal: Seal | None = None) -> list[str]:
        """Check the hash chains (of one stream, or all) and the seals; [] when intact.

        Each problem names the stream, version and position: an edited event
        (hash mismatch: any column but the position), removed events (a version
        gap; on SQLite also a hole in the positions), reordered events
        (versions not increasing with position), a downgraded hash scheme.
        Checking the whole log also checks every seal recorded in it and
        ``seal`` (the line ``seal()`` returned, kept elsewhere): events cut
        from the end, and any change up to the seal's head, are caught then.
        Keyed hashes need the store opened with the chain key. Memory stays
        flat: the log is read in pages, twice (by stream, then by position).
        Raises ValueError for a seal given with a stream (a seal covers the log).
        """
        if seal is not None and stream_id is not None:
            raise ValueError("a seal covers the whole log: verify it without naming a stream")
        keyed_since = self._query("SELECT min(position) FROM events WHERE hash LIKE '3:%%'"
                                  if self.dialect == "postgresql" else
                                  "SELECT min(position) FROM events WHERE hash LIKE '3:%'")[0][0]
        checker = ChainVerifier(self._chain, keyed_since)
        last_stream, last_version = ("" if stream_id is None else stream_id), 0
        page_size = 5000
        while True:
            if stream_id is None:
                sql, params = self._sql[_VERIFY_ALL], (last_stream, last_version, page_size)
            else:
                sql, params = self._sql[_VERIFY_STREAM], (stream_id, last_version, page_size)
            rows = self._query(sql, params)
            checker.feed(rows)
            if len(rows) < page_size:
                break
            last_stream, last_version = rows[-1][0], rows[-1][1]
        if stream_id is not None:
            return checker.finish()
        return checker.finish() + self._position_gaps() + self._check_seals(seal)

    def seal(self, digest: LogDigest | None = None) -> Seal:
        """Seal the log up to its head: digest every event up to it, append a LogSealed event, return the seal.

        Keep ``str(seal)`` outside the database; ``verify(seal=...)`` checks the
        log against it. ``digest`` (from ``digest_log`` or an earlier call)
        goes on from where it stopped, reading only the rows after it: a
        server sealing every hour reads each row once, and a change to a row
        it already read is not taken into the next seal (it fails it).
        Raises as ``append`` does.
        """
        digest = self.digest_log(digest)
        sealed = Seal(digest.head, digest.events, digest.value(self._chain.version) or "")
        self.append(SEAL_STREAM, [NewEvent(SEAL_TYPE, seal_data(sealed))])
        return sealed

    def digest_log(self, digest: LogDigest | None = None) -> LogDigest:
        """The running digest of the log up to its head (going on from ``digest`` when given)."""
        digest = digest if digest is not None else LogDigest(self._chain)
        head = self.head()
        self._scan_positions(digest.feed_rows, digest.head, head)
        digest.head = max(digest.head, head)
        return digest

    def _check_seals(self, given: Seal | None) -> list[str]:
        problems: list[str] = []
        recorded = recorded_seals(self.read_stream(SEAL_STREAM), problems)
        seals = list(recorded)
        if given is not None:
            seals.append(("the seal given", given))
            problems += check_recorded(given, recorded)
        if not seals:
            return problems
        check = SealCheck(self._chain, seals)
        self._scan_positions(check.feed, 0, max(seal.head for _, seal in seals))
        return check.finish() + problems

    def _scan_positions(self, feed: Callable[[list[tuple[Any, ...]]], Any], after: int, up_to: int) -> None:
        """Hand the rows after ``after`` up to ``up_to`` (DIGEST_COLUMNS), page by page, in position order."""
        page_size = self._page_size
        while True:
            rows = self._query(self._sql[_DIGEST_ROWS], (after, up_to, page_size))
            feed(rows)
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    def _position_gaps(self) -> list[str]:
        """On SQLite, positions are 1, 2, 3, ... with no hole (one writer, no
        sequence): a hole is a removed event, even a stream's last one or a
        whole stream's, which the hash chains alone cannot show. (PostgreSQL's
        sequence leaves holes for refused appends, so there a hole proves nothing.)"""
        if self.dialect != "sqlite":
            return []
        rows = self._query(
            "SELECT e.position, (SELECT min(n.position) FROM events n WHERE n.position > e.position) "
            "FROM events e WHERE e.position < (SELECT max(position) FROM events) "
            "AND NOT EXISTS (SELECT 1 FROM events n WHERE n.position = e.position + 1) "
            "UNION ALL SELECT 0, min(position) FROM events HAVING min(position) > 1"
        )
        return [f"positions {before + 1}..{after - 1} are missing: events were removed from the log"
                for before, after in rows]

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """End subscriptions, commit queued appends, stop threads, close connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()
        if self._watcher is not None:
            self._watcher.stop()
        self._writer.close()
        close_readers = getattr(self._backend, "close_readers", None)
        if close_readers is not None:
            close_readers()
        self.database.dispose()

    # -- internals ---------------------------------------------------------

    def outage(self) -> Outage | None:
        """Why the store cannot be used now, and since when; None while it can.

        The writer failing to commit comes first (a read-only file still
        reads); else the last read that failed, until a read succeeds.
        """
        return self._writer.outage() or self._read_failure

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            rows: list[tuple[Any, ...]] = self._backend.query(sql, params)
        except StoreUnavailableError as exc:
            if self._read_failure is None:
                self._read_failure = Outage(time.time(), " ".join(str(exc).split()))
            raise
        self._read_failure = None
        return rows

    def _read_rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        return self._query(self._sql[_READ_ALL], (after, limit))

    def _follow_stream(self, stream_id: str, after: int, limit: int) -> list[tuple[Any, ...]]:
        return self._query(self._sql[_FOLLOW_STREAM], (stream_id, after, limit))

    def _read_typed(self, after: int, limit: int, types: tuple[str, ...]) -> list[tuple[Any, ...]]:
        mark = self._backend.placeholder
        sql = (f"SELECT {_COLUMNS} FROM events WHERE position > {mark} AND type IN "
               f"({', '.join([mark] * len(types))}) ORDER BY position LIMIT {mark}")
        return self._query(sql, (after, *types, limit))

    def _read_ids(self, ids: list[str]) -> list[RecordedEvent]:
        rows: list[Any] = []
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join([self._backend.placeholder] * len(chunk))
            rows += self._query(
                f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})", tuple(chunk)
            )
        rows.sort(key=lambda row: row[0])
        return decode_rows(rows)

    def _forget(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def _start_watcher(self) -> Any:
        if self.dialect == "postgresql":
            from eventstore.listen import ListenWatcher

            return ListenWatcher(self.database, self._hub, self._poll_interval,
                                 lambda: getattr(self._backend, "writer_pid", None))
        return PollingWatcher(self.head, self._hub, self._poll_interval)


def _dialect_sql(placeholder: str) -> dict[str, str]:
    statements = [_READ_ALL, _READ_STREAM, _FOLLOW_STREAM, _VERIFY_ALL, _VERIFY_STREAM, _DIGEST_ROWS]
    return {sql: sql.replace("?", placeholder) for sql in statements}


def _render_last(last: Callable[[list[int]], NewEvent], event_id: str, positions: list[int]) -> tuple[str, str, str]:
    event = last(positions)
    if event.id != event_id:
        raise ValueError(f"append(last=...) rendered an event with id {event.id!r}, not the {event_id!r} it stood for")
    return (event.type, *encode_new_event(event))


def open_store(url: str, **options: Any) -> SqlEventStore:
    """Open (and set up, idempotently) the event store at a SQLAlchemy URL.

    ``sqlite:///path/baton.db`` (embedded, WAL) or ``postgresql+psycopg://...``
    (``postgresql://`` means the same). Options: ``poll_interval`` (0.5 s,
    how often subscriptions re-check the head without a wake-up),
    ``pool_size`` (10), ``connect_timeout`` (10 s, PostgreSQL),
    ``busy_timeout_ms`` (5000, SQLite readers), ``lock_timeout_s`` (120 s:
    how long the SQLite writer waits for another process's write lock before
    raising StoreUnavailableError), ``max_backoff_s`` (5 s: the longest
    pause between two tries of an append while the database is away; the
    writer retries for as long as it is away), ``max_group_events`` (5000),
    ``page_size`` (1000), ``chain_key`` (bytes, kept outside the database:
    new events get keyed hashes, and verifying them needs it; see
    ``eventstore.chain``).
    Test-only: ``_unsafe_no_order_lock``, ``_before_commit``, ``_on_lock_wait``.

    Raises StoreUnavailableError, naming the URL (password hidden), when the
    database cannot be reached; ValueError for a URL it does not support;
    TypeError for an option it does not know.
    """
    from eventstore.database import database_for_url

    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(f"open_store() got unknown option(s): {', '.join(sorted(unknown))}")

    chain = Chain(options.get("chain_key"))
    database, safe_url = database_for_url(url, options)
    try:
        with database.connect():
            pass
        extra_ddl: list[str] = []
        if database.dialect.name == "postgresql":
            from eventstore.postgres import APPEND_FUNCTION, PostgresBackend

            extra_ddl.append(APPEND_FUNCTION)
            backend: Any = PostgresBackend(
                database,
                safe_url,
                order_lock=not options.get("_unsafe_no_order_lock", False),
                before_commit=options.get("_before_commit"),
                lock_timeout_s=options.get("lock_timeout_s", 120.0),
                chain=chain,
                max_readers=int(options.get("pool_size", 10)),
            )
        else:
            from eventstore.sqlite import SqliteBackend

            backend = SqliteBackend(
                database,
                safe_url,
                lock_timeout_s=options.get("lock_timeout_s", 120.0),
                before_commit=options.get("_before_commit"),
                on_lock_wait=options.get("_on_lock_wait"),
                chain=chain,
            )
        schema.set_up(database, extra_ddl)
        return SqlEventStore(url, database, backend, options, chain)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        database.dispose()
        raise StoreUnavailableError(f"cannot reach the event store at {safe_url}: {exc.orig}") from None
    except BaseException:
        database.dispose()
        raise
