"""PostgreSQL wake-ups: one LISTEN connection per store, for every subscription.

NOTIFY is a hint, never data (DESIGN §10): each wake-up, and every
``interval`` seconds of silence, the watcher re-reads ``max(position)`` and
moves the store's WakeupHub; subscriptions then re-read the table. A lost
notification costs at most one interval; a killed connection
(``pg_terminate_backend``) is replaced, and every subscription re-reads once
the new one listens, in case something committed in between.
"""

from __future__ import annotations

import logging
import os
import select
import threading

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


class ListenWatcher:
    """The LISTEN thread of one store (see the module docstring).

    ``backend_pid`` is the server pid of the current LISTEN connection.
    """

    def __init__(self, database: sa.Engine, hub: WakeupHub, interval: float) -> None:
        self._database = database
        self._hub = hub
        self._interval = interval
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self.backend_pid: int | None = None
        self._thread = threading.Thread(target=self._run, name="baton-eventstore-listen",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop at once (the thread's select also watches a wake-up pipe)."""
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _connect(self) -> psycopg.Connection:
        conn = own_connection(self._database, "baton-listen")
        # A handler also stops psycopg from keeping unread notifications in
        # a backlog that would grow for as long as the store runs.
        conn.add_notify_handler(self._on_notify)
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _on_notify(self, notify: psycopg.Notify) -> None:
        # NOTIFY is delivered only after its transaction committed, so its
        # position is safe to wake on; anything else on the channel is noise.
        try:
            self._hub.advance(int(notify.payload))
        except ValueError:
            pass

    def _run(self) -> None:
        delay = 0.05
        while not self._stopping.is_set():
            conn = None
            try:
                conn = self._connect()
                self.backend_pid = conn.info.backend_pid
                delay = 0.05
                self._follow(conn)
            except Exception as exc:  # logged and retried: subscribers must keep waking
                if not self._stopping.is_set():
                    log.warning("event store LISTEN connection lost (%s); reconnecting", exc)
                    self._stopping.wait(delay)
                    delay = min(delay * 2, 2.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass

    def _follow(self, conn: psycopg.Connection) -> None:
        # Whatever happened while we were not listening is in the table.
        self._hub.advance(_head(conn))
        self._hub.poke()
        fileno = conn.fileno()
        while not self._stopping.is_set():
            ready, _, _ = select.select([fileno, self._wake_r], [], [], self._interval)
            if self._wake_r in ready:
                return
            # Running a query also consumes any pending notifications; their
            # payload is only a hint, the table's head is the truth.
            self._hub.advance(_head(conn))
