"""The SQLite backend: pragmas, the writer's transaction, and pooled reads.

SQLite has one writer at a time per file. The store's single writer thread
takes the file's write lock with ``BEGIN IMMEDIATE`` (so a transaction never
has to upgrade a read lock, the source of unretryable SQLITE_BUSY), assigns
positions itself while holding it — so positions increase in commit order by
construction — and commits the whole group with one fsync.

``synchronous=FULL`` in WAL mode: a commit that returned survives a kill -9
and a power cut. Another process holding the write lock is waited for (in
short busy-timeout slices, up to ``lock_timeout_s``), so "database is locked"
never reaches a caller.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from eventstore.chain import Chain
from eventstore.store import (
    ConcurrencyError,
    EventIdConflictError,
    StoreUnavailableError,
)
from eventstore.writer import PendingAppend

# How long one BEGIN IMMEDIATE waits inside SQLite before the writer gets
# control back (to call the lock-wait hook and check its own deadline).
_WRITER_BUSY_SLICE_MS = 100
# SQLite's default cap on bound variables is 32766 (999 before 3.32).
_IN_CHUNK = 900

# The columns in codec.ROW_COLUMNS order: the rows inserted are the rows the store hands its subscribers.
_INSERT = (
    "INSERT INTO events (position, stream_id, version, type, data, metadata, recorded_at, hash, event_id)"
    " VALUES "
)
_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
# An append of at most this many events is inserted by ONE statement (900 bound values, under
# SQLite's oldest cap of 999), which inserts all its rows or, on a recorded id, none of them.
_ROWS_PER_INSERT = 100
_flatten = itertools.chain.from_iterable
# Stream heads the writer keeps (``SqliteBackend._heads``): past this many, it forgets them all.
_HEADS_KEPT = 10_000
_STREAM_HEAD = "SELECT version, hash FROM events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
_MAX_POSITION = "SELECT coalesce(max(position), 0) FROM events"


def configure_database(database: sa.Engine, busy_timeout_ms: int) -> None:
    """Apply the store's pragmas to every connection the database's pool opens."""

    @sa.event.listens_for(database, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # WAL lets readers run while the writer commits; it is a property of
        # the file, so setting it again is free.
        dbapi_conn.execute("PRAGMA journal_mode = WAL")
        dbapi_conn.execute("PRAGMA synchronous = FULL")


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


# Primary result codes of a file that cannot be written now, whatever is appended:
# SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN.
_CANNOT_WRITE = {8, 10, 13, 14}


def _cannot_write(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _CANNOT_WRITE


class SqliteBackend:
    """The SQLite half of the store: the writer's transaction and the readers' connections."""

    dialect = "sqlite"
    placeholder = "?"

    def __init__(
        self,
        database: sa.Engine,
        where: str,
        *,
        lock_timeout_s: float = 120.0,
        before_commit: Callable[[list[PendingAppend]], None] | None = None,
        on_lock_wait: Callable[[], None] | None = None,
        chain: Chain | None = None,
    ) -> None:
        self.database = database
        self._chain = chain or Chain()
        self._where = where
        self._lock_timeout_s = lock_timeout_s
        self._before_commit = before_commit
        self._on_lock_wait = on_lock_wait
        # The (version, hash) of the streams this writer appended to, as it left them, and the log's
        # last position then (``commit_group``): they hold while no one else has appended since.
        self._heads: dict[str, tuple[int, str]] = {}
        self._log_head = -1

    # -- reads -------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A pooled connection for reads; each SELECT is its own snapshot."""
        raw = self.database.raw_connection()
        try:
            yield raw.driver_connection  # type: ignore[misc]
        finally:
            raw.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one SELECT on a pooled connection and fetch every row.

        Raises StoreUnavailableError when the file cannot be read.
        """
        return self.query_many([(sql, params)])[0]

    def query_many(self, statements: list[tuple[str, tuple[Any, ...]]]) -> list[list[tuple[Any, ...]]]:
        """Run SELECTs one after the other on one pooled connection (each its own snapshot); their rows."""
        deadline = time.monotonic() + self._lock_timeout_s
        while True:
            try:
                with self.reading() as conn:
                    return [conn.execute(sql, params).fetchall() for sql, params in statements]
            except (sqlite3.OperationalError, sa.exc.OperationalError) as exc:
                # A WAL reader is rarely blocked (recovery, a forced checkpoint),
                # and then only briefly: keep "database is locked" from callers.
                if _is_busy(exc) and time.monotonic() < deadline:
                    continue
                raise StoreUnavailableError(
                    f"cannot read the event store at {self._where}: {exc}"
                ) from exc

    # -- the writer (see eventstore.writer.WriterBackend) ------------------

    def connect(self) -> sqlite3.Connection:
        """The writer's own connection, out of the pool, in manual-transaction mode."""
        raw = self.database.raw_connection()
        conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        raw.detach()  # ours for good: the pool forgets it
        conn.isolation_level = None  # we say BEGIN IMMEDIATE / COMMIT ourselves
        conn.execute(f"PRAGMA busy_timeout = {_WRITER_BUSY_SLICE_MS}")
        return conn

    def is_transient(self, exc: BaseException) -> bool:
        """A busy file, or one that cannot be written for now: retry the group.

        BEGIN IMMEDIATE waits for a busy file on its own first. A file made
        read-only (or immutable), a full disk or an I/O error fails every append
        alike until someone fixes the file; SQLite rolls the transaction back,
        so the group is retried as it was for as long as that lasts.
        """
        return _is_busy(exc) or _cannot_write(exc)

    def is_broken(self, conn: Any) -> bool:
        """A SQLite connection does not break; it is never replaced."""
        return False

    def close_connection(self, conn: sqlite3.Connection) -> None:
        """Close the writer's connection."""
        try:
            conn.close()
        except sqlite3.Error:
            pass

    def commit_group(self, conn: sqlite3.Connection, group: list[PendingAppend]) -> int:
        """Check and insert every append of the group in one IMMEDIATE transaction."""
        cur = conn.cursor()
        self._begin_immediate(cur)
        try:
            head = cur.execute(_MAX_POSITION).fetchone()[0]
            if head != self._log_head or len(self._heads) > _HEADS_KEPT:
                # Another connection appended since this writer's last commit (positions only grow,
                # rows are never removed): the heads it left may have moved.
                self._heads.clear()
            recorded_at = time.time()
            last = 0
            for pending in group:
                stream_head = self._admit(cur, pending)
                if stream_head is not None:
                    head = self._insert(cur, pending, stream_head, head, recorded_at)
                    if pending.positions:
                        last = head
            if self._before_commit is not None:
                self._before_commit(group)
            cur.execute("COMMIT")
        except BaseException:
            self._log_head = -1  # the heads kept may be of rows rolled back: the next commit forgets them
            try:
                cur.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self._log_head = head
        return last

    def _begin_immediate(self, cur: sqlite3.Cursor) -> None:
        deadline: float | None = None
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self._lock_timeout_s
                if self._on_lock_wait is not None:
                    self._on_lock_wait()
                if now >= deadline:
                    raise StoreUnavailableError(
                        f"{self._where}: another connection has held the SQLite write "
                        f"lock for more than {self._lock_timeout_s:.0f} s"
                    ) from None

    def _admit(self, cur: sqlite3.Cursor, pending: PendingAppend) -> tuple[int, str] | None:
        """The stream's (version, hash) when the append may be inserted; else None, with
        the reason recorded on it (a retry, an id clash, a version conflict).

        The append's ids are looked up only when it cannot be inserted as it is: its expected
        version is not the stream's (a retry of an append that did commit is not a conflict),
        or its insert meets a recorded id (``_insert``); and before inserting an append too large
        for one statement. Looking them up before every append cost a SELECT per commit
        (~100 opcodes of a W1 step's ~6,100, and SQLite's index probe), while a recorded id is
        rare: a retry after a lost outcome, or a clash. The stream's head is read only when the
        writer did not leave it so itself (``_heads``): a run's stream is appended to step after step.
        """
        if len(pending.ids) > _ROWS_PER_INSERT and self._settle_known_ids(cur, pending):
            return None
        stream_head = self._heads.get(pending.stream_id)
        if stream_head is None:
            row = cur.execute(_STREAM_HEAD, (pending.stream_id,)).fetchone()
            stream_head = (row[0], row[1]) if row else (0, "")
        if pending.expected is not None and stream_head[0] != pending.expected:
            if not self._settle_known_ids(cur, pending):
                pending.error = ConcurrencyError(pending.stream_id, pending.expected, stream_head[0])
            return None
        return stream_head

    def _settle_known_ids(self, cur: sqlite3.Cursor, pending: PendingAppend) -> bool:
        """Whether some of the append's ids are recorded; then it is settled: a retry (``duplicate``:
        every id recorded, in its stream) or an EventIdConflictError."""
        ids = pending.ids
        known: list[str] = []
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            known += [
                row[0]
                for row in cur.execute(
                    f"SELECT stream_id FROM events WHERE event_id IN ({marks})", chunk
                )
            ]
        if not known:
            return False
        here = sum(1 for stream in known if stream == pending.stream_id)
        if here == len(ids) == len(known):
            pending.duplicate = True
        else:
            pending.error = EventIdConflictError(
                pending.stream_id, id_clash_detail(len(ids), len(known), here)
            )
        return True

    def _insert(
        self,
        cur: sqlite3.Cursor,
        pending: PendingAppend,
        stream_head: tuple[int, str],
        head: int,
        recorded_at: float,
    ) -> int:
        """Insert the append's rows after position ``head``; the new head (``head`` when one of
        its ids proved recorded: then the append is settled as ``_settle_known_ids`` says)."""
        base_version, previous = stream_head
        stream_id = pending.stream_id
        count = len(pending.ids)
        rows = []
        hashes = []
        chain_hash = self._chain.hash
        if pending.last is not None:  # positions are ours to give: the last event sees the others'
            pending.render_last(list(range(head + 1, head + count)))
        for position, version, event_id, type_, data, metadata in zip(
            itertools.count(head + 1), itertools.count(base_version + 1), pending.ids, pending.types, pending.data,
            pending.metadata,
        ):
            previous = chain_hash(previous, event_id, stream_id, version, type_, data, metadata, recorded_at)
            hashes.append(previous)
            rows.append((position, stream_id, version, type_, data, metadata, recorded_at, previous, event_id))
        try:
            if count <= _ROWS_PER_INSERT:
                cur.execute(_insert_sql(count), tuple(_flatten(rows)))
            else:  # its ids were looked up before (``_admit``): none is recorded
                for start in range(0, count, _ROWS_PER_INSERT):
                    chunk = rows[start : start + _ROWS_PER_INSERT]
                    cur.execute(_insert_sql(len(chunk)), tuple(_flatten(chunk)))
        except sqlite3.IntegrityError:  # the one statement inserted nothing
            if count > _ROWS_PER_INSERT or not self._settle_known_ids(cur, pending):
                raise
            return head
        self._heads[stream_id] = (base_version + count, previous)
        pending.hashes = hashes
        pending.rows = rows
        pending.base_version = base_version
        pending.positions = list(range(head + 1, head + count + 1))
        pending.recorded_at = recorded_at
        return head + count


@functools.cache
def _insert_sql(rows: int) -> str:
    """The INSERT of ``rows`` rows in one statement."""
    return _INSERT + ", ".join([_ROW_MARKS] * rows)


def id_clash_detail(total: int, known: int, in_stream: int) -> str:
    """Why an append whose event ids are partly recorded is refused, in words."""
    if known == total and in_stream < total:
        return (
            f"its {total} event id(s) are already recorded, {total - in_stream} of them "
            f"in another stream"
        )
    return (
        f"{known} of its {total} event id(s) are already recorded: a retry must resend "
        f"exactly the events of the first attempt"
    )
