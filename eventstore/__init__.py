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
"""

from eventstore.codec import Codec
from eventstore.seal import Seal
from eventstore.sql import SqlEventStore, SqlStore, open_store
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
