"""Catch-up then live subscriptions by global position, and what wakes them.

Every subscription of a store waits on one ``WakeupHub``. Three things move
the hub: the store's own writer after each commit (instant, in-process), the
backend's watcher (LISTEN/NOTIFY on PostgreSQL; a head poll on SQLite, which
is how commits from *other processes* on the same file are seen), and the
watcher's periodic re-read of ``max(position)``, which covers a lost
notification or a killed LISTEN connection. Whatever woke it, a subscription
re-reads the table after its cursor: a wake-up is a hint, never data. The one
exception is the rows this process's own writer just committed: the writer
hands them to the hub (the last ``RECENT`` of them are kept), and a
subscription whose next position is among them takes them from there instead
of reading them back (positions are unique and commit in order, so the rows
from ``cursor + 1`` on without a gap are exactly what the read would return
first); anything past them, or committed by another process, is read.
100 subscribers therefore share one watcher, not 100 connections.
"""

from __future__ import annotations

import bisect
import collections
import logging
import operator
import threading
import time
from collections.abc import Callable
from typing import Any, Self

from eventstore.codec import decode_row
from eventstore.store import RecordedEvent

log = logging.getLogger(__name__)

_POSITION, _STREAM = operator.itemgetter(0), operator.itemgetter(1)  # a row's (codec.ROW_COLUMNS)

RECENT = 2048  # rows of this process's latest commits kept by the hub for its subscriptions


class WakeupHub:
    """The last known head position, and conditions to wait for it to move.

    ``pokes`` counts reasons to re-read that are not a new head (a watcher
    reconnected and may have missed something). A subscription of one
    stream waits apart: this process's own commits wake it only when they
    hold a row of its stream (a node's inbox is not woken by every step of
    every run); anything else that moves the head wakes every waiter.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # subscriptions of the whole log
        self._log_waiters = 0  # how many wait on it now: a commit notifies nobody for nothing (a Python call)
        # stream -> the conditions its subscriptions wait on now (only streams waited on)
        self._streams: dict[str, list[threading.Condition]] = {}
        self.head = 0
        self.pokes = 0
        # This process's latest committed rows (codec.ROW_COLUMNS order), ascending, and their positions.
        self._rows: list[tuple[Any, ...]] = []
        self._positions: list[int] = []

    def committed(self, rows: list[tuple[Any, ...]], position: int) -> None:
        """This process's writer committed ``rows`` (ascending), up to ``position``: keep them, wake the waiters."""
        with self._lock:
            if rows and (not self._positions or rows[0][0] > self._positions[-1]):
                self._rows.extend(rows)
                self._positions.extend(map(_POSITION, rows))  # C-level: no generator frame per row
                if len(self._positions) > 2 * RECENT:
                    del self._rows[:-RECENT], self._positions[:-RECENT]
            # Rows that do not follow the head at once leave a gap: another process
            # committed there (or, on PostgreSQL, a refused append used up positions).
            everyone = not rows or rows[0][0] != self.head + 1
            if position > self.head:
                self.head = position
            if everyone:
                self._notify_all()
                return
            if self._log_waiters:
                self._cond.notify_all()
            streams = self._streams
            if streams:
                for stream in set(map(_STREAM, rows)):
                    for cond in streams.get(stream, ()):
                        cond.notify()

    def rows_after(self, position: int, limit: int) -> list[tuple[Any, ...]]:
        """The kept rows from ``position + 1`` on, up to the first gap (at most ``limit``); [] when not kept."""
        with self._lock:
            positions = self._positions
            start = bisect.bisect_left(positions, position + 1)
            if start == len(positions) or positions[start] != position + 1:
                return []
            end = start + 1
            stop = min(len(positions), start + limit)
            while end < stop and positions[end] == positions[end - 1] + 1:
                end += 1
            return self._rows[start:end]

    def advance(self, position: int) -> None:
        """A commit up to ``position`` is visible: wake whoever waits below it."""
        if position > self.head:
            with self._lock:
                if position > self.head:
                    self.head = position
                    self._notify_all()

    def poke(self) -> None:
        """Make every subscription re-read, whatever the head says."""
        with self._lock:
            self.pokes += 1
            self._notify_all()

    def wake_all(self) -> None:
        """Let waiters re-check their own state (a subscription was closed)."""
        with self._lock:
            self._notify_all()

    def condition(self) -> threading.Condition:
        """A condition on the hub's lock, for one subscription of one stream to wait on (``wait``)."""
        return threading.Condition(self._lock)

    def wait(self, head: int, pokes: int, stop: Callable[[], bool], timeout: float,
             stream: tuple[str, threading.Condition] | None = None) -> None:
        """Block until head or pokes differ from what the caller saw, ``stop()`` or timeout.

        ``stream``: ``(stream_id, a condition() of the caller's own)``; then
        this process's commits that hold no row of that stream do not wake
        the caller (the head they moved is seen at its next wake-up).
        """
        def moved() -> bool:
            return self.head != head or self.pokes != pokes or stop()

        with self._lock:
            if stream is None:
                self._log_waiters += 1
                try:
                    self._cond.wait_for(moved, timeout)
                finally:
                    self._log_waiters -= 1
                return
            stream_id, cond = stream
            waiting = self._streams.setdefault(stream_id, [])
            waiting.append(cond)
            try:
                cond.wait_for(moved, timeout)
            finally:
                waiting.remove(cond)
                if not waiting:
                    del self._streams[stream_id]

    def _notify_all(self) -> None:
        self._cond.notify_all()
        for waiting in self._streams.values():
            for cond in waiting:
                cond.notify()


