"""PostgreSQL wake-ups: one LISTEN connection per store, for every subscription.

NOTIFY is a hint, never data (DESIGN §10): each wake-up by another
session's NOTIFY, and every ``interval`` seconds of silence, the watcher
re-reads ``max(position)`` and moves the store's WakeupHub; subscriptions
then re-read the table. A NOTIFY sent by this store's own writer is only
consumed: the writer handed the hub those rows as it committed them, and a
head query per own commit cost a round trip on the LISTEN thread per step
(14% of a sequential step's CPU). A lost notification costs at most one
interval; a killed connection
(``pg_terminate_backend``) is replaced, and every subscription re-reads once
the new one listens, in case something committed in between.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

from eventstore.postgres import CHANNEL, own_connection
from eventstore.subscription import WakeupHub

log = logging.getLogger(__name__)

_HEAD = "SELECT coalesce(max(position), 0) FROM events"


def _head(conn: psycopg.Connection) -> int:
    row = conn.execute(_HEAD).fetchone()
    assert row is not None  # an aggregate always gives one row
    return int(row[0])


class ListenThread:
    """A thread that keeps a LISTEN connection open until stopped: a lost connection is logged and made again.

    Subclasses say how to connect (``_connect``: a connection already
    listening) and what to do with it (``_follow``: return when
    ``_wake_r`` is readable, which ``stop`` makes it).
    """

    what = "event store"  # in the log line of a lost connection

    def __init__(self, name: str) -> None:
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def stop(self) -> None:
        """Stop at once (the thread's select also watches a wake-up pipe)."""
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _connect(self) -> psycopg.Connection:
        raise NotImplementedError

    def _failed(self) -> None:
        """A try to connect and follow failed (it is tried again)."""

    def _follow(self, conn: psycopg.Connection) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        delay = 0.05
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._connect()
                delay = 0.05
                self._follow(conn)
            except Exception as exc:  # logged and retried: whoever waits on it must keep waking
                self._failed()
                if not self._stopping.is_set():
                    log.warning("%s LISTEN connection lost (%s); reconnecting", self.what, exc)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()


class ListenWatcher(ListenThread):
    """The LISTEN thread of one store (see the module docstring).

    ``backend_pid`` is the server pid of the current LISTEN connection.
    """

    def __init__(self, database: sa.Engine, hub: WakeupHub, interval: float,
                 writer_pid: Callable[[], int | None] = lambda: None) -> None:
        """``writer_pid()``: the server pid of this store's writing connection (None: none yet)."""
        super().__init__("baton-eventstore-listen")
        self._database = database
        self._hub = hub
        self._interval = interval
        self._writer_pid = writer_pid
        self.backend_pid: int | None = None
        self.ready = threading.Event()  # listening, and the head read once (or the first try failed)
        self._thread.start()

    def _connect(self) -> psycopg.Connection:
        conn = own_connection(self._database, "baton-listen")
        self.backend_pid = conn.info.backend_pid
        # A handler also stops psycopg from keeping unread notifications in
        # a backlog that would grow for as long as the store runs.
        conn.add_notify_handler(self._on_notify)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _failed(self) -> None:
        self.ready.set()  # nobody waits for a connection that failed: they poll, as subscriptions do

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # NOTIFY is delivered only after its transaction committed, so its
        # position is safe to wake on; anything else on the channel is noise.
        try:
            self._hub.advance(int(notify.payload))
        except ValueError:
            pass

    def _follow(self, conn: psycopg.Connection) -> None:
        # Whatever happened while we were not listening is in the table.
        self._hub.advance(_head(conn))
        self._hub.poke()
        self.ready.set()
        fileno = conn.fileno()
        while not self._stopping.is_set():
            ready, _, _ = select.select([fileno, self._wake_r], [], [], self._interval)
            if self._wake_r in ready:
                return
            if ready and not self._foreign(conn):
                continue  # only this store's own commits: the hub has them already
            # Running a query also consumes any pending notifications; their
            # payload is only a hint, the table's head is the truth.
            self._hub.advance(_head(conn))

    def _foreign(self, conn: psycopg.Connection) -> bool:
        """Consume what the server sent; whether a NOTIFY came from another session than our writer.

        Raises psycopg.OperationalError when the connection is lost (it is made again).
        """
        pgconn = conn.pgconn
        pgconn.consume_input()
        own, foreign = self._writer_pid(), False
        while (notify := pgconn.notifies()) is not None:
            foreign = foreign or notify.be_pid != own
        return foreign
