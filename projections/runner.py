"""The projector: follows the store from its checkpoint and keeps the read tables.

    projector = Projector(store).start()      # rebuilds first if the version changed
    position = engine.approve(...)            # a command returns its event's position
    projector.wait_for(position, timeout=5)   # then a query sees its effect

Each batch of events is applied to the rows in memory and written, with the
checkpoint, in one transaction (see ``projections.batch``), so a crash at any
point leaves either the whole batch or none of it. ``rebuild`` replays the
log from position 0 in large batches; it writes exactly what the live
projector writes, because both run the same code over the same events.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import sqlalchemy as sa

from eventstore import RecordedEvent, SqlStore, StoreClosedError
from projections.applier import Applier
from projections.batch import CheckpointMoved, is_lock_wait
from projections.queries import ReadModel
from projections.source import from_recorded
from projections.tables import PROJECTION_VERSION

log = logging.getLogger(__name__)

DEFAULT_NAME = "baton"


@dataclass(frozen=True)
class RebuildStats:
    """What a rebuild did: events read, the position reached, seconds taken."""

    events: int
    position: int
    seconds: float

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def rebuild(store: SqlStore, *, name: str = DEFAULT_NAME, version: int = PROJECTION_VERSION,
            chunk: int = 2500) -> RebuildStats:
    """Drop and recreate the read tables, then replay the whole log synchronously.

    This is ``baton projections rebuild``. A live projector (in this or
    another process) cooperates: whichever commits a batch first wins it,
    the other resumes from there.
    """
    began = time.perf_counter()
    applier = Applier(store.database, name, version)
    # A replay allocates millions of short-lived objects and no reference
    # cycles; the cyclic collector would only rescan the rows in memory.
    collecting = gc.isenabled()
    gc.disable()
    try:
        events = applier.catch_up(store, chunk, reset=True)
    finally:
        if collecting:
            gc.enable()
    return RebuildStats(events, applier.checkpoint.position, time.perf_counter() - began)


class Projector:
    """A daemon thread following the store and keeping the read tables current.

    ``start()`` resets the tables when they were built by another
    ``version`` (or never), then catches up and follows live. A database
    error (a lock held too long, a lost connection) is logged, kept in
    ``last_error`` and retried from the checkpoint; it never ends the thread.
    An event that cannot be applied is skipped and recorded instead
    (``problems()``; see ``projections.applier``): retrying it could only
    fail again, and every event after it would wait behind it for good.
    """

    def __init__(self, store: SqlStore, *, name: str = DEFAULT_NAME, version: int = PROJECTION_VERSION,
                 batch_size: int = 500, catch_up_chunk: int = 2500,
                 _before_commit: Callable[[sa.Connection], None] | None = None) -> None:
        self.store = store
        self.name = name
        self.version = version
        self.batch_size = batch_size
        self.catch_up_chunk = catch_up_chunk
        self.last_error: str | None = None
        self._applier = Applier(store.database, name, version, _before_commit)
        self._cond = threading.Condition()
        self._position = 0
        # Waits of the event loop (wait_for_async): (position, future, its loop); resolved by _publish.
        self._waiters: list[tuple[int, asyncio.Future[bool], asyncio.AbstractEventLoop]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: Any = None
        self._lock = threading.Lock()
        self.rebuilt_on_start = False

    @property
    def position(self) -> int:
        """The last global position whose effect is committed in the read tables."""
        return self._position

    @property
    def running(self) -> bool:
        """Whether the following thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Check the version (resetting stale tables at once), then follow in a thread. Returns self."""
        if self.running:
            return self
        self.rebuilt_on_start = self._applier.prepare()
        self._publish(self._applier.checkpoint.position)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._follow, name=f"baton-projector-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop following (a batch under way commits or rolls back first)."""
        with self._lock:  # see _subscribe: no subscription is opened after this
            self._stopping.set()
            subscription = self._subscription
        if subscription is not None:
            subscription.close()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def problems(self, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """The newest events this projection skipped because it could not apply them, and how many
        there are in all: ``({position, run_id, event_type, error}, ...), total``."""
        return ReadModel(self.store.database).projection_problems(limit)

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until the tables reflect every event up to ``position``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._position >= position, timeout)

    async def wait_for_async(self, position: int, timeout: float = 5.0) -> bool:
        """``wait_for`` for the event loop: waits without holding a thread; False on timeout.

        A wait in a worker thread would hold one thread of a small shared pool
        for its whole timeout (a dozen far-ahead ``?min_position`` reads made
        health take seconds); here the projector's thread resolves a future.
        """
        if self._position >= position:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        waiter = (position, future, loop)
        with self._cond:
            if self._position >= position:
                return True
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return self._position >= position
        finally:
            with self._cond:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def rebuild(self) -> RebuildStats:
        """Stop following, rebuild the tables from position 0, and follow again."""
        was_running = self.running
        self.stop()
        stats = rebuild(self.store, name=self.name, version=self.version, chunk=self.catch_up_chunk)
        self._applier.reload()
        self._publish(self._applier.checkpoint.position)
        if was_running:
            self.start()
        return stats

    # -- the thread -------------------------------------------------------------------------

    def _publish(self, position: int) -> None:
        with self._cond:
            self._position = position
            self._cond.notify_all()
            if not self._waiters:
                return
            ready = [w for w in self._waiters if w[0] <= position]
            self._waiters = [w for w in self._waiters if w[0] > position]
        for _, future, loop in ready:
            try:
                loop.call_soon_threadsafe(_reached, future)
            except RuntimeError:  # its loop is closed: nobody waits any more
                pass

    def _follow(self) -> None:
        applier = self._applier
        delay = 0.0
        while not self._stopping.is_set():
            try:
                if self._subscription is not None and self._subscription.closed:
                    self._drop_subscription()  # closed under us (the store closing): see below
                if self._subscription is None:
                    applier.catch_up(self.store, self.catch_up_chunk, self._stopping.is_set)
                    self.last_error = None  # before publishing: a waiter woken by it sees it cleared
                    self._publish(applier.checkpoint.position)
                    if not self._subscribe(applier.checkpoint.position):
                        break
                records = self._take(self._subscription)
                if records:
                    position = applier.apply(from_recorded(records)).position
                    self.last_error = None
                    self._publish(position)
                delay = 0.0
                self.last_error = None
            except StoreClosedError:  # from subscribe: the store was closed before this projector
                return
            except Exception as exc:
                moved = isinstance(exc, CheckpointMoved)
                if not moved:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("projector %r: %s; retrying from the checkpoint", self.name,
                                self.last_error, exc_info=not is_lock_wait(exc))
                self._drop_subscription()
                if self._stopping.wait(delay):
                    return
                delay = 0.0 if moved else min(max(delay * 2, 0.05), 5.0)
                try:
                    applier.reload()
                    self._publish(applier.checkpoint.position)
                except Exception as again:  # the database may still be away: try again later
                    self.last_error = f"{type(again).__name__}: {again}"
        self._drop_subscription()

    def _take(self, subscription: Any) -> list[RecordedEvent]:
        """Wait for one event, then take whatever else is already there, up to a batch."""
        first = subscription.next_event(timeout=1.0)
        if first is None:
            return []
        records = [first]
        while len(records) < self.batch_size:
            more = subscription.next_event(timeout=0)
            if more is None:
                break
            records.append(more)
        return records

    def _subscribe(self, after: int) -> bool:
        subscription = self.store.subscribe(after=after)
        with self._lock:
            if self._stopping.is_set():
                subscription.close()
                return False
            self._subscription = subscription
            return True

    def _drop_subscription(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()



def _reached(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)
