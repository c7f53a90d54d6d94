"""baton's append-only event store: generic streams, global positions, hash chains.

    from eventstore import open_store, NewEvent, ConcurrencyError
    store = open_store("sqlite:///baton.db")     # or postgresql+psycopg://...
    store.append("run-x", [NewEvent("Note", {"k": 1})], expected_version=0)

Knows nothing about runs or flows; see DESIGN.md §2, §8-§10.
"""

from eventstore.codec import Codec
from eventstore.sql import SqlEventStore, open_store
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
    "SqlEventStore",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "Subscription",
    "UnknownEventTypeError",
    "open_store",
]
