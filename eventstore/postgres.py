"""The PostgreSQL backend: one function call per group commit, and LISTEN wake-ups.

A group of appends is ONE statement, ``SELECT baton_append(...)``, run in
autocommit: the statement is its own transaction, so a group costs a single
round trip (plus the commit's WAL flush). The function, created by the schema
set-up, takes the order lock, inserts every row of the group from arrays in
input order, and NOTIFYs the new head.

The checks stay exact without reading anything in the common case. The
writer computes each append's hashes from the stream's head as it last saw
it (its own previous append, or a read); the UNIQUE (stream_id, version) and
UNIQUE (event_id) constraints then refuse the whole statement if that head
was stale, the expected version wrong, or an event id already recorded. Only
then does the writer read the heads and ids, settle each append (conflict,
retry returning the recorded events, id clash, or a stale head to retry
with), and run the rest again. Rows can be neither updated nor deleted, so a
(version, hash) seen once stays true.

Ordering (DESIGN §10): a BIGSERIAL alone lets a reader following
``position > cursor`` skip an event whose transaction commits late. The
function first takes ``LOCK TABLE events IN EXCLUSIVE MODE``: appenders from
every process queue on it, so insert order equals commit order, while
readers (ACCESS SHARE) are never blocked. ``order_lock=False`` exists only
so a test can show the skip happens without it.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg
import sqlalchemy as sa
from psycopg.types.numeric import Int8

from eventstore.chain import Chain
from eventstore.sqlite import id_clash_detail
from eventstore.store import (
    ConcurrencyError,
    EventIdConflictError,
    StoreError,
    StoreUnavailableError,
)
from eventstore.writer import PendingAppend

CHANNEL = "baton_events"


def own_connection(database: sa.Engine, application_name: str) -> psycopg.Connection:
    """A connection taken out of the pool for good, idle, in autocommit, named on the server."""
    raw = database.raw_connection()
    conn: psycopg.Connection = raw.driver_connection  # type: ignore[assignment]
    raw.detach()  # ours for good: the pool forgets it
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.autocommit = True
    conn.execute(f"SET application_name = '{application_name}'")
    return conn

APPEND_FUNCTION = f"""
CREATE OR REPLACE FUNCTION baton_append(
    p_rows json, p_recorded_at double precision, p_order_lock boolean)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_order_lock THEN
        -- Appenders queue here until the previous one COMMITS, so positions
        -- are handed out in commit order. Readers take ACCESS SHARE: not blocked.
        LOCK TABLE events IN EXCLUSIVE MODE;
    END IF;
    -- json_to_recordset yields the rows in array order, so positions follow it.
    RETURN QUERY
        INSERT INTO events (event_id, stream_id, version, type, data, metadata,
                            recorded_at, hash)
        SELECT r.i, r.s, r.v, r.t, r.d, r.m, p_recorded_at, r.h
          FROM json_to_recordset(p_rows)
               AS r(i text, s text, v bigint, t text, d text, m text, h text)
        RETURNING position;
    -- A hint only: subscribers re-read the table whatever it says. (Nothing inserted, nothing
    -- to say: the writer's warm-up call at connect inserts nothing.)
    IF FOUND THEN
        PERFORM pg_notify('{CHANNEL}', currval('events_position_seq')::text);
    END IF;
END
$fn$
"""


def _numbered(sql: str) -> bytes:
    """``sql`` with psycopg's ``%s`` placeholders as libpq's ``$1``, ``$2``, ..."""
    parts = sql.split("%s")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1)).encode()


# The rows travel as one JSON document: one parameter for psycopg to send,
# one C parser on the server, instead of escaping seven text arrays in Python.
_APPEND = "SELECT baton_append(%s::json, %s::float8, %s::boolean)"
_row_encoder = msgspec.json.Encoder()
_STREAM_HEADS = (
    "SELECT DISTINCT ON (stream_id) stream_id, version, hash FROM events"
    " WHERE stream_id = ANY(%s::text[]) ORDER BY stream_id, version DESC"
)
# A group foreseen to end at position %s, in ONE autocommit statement: the function runs to its end
# (PL/pgSQL hands its rows over only once it has returned), then each of its rows divides by zero,
# failing the statement and so rolling it back, unless the sequence's last position is the one foreseen.
# (A BEGIN / append / check / COMMIT pipeline did the same in four statements: ~100 us more of the
# client's CPU per finishing commit, docs/PERFORMANCE.md.)
# (Its position is sent as an Int8 whatever its size: psycopg picks a Python int's type by its value, and a
# statement is prepared once per set of parameter types.)
_APPEND_FORESEEN = ("SELECT p, 1 / (currval('events_position_seq') = %s)::int"
                    " FROM baton_append(%s::json, %s::float8, %s::boolean) AS p")
# The two, as a commit in autocommit runs them through libpq (``_direct``), each prepared under a name
# of its own: psycopg's cursor around an execute cost a fifth of a step's CPU on PostgreSQL
# (docs/PERFORMANCE.md, "psycopg's cursor, bypassed").
_DIRECT_APPEND = (b"baton_append_direct", _numbered(_APPEND))
_DIRECT_FORESEEN = (b"baton_append_foreseen_direct", _numbered(_APPEND_FORESEEN))
_NO_SUCH_STATEMENT = b"26000"  # invalid_sql_statement_name: not prepared on this connection (yet, or any more)
# Foresight (``PostgresBackend._foresee``): a miss costs a round trip, a hit saves one; after a miss the
# writer waits for this many groups it would have foreseen before it tries again.
_FORESIGHT_MISS = 3
_FORESIGHT_CAP = 3
_KNOWN_IDS = "SELECT event_id, stream_id FROM events WHERE event_id = ANY(%s::text[])"
# Rounds of "insert, find the stale heads, insert again" before giving up on
# a group whose streams other processes keep moving.
_MAX_ROUNDS = 20
# The writer's prepare_threshold: never reached, so only a statement executed with prepare=True is prepared.
_ONLY_MARKED = 1 << 30
# How long the writer's warm-up at open waits for the order lock before it makes do with less.
_WARM_UP_LOCK_MS = 200


class PostgresBackend:
    """The PostgreSQL half of the store: the writer's statement and the readers' connections."""

    dialect = "postgresql"
    placeholder = "%s"

    def __init__(
        self,
        database: sa.Engine,
        where: str,
        *,
        order_lock: bool = True,
        before_commit: Callable[[list[PendingAppend]], None] | None = None,
        head_cache_size: int = 50_000,
        lock_timeout_s: float = 120.0,
        chain: Chain | None = None,
        max_readers: int = 10,
    ) -> None:
        self.database = database
        self._chain = chain or Chain()
        self._lock_timeout_s = lock_timeout_s
        self._where = where
        self._order_lock = order_lock
        self._before_commit = before_commit
        self.writer_pid: int | None = None  # the server pid of the writing connection (its own NOTIFYs)
        # stream -> (version, hash) as last seen by the writer (one commit at a time)
        self._heads: collections.OrderedDict[str, tuple[int, str]] = collections.OrderedDict()
        # The position the sequence hands out next, as this writer last knew it (its warm-up, its own
        # commits), or None: what lets a rendered last event go in the same round trip (``_insert_foreseen``).
        self._next_position: int | None = None
        self._foresight = 0  # > 0: recent foreseen positions held; each miss takes off more than a hit adds
        self._head_cache_size = head_cache_size
        # stream -> (version, hash) as a read last saw it: what the writer takes instead of reading the
        # head itself when its own cache has not the stream (a run loaded by a fresh process). Written
        # by readers' threads (one dict store each), taken by the writer; a pair seen once stays true.
        self._read_heads_seen: dict[str, tuple[int, str]] = {}
        self._readers: list[psycopg.Connection] = []  # idle reading connections, the last used at the end
        self._readers_lock = threading.Lock()
        self._max_readers = max_readers
        self._reads = threading.BoundedSemaphore(3 * max_readers)  # reads at once, so connections at once
        self._closed = False

    # -- reads -------------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one SELECT on one of the store's reading connections and fetch every row.

        The backend keeps its reading connections itself, idle and in
        autocommit, last used first: a read is one round trip. (A checkout
        from the SQLAlchemy pool pinged the server first, set autocommit on
        and off, and reset the connection on return: two round trips and a
        few percent of a step's CPU.) A kept connection the server dropped
        meanwhile is replaced once, as the pool's ping did. At most
        ``3 * max_readers`` reads run at once (the pool's size and overflow
        before): more wait for one to end. Raises StoreUnavailableError when
        the server cannot be reached.
        """
        with self._reads:
            return self._query([(sql, params)])[0]

    def query_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
        """Run SELECTs one after the other on one reading connection, in one round trip (pipelined);
        each sees at least what was committed when the one before it ran. Their rows, in order."""
        with self._reads:
            return self._query(statements)

    def _query(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
        for first in (True, False):
            conn: psycopg.Connection | None = None
            kept = False
            try:
                conn, kept = self._reader(first)
                if len(statements) == 1:
                    rows = [conn.execute(*statements[0]).fetchall()]
                else:
                    # Prepared: the pipelined reads are a command's (a run's stream and the leases, at
                    # every command); the server then skips their parse and plan (~40 us of its CPU a
                    # read, docs/PERFORMANCE.md). The other reads vary more and are not.
                    with conn.pipeline():
                        cursors = [conn.execute(sql, params, prepare=True) for sql, params in statements]
                    rows = [cursor.fetchall() for cursor in cursors]
            except (psycopg.OperationalError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                if kept:
                    continue  # it may have died idle (a server restart): once more on a new one
                raise StoreUnavailableError(f"cannot read the event store at {self._where}: {exc}") from exc
            except BaseException:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                raise
            with self._readers_lock:
                if not self._closed and len(self._readers) < self._max_readers:
                    self._readers.append(conn)
                    conn = None
            if conn is not None:
                conn.close()
            return rows
        raise AssertionError("unreachable")  # pragma: no cover

    def _reader(self, may_keep: bool) -> tuple[psycopg.Connection, bool]:
        """An idle reading connection, and whether it was kept: a kept one when there is one (and
        ``may_keep``), else a new one."""
        if may_keep:
            with self._readers_lock:
                if self._readers:
                    return self._readers.pop(), True
        conn = own_connection(self.database, "baton-reader")
        conn.prepare_threshold = _ONLY_MARKED  # (as the writer's: only what ``_query`` marks is prepared)
        return conn, False

    def close_readers(self) -> None:
        """Close the kept reading connections (the store is closing); later reads close theirs after use."""
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # -- the writer (see eventstore.writer.WriterBackend) ------------------

    def connect(self) -> psycopg.Connection:
        """The writer's own connection, out of the pool, in autocommit."""
        conn = own_connection(self.database, "baton-writer")
        self.writer_pid = conn.info.backend_pid
        # The engine's connections do not prepare (``prepare_threshold=None``), and psycopg then ignores
        # ``prepare=True`` too. The writer runs the same few statements at every commit: let it prepare
        # those it marks so (and nothing else): ~50 us less per commit, of the server's CPU and of the
        # wall time, in a probe (docs/PERFORMANCE.md).
        conn.prepare_threshold = _ONLY_MARKED
        # A session holding the order lock must not freeze every writer forever (as SQLite's lock_timeout_s).
        conn.execute(f"SET lock_timeout = '{int(self._lock_timeout_s * 1000)}ms'")
        self._warm_up(conn)
        return conn

    def _warm_up(self, conn: psycopg.Connection) -> None:
        """Run the append path once at open, in a transaction rolled back, so the first real append of a
        fresh process finds it warm: the append statement prepared, the function compiled, and the
        server's first insert into the log (its indexes, the sequence, the NOTIFY) done.

        Two appends of one row each, pipelined in a transaction, the second as a finishing commit's
        (its position foreseen: ``_APPEND_FORESEEN``), under the order lock (waited for
        ``_WARM_UP_LOCK_MS`` at most: if another session holds it longer, the store opens without a
        warm-up). Nothing is left behind: the
        rows are rolled back, and the sequence, which a rollback does not restore, is set back to
        what it was before, under the same lock, so positions keep following without a hole.
        (An append refused on its own account still leaves one: holes prove nothing on PostgreSQL.)
        A fresh process's first append paid ~2 ms before any warm-up, ~1 ms after the empty call
        alone; with this its first commit costs about what the next ones do.
        """
        self._next_position = None
        try:
            # (Setting the sequence back needs UPDATE on it, which the app role of ``baton db init`` lacks.)
            may_reset = conn.execute("SELECT has_sequence_privilege('events_position_seq', 'UPDATE')").fetchone()
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute(f"SET LOCAL lock_timeout = '{_WARM_UP_LOCK_MS}ms'")
                if may_reset and may_reset[0]:
                    cur = conn.execute(_APPEND, (_row_encoder.encode([_warm_up_row(1)]).decode(), 0.0, True),
                                       prepare=True)
                    first = cur.fetchall()[0][0]
                    # (the finishing commit's statement: under the order lock, the position foreseen is right)
                    conn.execute(_APPEND_FORESEEN, (Int8(first + 1), _row_encoder.encode([_warm_up_row(2)]).decode(),
                                                    0.0, True), prepare=True)
                    conn.execute("SELECT setval('events_position_seq', %s, false)", (first,))
                    self._next_position = first
                conn.execute("ROLLBACK")
            # psycopg deallocates every prepared statement on ROLLBACK, after the next statement it runs (a
            # statement prepared now would be gone, and psycopg would not know it): let it do so, then
            # prepare the three a commit runs again, outside a transaction, with no row (no lock taken,
            # nothing inserted, no NOTIFY; what an app role's warm-up is, for want of UPDATE on the sequence).
            conn.execute("SELECT 1")
            conn.execute(_APPEND, ("[]", 0.0, False), prepare=True)  # (the pipelined commit's, in psycopg)
            _direct(conn, _DIRECT_APPEND, [b"[]", b"0.0", b"f"])
            _direct(conn, _DIRECT_FORESEEN, [b"0", b"[]", b"0.0", b"f"])
        except psycopg.OperationalError as exc:
            if not isinstance(exc, psycopg.errors.LockNotAvailable):
                raise
            # Another session sits on the order lock (even an empty insert waits for it): open without
            # the warm-up rather than wait as long as an append would (``lock_timeout_s``).
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        except psycopg.Error:  # a log set up by an older baton, whose function cannot take these calls
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    def is_transient(self, exc: BaseException) -> bool:
        """Lost connections, serialization failures and deadlocks: retry the group."""
        if isinstance(exc, sa.exc.DBAPIError):  # raised by the pool while reconnecting
            exc = exc.orig or exc
        return isinstance(
            exc,
            (psycopg.OperationalError, psycopg.errors.SerializationFailure,
             psycopg.errors.DeadlockDetected),
        )

    def is_broken(self, conn: psycopg.Connection) -> bool:
        """Whether the writer must reconnect before its next attempt."""
        return conn.closed or conn.broken

    def close_connection(self, conn: psycopg.Connection) -> None:
        """Close a writer connection, even a broken one."""
        try:
            conn.close()
        except psycopg.Error:
            pass

    def commit_group(self, conn: psycopg.Connection, group: list[PendingAppend]) -> int:
        """Insert the group in one statement; settle and retry appends it refused."""
        todo = group
        for _ in range(_MAX_ROUNDS):
            # Taken before hashing: the hash covers recorded_at, so the row gets this one.
            recorded_at = time.time()
            todo = self._plan(conn, todo, recorded_at)
            if not todo:
                return 0
            try:
                return self._insert(conn, todo, recorded_at)
            except psycopg.errors.LockNotAvailable:
                raise StoreUnavailableError(
                    f"{self._where}: waited more than {self._lock_timeout_s:.0f} s for the events table's "
                    f"order lock (another session holds it; see pg_locks)"
                ) from None
            except psycopg.errors.UniqueViolation:
                # Someone's head was stale, version wrong, or ids already in:
                # find out whose, and run the others again with fresh heads.
                self._next_position = None  # the refused statement took positions
                for pending in todo:
                    self._heads.pop(pending.stream_id, None)
                todo = self._without_known_ids(conn, todo)
                self._read_heads(conn, list({pending.stream_id for pending in todo}))
        for pending in todo:
            pending.error = StoreError(
                f"stream {pending.stream_id!r}: other writers kept moving the stream; "
                f"gave up after {_MAX_ROUNDS} attempts"
            )
        return 0

    def saw_head(self, stream: str, version: int, hash_: str) -> None:
        """A read found ``stream`` at ``version`` (its last event's hash): the writer may start from it."""
        seen = self._read_heads_seen
        if len(seen) >= 1000:  # hints nobody took (streams read, never appended to): forget them
            seen.clear()
        seen[stream] = (version, hash_)

    def _plan(
        self, conn: psycopg.Connection, todo: list[PendingAppend], recorded_at: float
    ) -> list[PendingAppend]:
        """Give each append its base (version, hash) and hashes; settle clear conflicts."""
        heads = self._heads
        if self._read_heads_seen:
            for pending in todo:
                seen = self._read_heads_seen.pop(pending.stream_id, None)
                cached = heads.get(pending.stream_id)
                if seen is not None and (cached is None or cached[0] < seen[0]):
                    self._remember(pending.stream_id, *seen)
        unknown = [p.stream_id for p in todo if _needs_head(p, heads.get(p.stream_id))]
        if unknown:
            self._read_heads(conn, unknown)
        ready: list[PendingAppend] = []
        conflicts: list[tuple[PendingAppend, int]] = []
        chained: dict[str, tuple[int, str]] = {}  # heads after earlier appends of this group
        for pending in todo:
            stream = pending.stream_id
            version, previous = chained.get(stream) or heads.get(stream, (0, ""))
            if pending.expected is not None and pending.expected != version:
                conflicts.append((pending, version))
                continue
            pending.base_version = version
            hashes = pending.hashes = []
            chain_hash, at = self._chain.hash, version
            for event_id, type_, data, metadata in zip(
                pending.ids, pending.types, pending.data, pending.metadata
            ):
                at += 1
                previous = chain_hash(previous, event_id, stream, at, type_, data, metadata, recorded_at)
                hashes.append(previous)
            chained[stream] = (version + len(hashes), previous)
            ready.append(pending)
        if conflicts:
            # A retry of an append that did commit is not a conflict: check ids first.
            actual = {id(pending): version for pending, version in conflicts}
            for pending in self._without_known_ids(conn, [p for p, _ in conflicts]):
                assert pending.expected is not None  # only an append that expected a version conflicts
                pending.error = ConcurrencyError(
                    pending.stream_id, pending.expected, actual[id(pending)]
                )
        return ready

    def _insert(self, conn: psycopg.Connection, todo: list[PendingAppend], recorded_at: float) -> int:
        rows: list[dict[str, Any]] = []  # every row but the last of an append whose last is rendered
        spans: list[tuple[int, int]] = []  # each append's (first row, rows) in ``rows``
        late = [pending for pending in todo if pending.last is not None]
        for pending in todo:
            stream, version = pending.stream_id, pending.base_version
            count = len(pending.ids) - (pending.last is not None)
            spans.append((len(rows), count))
            for event_id, type_, data, metadata, hash_ in zip(
                pending.ids[:count], pending.types, pending.data, pending.metadata, pending.hashes
            ):
                version += 1
                rows.append({"i": event_id, "s": stream, "v": version, "t": type_,
                             "d": data, "m": metadata, "h": hash_})
        # (Only for streams whose head the writer knew: an append to a stream it did not, expecting version
        # 0, may be a retry of a recorded one, and a retry renders nothing.)
        if late and self._before_commit is None and self._next_position is not None and self._foresight >= 0 \
                and all(pending.stream_id in self._heads for pending in late):
            done = self._insert_foreseen(conn, todo, recorded_at, self._next_position)
            if done is not None:
                return done
        lasts: list[tuple[Any, ...]] = []
        if not late and self._before_commit is None:
            positions = _direct(conn, _DIRECT_APPEND, self._direct_params(rows, recorded_at))
        elif self._before_commit is None:
            # Last events rendered from the positions of the rows before them (the sequence hands
            # them out as they are inserted): those rows, then those events, in one transaction of
            # two round trips (pipelined: BEGIN with the rows; the events with COMMIT). The writer
            # never groups a stream's append after one of these: the stream's positions follow its
            # versions.
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    positions = conn.execute(_APPEND, self._params(rows, recorded_at), prepare=True).fetchall()
                    cur = conn.execute(_APPEND, self._params(self._last_rows(todo, spans, positions, recorded_at),
                                                             recorded_at), prepare=True)
                    conn.execute("COMMIT")
                lasts = cur.fetchall()
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
        else:
            # The test hook's way: the same statements inside an explicit transaction, so that the
            # hook can hold it open (with the order lock) before COMMIT.
            conn.execute("BEGIN")
            try:
                positions = conn.execute(_APPEND, self._params(rows, recorded_at), prepare=True).fetchall()
                if late:
                    lasts = conn.execute(_APPEND, self._params(self._last_rows(todo, spans, positions, recorded_at),
                                                               recorded_at), prepare=True).fetchall()
                self._before_commit(todo)
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        rendered = iter(lasts)
        for pending, (first, count) in zip(todo, spans):
            settled = [row[0] for row in positions[first : first + count]]
            if pending.last is not None:
                settled.append(next(rendered)[0])
            pending.record(settled, recorded_at)
            self._remember(pending.stream_id, pending.base_version + len(pending.ids), pending.hashes[-1])
        if self._next_position is not None and positions:  # would they have been foreseen? (counted, no cost)
            self._foresee(positions[0][0])
        top = max(positions[-1][0] if positions else 0, lasts[-1][0] if lasts else 0)
        self._next_position = top + 1 if top else self._next_position
        return top

    def _insert_foreseen(self, conn: psycopg.Connection, todo: list[PendingAppend], recorded_at: float,
                         first: int) -> int | None:
        """The group in ONE round trip, its last events rendered from the positions the sequence is
        foreseen to give the rows before them: ``first`` on, one by one in the group's order.

        The rows go in one statement under the order lock, so they get consecutive positions from the
        sequence's next one on, which is ``first`` or later (``first`` was the next position after a
        commit of this writer; other sessions only move the sequence forward). So the last row's
        position is ``first + rows - 1`` exactly when every row got its foreseen one; the check on the
        function's rows, in the same autocommit statement (``_APPEND_FORESEEN``), divides by zero
        otherwise, and the statement rolls back (leaving a hole, as a refused append does); the caller
        then renders from the real positions in two round trips (``_insert``'s pipeline), as it would
        have without foresight. A miss
        (another process committed in between) costs one round trip; each one makes the next
        attempts wait for more hits (``_foresee``). A render is a pure function of the positions: one
        made for a miss is made again from the real ones, and one made for a group the server then
        refuses (a stale head) is forgotten with it.
        """
        rows: list[dict[str, Any]] = []
        at = first
        for pending in todo:
            stream, version = pending.stream_id, pending.base_version
            n = len(pending.ids)
            if pending.last is not None:
                pending.render_last(list(range(at, at + n - 1)))
                pending.hashes[-1] = self._chain.hash(
                    pending.hashes[-2], pending.ids[-1], stream, version + n, pending.types[-1], pending.data[-1],
                    pending.metadata[-1], recorded_at)
            for event_id, type_, data, metadata, hash_ in zip(
                pending.ids, pending.types, pending.data, pending.metadata, pending.hashes
            ):
                version += 1
                rows.append({"i": event_id, "s": stream, "v": version, "t": type_,
                             "d": data, "m": metadata, "h": hash_})
            at += n
        try:
            positions = _direct(conn, _DIRECT_FORESEEN, [str(at - 1).encode(), *self._direct_params(rows, recorded_at)])
        except psycopg.errors.DivisionByZero:  # not the positions foreseen: rolled back, nothing recorded
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            self._foresee(None)
            self._next_position = None
            return None
        except BaseException:
            self._next_position = None  # a refused statement may have taken positions
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
        self._foresee(first)
        start = 0
        for pending in todo:
            n = len(pending.ids)
            pending.record([row[0] for row in positions[start : start + n]], recorded_at)
            start += n
            self._remember(pending.stream_id, pending.base_version + n, pending.hashes[-1])
        self._next_position = at
        return at - 1

    def _foresee(self, first: int | None) -> None:
        """Count a group whose first position was foreseen (``first`` is ``_next_position``) or not."""
        if first is not None and first == self._next_position:
            self._foresight = min(self._foresight + 1, _FORESIGHT_CAP)
        else:
            self._foresight -= _FORESIGHT_MISS

    def _last_rows(self, todo: list[PendingAppend], spans: list[tuple[int, int]], positions: list[tuple[Any, ...]],
                   recorded_at: float) -> list[dict[str, Any]]:
        """The rendered last event of each append that has one, from the positions its other rows got."""
        return [self._last_row(pending, [row[0] for row in positions[first : first + count]], recorded_at)
                for pending, (first, count) in zip(todo, spans) if pending.last is not None]

    def _params(self, rows: list[dict[str, Any]], recorded_at: float) -> tuple[str, float, bool]:
        return _row_encoder.encode(rows).decode(), recorded_at, self._order_lock

    def _direct_params(self, rows: list[dict[str, Any]], recorded_at: float) -> list[bytes]:
        """``_params`` as libpq takes them (``_direct``): text, in bytes."""
        return [_row_encoder.encode(rows), repr(recorded_at).encode(), b"t" if self._order_lock else b"f"]

    def _last_row(self, late: PendingAppend, before: list[int], recorded_at: float) -> dict[str, Any]:
        """Render ``late``'s last event from the positions its other events just got; its row, hashed."""
        n = len(late.ids)
        late.render_last(before)
        version = late.base_version + n
        type_, data, metadata = late.types[-1], late.data[-1], late.metadata[-1]
        late.hashes[-1] = self._chain.hash(late.hashes[-2], late.ids[-1], late.stream_id, version, type_, data,
                                           metadata, recorded_at)
        return {"i": late.ids[-1], "s": late.stream_id, "v": version, "t": type_, "d": data, "m": metadata,
                "h": late.hashes[-1]}

    def _without_known_ids(
        self, conn: psycopg.Connection, todo: list[PendingAppend]
    ) -> list[PendingAppend]:
        """Settle appends whose ids are already recorded (a retry, or a clash); return the rest."""
        all_ids = [event_id for pending in todo for event_id in pending.ids]
        known: dict[str, str] = dict(conn.execute(_KNOWN_IDS, (all_ids,)).fetchall())
        rest = []
        for pending in todo:
            pending.reset()
            found = [known[event_id] for event_id in pending.ids if event_id in known]
            if not found:
                rest.append(pending)
                continue
            here = sum(1 for stream in found if stream == pending.stream_id)
            if here == len(found) == len(pending.ids):
                pending.duplicate = True
            else:
                pending.error = EventIdConflictError(
                    pending.stream_id, id_clash_detail(len(pending.ids), len(found), here)
                )
        return rest

    def _read_heads(self, conn: psycopg.Connection, streams: list[str]) -> None:
        found = {row[0]: (row[1], row[2]) for row in conn.execute(_STREAM_HEADS, (streams,))}
        for stream in streams:
            self._remember(stream, *found.get(stream, (0, "")))

    def _remember(self, stream: str, version: int, hash_: str) -> None:
        heads = self._heads
        heads[stream] = (version, hash_)
        heads.move_to_end(stream)
        if len(heads) > self._head_cache_size:
            heads.popitem(last=False)


def _warm_up_row(version: int) -> dict[str, Any]:
    """A row for the writer's warm-up (``PostgresBackend._warm_up``), which rolls it back."""
    return {"i": f"baton-warm-up-{uuid.uuid4().hex}", "s": "baton-warm-up", "v": version, "t": "WarmUp",
            "d": "{}", "m": "{}", "h": ""}


def _needs_head(pending: PendingAppend, cached: tuple[int, str] | None) -> bool:
    """Whether the writer must read a stream's head before hashing this append.

    A cached head is a version the stream really had; versions only grow.
    """
    if pending.expected is None:
        return cached is None
    if pending.expected == 0:
        return False  # (0, "") if new; a cached version > 0 is already a conflict
    return cached is None or cached[0] < pending.expected


def _direct(conn: psycopg.Connection, statement: tuple[bytes, bytes], params: list[bytes]) -> list[tuple[int]]:
    """Run ``statement`` (its name, its SQL) in autocommit through libpq, which lets other threads run
    while it waits: the first column of its rows, as ints. It is prepared on first use on a connection,
    and again when it is gone (psycopg deallocates every statement after a ROLLBACK). Raises what
    psycopg would: the error of the server's SQLSTATE, or OperationalError when the connection is lost."""
    pgconn = conn.pgconn
    name, sql = statement
    for retry in (True, False):
        result = pgconn.exec_prepared(name, params)
        if result.status == psycopg.pq.ExecStatus.TUPLES_OK:
            return [(int(result.get_value(row, 0) or 0),) for row in range(result.ntuples)]
        if retry and result.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == _NO_SUCH_STATEMENT:
            result = pgconn.prepare(name, sql)
            if result.status == psycopg.pq.ExecStatus.COMMAND_OK:
                continue
        break
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        lost = pgconn.error_message.decode(errors="replace").strip()
        raise psycopg.OperationalError(f"the connection was lost: {lost}")
    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