class PollingWatcher:
    """Moves the hub from a head query every ``interval`` seconds (one thread per store).

    On SQLite this is how a commit by another process reaches this one's
    subscribers; nothing is polled when the store has no subscription.
    """

    def __init__(self, read_head: Callable[[], int], hub: WakeupHub, interval: float) -> None:
        self._read_head = read_head
        self._hub = hub
        self._interval = interval
        self._stopping = threading.Event()
        self.ready = threading.Event()  # the first head read is done (or failed)
        self._thread = threading.Thread(target=self._run, name="baton-eventstore-poll",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the polling thread (returns at once: it waits on an Event)."""
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                self._hub.advance(self._read_head())
            except Exception as exc:  # keep polling: the next read may work
                log.warning("event store head poll failed: %s", exc)
            self.ready.set()
            if self._stopping.wait(self._interval):
                return


class Subscription:
    """An iterator over every event after a position: first the backlog, then live.

    Use it as an iterator (blocks until the next event; stops when closed)::

        with store.subscribe(after=cursor) as sub:
            for event in sub:
                handle(event)          # sub.position is now event.position

    or poll with a timeout, to check for shutdown between events::

        while not stopping:
            event = sub.next_event(timeout=1.0)   # None: nothing yet (or closed)
            if event is not None:
                handle(event)

    ``close()`` may be called from any thread; a blocked ``__next__`` then
    raises StopIteration and ``next_event`` returns None. Events come in
    ascending position, each exactly once; the store's ordering guarantee
    means a late-committing transaction is never skipped. One subscription is
    meant to be consumed by one thread. Reading errors (the database is gone)
    are raised to the consumer, who may resubscribe from ``position``; a row
    that cannot be decoded raises CorruptEventError (naming its position)
    when its turn comes, and again on the next call.
    """

    def __init__(
        self,
        read_rows: Callable[[int, int], list[tuple[Any, ...]]],
        hub: WakeupHub,
        after: int = 0,
        *,
        page_size: int = 500,
        recheck_s: float = 5.0,
        on_close: Callable[[Subscription], None] | None = None,
        stream_id: str | None = None,
    ) -> None:
        self._read_rows = read_rows  # rows in codec.ROW_COLUMNS order
        self._stream_id = stream_id  # read_rows reads only this stream's rows (None: every row)
        self._hub = hub
        self._wake = None if stream_id is None else (stream_id, hub.condition())
        self._page_size = page_size
        self._recheck_s = recheck_s
        self._on_close = on_close
        # Rows, decoded one by one as they are handed out (see codec.decode_rows).
        self._buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self._position = after  # last event handed out
        self._cursor = after  # last event read into the buffer
        self._must_read = True
        self._seen_head = -1
        self._seen_pokes = -1
        self._recheck_at = 0.0
        self._closed = False

    @property
    def position(self) -> int:
        """Position of the last event handed out: resume from here."""
        return self._position

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called (or the store closed)."""
        return self._closed

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> RecordedEvent:
        event = self.next_event(None)
        if event is None:
            raise StopIteration
        return event

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_event(self, timeout: float | None = None) -> RecordedEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: forever).

        Returns None when the time is up or the subscription is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if self._buffer:
                event = decode_row(self._buffer[0])  # a corrupt row stays first
                self._buffer.popleft()
                self._position = event.position
                return event
            head, pokes = self._hub.head, self._hub.pokes
            now = time.monotonic()
            if (
                self._must_read
                or pokes != self._seen_pokes
                or (head > self._cursor and head != self._seen_head)
                or now >= self._recheck_at
            ):
                kept = self._hub.rows_after(self._cursor, self._page_size)
                if kept:
                    # Committed by this process's writer: no need to read them back. The
                    # table is still read for what lies past them (and on a poke or recheck).
                    stream = self._stream_id
                    self._buffer.extend(kept if stream is None else [row for row in kept if row[1] == stream])
                    self._cursor = kept[-1][0]
                    self._must_read = self._cursor < head
                    continue
                self._seen_head, self._seen_pokes = head, pokes
                self._recheck_at = now + self._recheck_s
                page = self._read_rows(self._cursor, self._page_size)
                # A full page means more is waiting behind it: read on at once.
                self._must_read = len(page) >= self._page_size
                if page:
                    self._buffer.extend(page)
                    self._cursor = page[-1][0]
                    continue
            wait = self._recheck_at - now
            if deadline is not None:
                wait = min(wait, deadline - now)
                if wait <= 0:
                    return None
            self._hub.wait(head, pokes, lambda: self._closed, max(wait, 0.0), self._wake)
        return None

    def close(self) -> None:
        """End the subscription; safe from any thread, and more than once."""
        if self._closed:
            return
        self._closed = True
        self._hub.wake_all()
        if self._on_close is not None:
            self._on_close(self)
