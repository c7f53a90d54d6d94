"""Group commit: one writer thread commits every append waiting at that moment.

Callers from any thread hand a ``PendingAppend`` to the writer and block on
it. The writer takes the first waiting append, then every other one already
queued (up to ``max_group_events``), and commits them all in ONE transaction
on its own connection: one fsync for many appends. It never lingers waiting
for more work, so a lone caller appending in a loop pays no delay.

Each append is checked on its own inside the group (expected version,
idempotency); the backend records a per-append outcome, so one stream's
conflict fails only that caller. A database error that is not about one
append (lost connection, lock wait) is retried for the whole group; retrying
is safe because appends are idempotent by event id. An unexpected error is
confined by committing the group's appends one by one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Protocol

from eventstore.store import StoreClosedError, StoreError, StoreUnavailableError

log = logging.getLogger(__name__)


class PendingAppend:
    """One caller's append on its way through the writer, and its outcome.

    The caller fills in the encoded events; the backend fills in either
    ``positions``/``hashes``/``base_version``/``recorded_at``, or ``duplicate`` (every event id
    was already recorded in this stream), or ``error``.
    """

    __slots__ = (
        "stream_id",
        "expected",
        "ids",
        "types",
        "data",
        "metadata",
        "positions",
        "hashes",
        "base_version",
        "recorded_at",
        "duplicate",
        "error",
        "_done",
    )

    def __init__(
        self,
        stream_id: str,
        expected: int | None,
        ids: list[str],
        types: list[str],
        data: list[str],
        metadata: list[str],
    ) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.ids = ids
        self.types = types
        self.data = data
        self.metadata = metadata
        self.reset()
        # A bare lock is the cheapest one-shot signal CPython has: acquired
        # here, released by the writer, acquired again by the waiting caller.
        self._done = threading.Lock()
        self._done.acquire()

    def reset(self) -> None:
        """Forget the outcome of a failed attempt before the group is retried."""
        self.positions: list[int] = []
        self.hashes: list[str] = []
        self.base_version = 0  # the stream's version before this append
        self.recorded_at = 0.0
        self.duplicate = False
        self.error: BaseException | None = None


class WriterBackend(Protocol):
    """What the writer needs from a database backend."""

    def connect(self) -> Any:
        """A new connection for the writer's exclusive use."""

    def commit_group(self, conn: Any, group: list[PendingAppend]) -> int:
        """Commit the group in one transaction, recording each append's outcome.

        Returns the last position written (0 when nothing was). Raises only
        for errors that concern the whole group.
        """

    def is_transient(self, exc: BaseException) -> bool:
        """True when retrying the whole group later may succeed."""

    def is_broken(self, conn: Any) -> bool:
        """True when the connection must be replaced before the next attempt."""

    def close_connection(self, conn: Any) -> None:
        """Close a writer connection, ignoring errors of a broken one."""


_STOP = object()


class GroupCommitWriter:
    """The one writer thread of a store (see the module docstring).

    ``on_commit(last_position)`` is called in the writer thread after every
    commit that wrote something: the store wakes its subscribers with it.
    """

    def __init__(
        self,
        backend: WriterBackend,
        on_commit: Any,
        *,
        max_group_events: int = 5000,
        retry_s: float = 30.0,
        name: str = "baton-eventstore-writer",
    ) -> None:
        self._backend = backend
        self._on_commit = on_commit
        self._max_group_events = max_group_events
        self._retry_s = retry_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Guards _closed and the _STOP marker: nothing may be queued behind
        # _STOP, or its caller would wait for a writer that has gone.
        self._gate = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()
        self._conn: Any = backend.connect()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, pending: PendingAppend) -> PendingAppend:
        """Queue an append and block until it is durable (or failed).

        Raises the append's own error (ConcurrencyError, ...) in the caller.
        """
        with self._gate:
            if self._closed:
                raise StoreClosedError("the event store is closed")
            self._queue.put(pending)
        pending._done.acquire()
        if pending.error is not None:
            raise pending.error
        return pending

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread and close its connection."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("event store writer did not stop within %.0f s", timeout)
            self._stopping.set()

    # -- the writer thread -------------------------------------------------

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            group = [first]
            events = len(first.ids)
            while events < self._max_group_events:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                group.append(item)
                events += len(item.ids)
            try:
                self._commit(group)
            except BaseException as exc:  # never leave a caller blocked forever
                log.exception("event store writer failed on a group of %d appends", len(group))
                for pending in group:
                    if pending.error is None and not pending.positions and not pending.duplicate:
                        pending.error = StoreError(f"append failed: {exc!r}")
            finally:
                for pending in group:
                    pending._done.release()
        self._shut_down()

    def _shut_down(self) -> None:
        if self._conn is not None:
            self._backend.close_connection(self._conn)
            self._conn = None

    def _commit(self, group: list[PendingAppend]) -> None:
        deadline: float | None = None
        delay = 0.05
        while True:
            for pending in group:
                pending.reset()
            try:
                if self._conn is None:
                    self._conn = self._backend.connect()
                last = self._backend.commit_group(self._conn, group)
            except Exception as exc:
                if self._conn is not None and self._backend.is_broken(self._conn):
                    self._backend.close_connection(self._conn)
                    self._conn = None
                if isinstance(exc, StoreUnavailableError):
                    # The backend already waited as long as it was told to.
                    for pending in group:
                        pending.error = exc
                    return
                if self._backend.is_transient(exc):
                    now = time.monotonic()
                    deadline = deadline if deadline is not None else now + self._retry_s
                    if now < deadline and not self._stopping.is_set():
                        log.warning("event store append failed (%s); retrying", exc)
                        self._stopping.wait(delay)
                        delay = min(delay * 2, 1.0)
                        continue
                    error = StoreUnavailableError(
                        f"the event store could not commit for {self._retry_s:.0f} s: {exc}"
                    )
                    for pending in group:
                        pending.error = error
                    return
                if len(group) > 1:
                    # Something about one append broke the whole transaction:
                    # commit them one by one so only that append fails.
                    for pending in group:
                        self._commit([pending])
                    return
                group[0].error = StoreError(
                    f"append to stream {group[0].stream_id!r} failed: {exc}"
                )
                group[0].error.__cause__ = exc
                return
            if last:
                self._on_commit(last)
            return
