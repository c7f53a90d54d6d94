"""The event store contract: what every backend offers and the errors it raises.

The store is generic. It knows streams, versions, global positions and hash
chains; it knows nothing about runs or flows.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

import msgspec

from eventstore.seal import LogDigest, Seal

_ids = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))


def new_event_id() -> str:
    """A time-ordered (version 7) UUID for an event: the Unix time in milliseconds, then 74 random bits.

    Ordered by time, a commit's new ids go to the last leaf of the event-id
    index, not each to a random one: on SQLite a W1 step's commit wrote 2.25
    pages of that index for its two events (one WAL frame each), and a large
    log's index is read back page by page at random. From a generator seeded
    once from the OS rather than ``os.urandom`` per call: that syscall, twice
    per step, cost 4-5% of the engine's CPU. Ids need to be unique, not secret.
    """
    # What str(uuid.UUID(...)) gives, formatted directly (no UUID object per event) in one
    # %-format: the 48 bits of time, "7" (the version), 12 random bits, the variant (0b10) and 14
    # random bits, 48 random bits. (Slicing one 32-digit hex string: 65 opcodes, not 40, and ~7%
    # slower; str.format is slower still.)
    ms = time.time_ns() // 1_000_000
    r = _ids.getrandbits(74)
    return "%08x-%04x-7%03x-%04x-%012x" % (  # noqa: UP031 (measured faster: see above)
        ms >> 16, ms & 0xFFFF, r >> 62, r >> 48 & 0x3FFF | 0x8000, r & 0xFFFF_FFFF_FFFF
    )


class NewEvent(msgspec.Struct, frozen=True, gc=False):  # data only (as RecordedEvent): never in a cycle
    """An event to append: a type name, its JSON-able data and metadata.

    ``id`` makes appends idempotent: appending an event whose id is already
    recorded appends nothing and returns the recorded one.
    """

    type: str
    data: Any
    metadata: dict[str, Any] = {}
    id: str = msgspec.field(default_factory=new_event_id)


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the store recorded it.

    ``position`` is global and increases in commit order; ``version`` counts
    1, 2, 3 ... within ``stream_id``; ``hash`` chains the event to the previous
    one of its stream (see ``eventstore.chain``).
    """

    position: int
    stream_id: str
    version: int
    type: str
    data: Any
    metadata: dict[str, Any]
    recorded_at: float
    hash: str
    id: str = ""


class StoreError(Exception):
    """Base class of every error the store raises."""


class ConcurrencyError(StoreError):
    """The stream's version was not the one the append expected; nothing was appended."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, but it is at {actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class CorruptEventError(StoreError):
    """A recorded row cannot be decoded; names the position of the row."""

    def __init__(self, position: int, detail: str) -> None:
        super().__init__(f"event at position {position} cannot be decoded: {detail}")
        self.position = position
        self.detail = detail


class UnknownEventTypeError(CorruptEventError):
    """A recorded event has a type no codec knows; names the position."""

    def __init__(self, position: int, type_name: str) -> None:
        StoreError.__init__(
            self, f"event at position {position} has unknown type {type_name!r}"
        )
        self.position = position
        self.detail = f"unknown type {type_name!r}"
        self.type_name = type_name


class StoreUnavailableError(StoreError):
    """The database behind the store URL cannot be reached."""


class EventIdConflictError(StoreError):
    """Some event ids of an append are already recorded, but not all of them
    (or not in this stream): the append is neither new nor a retry.

    A retry must resend exactly the events of the first attempt, ids included;
    nothing was appended.
    """

    def __init__(self, stream_id: str, detail: str) -> None:
        super().__init__(f"stream {stream_id!r}: {detail}; nothing was appended")
        self.stream_id = stream_id
        self.detail = detail


class Outage(msgspec.Struct, frozen=True):
    """The store cannot be used now: since when (``time.time()``), and the last error in words."""

    since: float
    error: str


class StoreClosedError(StoreError):
    """The store (or its writer) was closed; the call did nothing."""


class Subscription(Protocol):
    """Iterator over recorded events: catch-up from a position, then live.

    ``position`` is the position of the last event handed out (the cursor to
    resume from). ``next_event(timeout)`` returns None when nothing arrived in
    time or the subscription is closed; ``close()`` ends iteration from any
    thread.
    """

    @property
    def position(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def __iter__(self) -> Iterator[RecordedEvent]: ...

    def __next__(self) -> RecordedEvent: ...

    def next_event(self, timeout: float | None = None) -> RecordedEvent | None: ...

    def close(self) -> None: ...


class EventStore(Protocol):
    """What every backend offers (see tests/contract)."""

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | None = None,
        *,
        timeout: float | None = None,
        last: Callable[[list[int]], NewEvent] | None = None,
    ) -> list[RecordedEvent]:
        """Append atomically; ``expected_version`` None skips the check.

        Raises ConcurrencyError (appending nothing) on a version mismatch.
        Waits while the database is away, at most ``timeout`` seconds when given.
        ``last`` renders the last event from the positions the others get, in
        the same commit (a store that can says so with ``renders_last``).
        """
        ...

    def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]: ...

    def read_streams(self, stream_ids: Collection[str]) -> dict[str, list[RecordedEvent]]:
        """Several streams at once: ``{stream: its events in version order}``, streams with none left out."""
        ...

    def read_all(
        self, after: int = 0, limit: int | None = None, *, types: Collection[str] | None = None
    ) -> Iterator[RecordedEvent]: ...

    def head(self) -> int: ...

    def subscribe(self, after: int = 0, *, stream_id: str | None = None) -> Subscription: ...

    def verify(self, stream_id: str | None = None, *, seal: Seal | None = None) -> list[str]:
        """Hash chains, and seals when the whole log is checked; [] when intact."""
        ...

    def seal(self, digest: LogDigest | None = None) -> Seal:
        """Seal the log up to its head (DESIGN §13); the seal to keep elsewhere."""
        ...

    def digest_log(self, digest: LogDigest | None = None) -> LogDigest:
        """The running digest of the log up to its head, to seal from later without reading it again."""
        ...

    def close(self) -> None: ...

    def outage(self) -> Outage | None:
        """Why the store cannot be used now, and since when; None while it can."""
        ...
