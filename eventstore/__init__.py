"""baton's append-only event store: generic streams, global positions, hash chains.

    from eventstore import open_store, NewEvent, ConcurrencyError
    store = open_store("sqlite:///baton.db")     # or postgresql+psycopg://...
    store.append("run-x", [NewEvent("Note", {"k": 1})], expected_version=0)

Knows nothing about runs or flows; see DESIGN.md §2, §8-§10.

The store shares its database: the projections' read tables and checkpoint,
the leases, and the fast log readers live in it, and reach it only through
``SqlStore.database`` (a SQLAlchemy Engine). Code that needs no more than the
log takes an ``EventStore``; code that needs the database takes a ``SqlStore``
(or the ``database`` itself, as ``Leases`` and ``ReadModel`` do).

The SQL store (``SqlEventStore``, ``SqlStore``, ``open_store``) is imported
at its first use, not with this package: it needs SQLAlchemy (~0.3 s), and
the log's values (``RecordedEvent``, ``NewEvent``, the errors, ``Seal``) are
read by processes that never open a store, such as a ``baton`` command sent
to a server (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eventstore.codec import Codec
from eventstore.seal import Seal
from eventstore.store import (
    ConcurrencyError,
    CorruptEventError,
    EventIdConflictError,
    EventStore,
    NewEvent,
    Outage,
    RecordedEvent,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    UnknownEventTypeError,
)
from eventstore.subscription import Subscription

if TYPE_CHECKING:
    from eventstore.sql import SqlEventStore, SqlStore, open_store

_SQL = ("SqlEventStore", "SqlStore", "open_store")


def __getattr__(name: str) -> Any:
    """The SQL store's names, imported at their first use (PEP 562)."""
    if name in _SQL:
        value = getattr(importlib.import_module("eventstore.sql"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'eventstore' has no attribute {name!r}")

__all__ = [
    "Codec",
    "ConcurrencyError",
    "CorruptEventError",
    "EventIdConflictError",
    "EventStore",
    "NewEvent",
    "Outage",
    "RecordedEvent",
    "Seal",
    "SqlEventStore",
    "SqlStore",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "Subscription",
    "UnknownEventTypeError",
    "open_store",
]
