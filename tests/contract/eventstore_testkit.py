"""Helpers of the event-store contract tests: waiting, raw SQL, tampering.

Tampering needs the append-only triggers out of the way for a moment; how to
do that is the only thing that differs between backends, so it lives here
and the test classes stay the same for both.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from eventstore import open_store, schema


@pytest.fixture
def store(store_url):
    """An open store on this test's own database, closed afterwards.

    Imported by the test modules (no conftest.py here: test modules of other
    directories import ``conftest`` by name, and a second one would shadow theirs).
    """
    with open_store(store_url) as s:
        yield s


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def run_sql(store: Any, *statements: str) -> None:
    """Run raw SQL through the store's database, in one transaction."""
    with store.database.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def tamper(store: Any, *statements: str) -> None:
    """Run statements with the append-only triggers disabled, then restore them."""
    if store.dialect == "postgresql":
        run_sql(
            store,
            "ALTER TABLE events DISABLE TRIGGER USER",
            *statements,
            "ALTER TABLE events ENABLE TRIGGER USER",
        )
        return
    conn = sqlite3.connect(store.database.url.database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP TRIGGER events_refuse_update")
        conn.execute("DROP TRIGGER events_refuse_delete")
        for statement in statements:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()
    schema.set_up(store.database)  # idempotent: puts the triggers back


def insert_raw_row(store: Any, stream_id: str, version: int, data: str, metadata: str = "{}",
                   type_: str = "Raw", event_id: str | None = None) -> int:
    """Insert a row behind the store's back (no NOTIFY, no hash chain); its position."""
    event_id = event_id or f"raw-{stream_id}-{version}"
    with store.database.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO events (event_id, stream_id, version, type, data, metadata,"
                " recorded_at, hash) VALUES (:i, :s, :v, :t, :d, :m, 0, 'x')"
            ),
            {"i": event_id, "s": stream_id, "v": version, "t": type_, "d": data, "m": metadata},
        )
        return conn.execute(
            sa.text("SELECT position FROM events WHERE event_id = :i"), {"i": event_id}
        ).scalar_one()


def pg_writers_waiting_for_lock(store: Any) -> int:
    """How many store writer connections of this database wait on a lock (PostgreSQL)."""
    with store.database.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'baton-writer' AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


class Thread(threading.Thread):
    """A thread that keeps its target's result or exception for the test to check."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = target
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the test, which asserts on it
            self.error = exc
        finally:
            self.done.set()

    def value(self, timeout: float = 30.0) -> Any:
        """Join and return the result, re-raising the thread's exception."""
        self.join(timeout)
        assert not self.is_alive(), "thread did not finish"
        if self.error is not None:
            raise self.error
        return self.result
