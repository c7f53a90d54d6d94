"""The one way to read a run's log: type names, schema versions, upcasters, decoding.

Every reader of the log decodes through :data:`CODEC`: the engine
(``actors.runlog``), the projector and the queries (``projections.source``),
the frames, ``baton replay`` (``api.cli.audit``) and the terminal views. So an
upcaster, once registered, applies everywhere.

A recorded event is its type name, its data (a JSON object: a dict, or its
JSON text) and the schema version its data was written at (the event's
metadata ``schema_version``; 1 when absent). A renamed or reshaped event gets
an upcaster: a pure function from the data of ``(type name, version)`` to
``(type name, data)`` one version up, registered in :data:`UPCASTERS`. A new
field with a default needs none. Each type is written at the first version no
upcaster starts from (:meth:`EventCodec.schema_version`), so new events are
never upcast.

Decoding data that no upcaster applies to goes straight from JSON text into
the event's type with one msgspec Decoder per type (in :meth:`EventCodec.decode`,
and for a whole page :meth:`EventCodec.fast`): a rebuild reads millions of
events this way (bench/projections.py).
Nothing here does I/O; the store is the caller's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgspec

from flows.errors import BatonError
from flows.events import EVENT_TYPES, Event

Upcaster = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
"""Takes the data of ``(name, version)`` to ``(name, data)`` at ``version + 1``; may rename the type."""

INITIAL_SCHEMA_VERSION = 1
"""The schema version of a type no upcaster has touched (and of an event whose metadata names none)."""


class UnknownEventType(BatonError, KeyError):
    """A recorded event's type is none this codec knows (after upcasting)."""

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name

    def __str__(self) -> str:
        return f"unknown event type {self.type_name!r}"


class UpcastError(BatonError, ValueError):
    """An upcaster failed on a recorded event's data (a data problem: the event is unreadable)."""

    def __init__(self, type_name: str, version: int, cause: BaseException) -> None:
        super().__init__(f"upcasting {type_name!r} v{version} failed: {cause!r}")
        self.type_name = type_name
        self.version = version


class EventCodec:
    """Event types by name, and the upcasters that bring old data to their current shape.

    ``decode`` raises UnknownEventType, UpcastError, or msgspec's
    ValidationError / DecodeError (both ValueErrors) when the data does not fit
    its type or is not JSON.
    """

    def __init__(self, types: Mapping[str, type[Event]],
                 upcasters: dict[tuple[str, int], Upcaster] | None = None) -> None:
        self.types = dict(types)
        self.upcasters: dict[tuple[str, int], Upcaster] = upcasters if upcasters is not None else {}
        self._decoders = {name: msgspec.json.Decoder(cls) for name, cls in self.types.items()}
        self._seen: dict[tuple[str, int], Upcaster] = dict(self.upcasters)
        # (types some upcaster starts from, decoders of the others): one value, swapped whole,
        # so a reader on another thread never sees one half new and the other old. Built now:
        # with no upcaster registered, ``_seen`` equals ``upcasters`` from the start, and tables
        # left empty would send every event down the slow path (``fast()`` empty).
        versioned = frozenset(name for name, _ in self._seen)
        self._tables: tuple[frozenset[str], dict[str, msgspec.json.Decoder[Any]]] = (
            versioned, {name: d for name, d in self._decoders.items() if name not in versioned})

    # -- what is written ---------------------------------------------------------------------

    def schema_version(self, type_name: str) -> int:
        """The version new events of ``type_name`` are written at: the first no upcaster starts from."""
        version = INITIAL_SCHEMA_VERSION
        while (type_name, version) in self.upcasters:
            version += 1
        return version

    # -- what is read --------------------------------------------------------------------------

    def decode(self, type_name: str, data: dict[str, Any] | str | bytes,
               schema_version: int = INITIAL_SCHEMA_VERSION) -> Event:
        """The domain event behind recorded data (a dict, or JSON text), upcast to its current shape."""
        if (type_name, schema_version) not in self.upcasters:
            if isinstance(data, (str, bytes, bytearray)):
                decoder = self._decoders.get(type_name)
                if decoder is None:
                    raise UnknownEventType(type_name)
                return decoder.decode(data)
            return self._convert(type_name, data)
        values: dict[str, Any] = msgspec.json.decode(data) if isinstance(data, (str, bytes, bytearray)) else data
        name, upcast = self.upcast(type_name, values, schema_version)
        return self._convert(name, upcast)

    def upcast(self, type_name: str, data: dict[str, Any], schema_version: int) -> tuple[str, dict[str, Any]]:
        """``(type name, data)`` brought from ``schema_version`` to the current shape."""
        version = schema_version
        while (type_name, version) in self.upcasters:
            try:
                type_name, data = self.upcasters[(type_name, version)](data)
            except Exception as exc:  # an upcaster failing is a data problem: say which and where
                raise UpcastError(type_name, version, exc) from exc
            version += 1
        return type_name, data

    def _convert(self, type_name: str, data: Any) -> Event:
        cls = self.types.get(type_name)
        if cls is None:
            raise UnknownEventType(type_name)
        return msgspec.convert(data, cls)

    def current(self, type_name: str, data: dict[str, Any]) -> Event:
        """An event from data already in its current shape (as it is written now: nothing to upcast)."""
        return self._convert(type_name, data)

    # -- the fast path -----------------------------------------------------------------------

    def knows(self, type_name: str) -> bool:
        """Whether ``type_name`` is one of this codec's types (or one an upcaster renames)."""
        return type_name in self.types or type_name in self.versioned()

    def fast(self) -> Mapping[str, msgspec.json.Decoder[Any]]:
        """Decoders of the types no upcaster starts from at any version: their data decodes
        straight from JSON text, whatever version it was written at (no need to read it)."""
        return self._current_tables()[1]

    def versioned(self) -> frozenset[str]:
        """The type names some upcaster starts from: decoding them needs the schema version."""
        return self._current_tables()[0]

    def _current_tables(self) -> tuple[frozenset[str], dict[str, msgspec.json.Decoder[Any]]]:
        if self._seen != self.upcasters:  # registered or removed since: the tables follow
            seen = dict(self.upcasters)
            versioned = frozenset(name for name, _ in seen)
            self._tables = (versioned, {name: d for name, d in self._decoders.items() if name not in versioned})
            self._seen = seen
        return self._tables

    @contextlib.contextmanager
    def upcasting(self, type_name: str, schema_version: int, upcaster: Upcaster) -> Iterator[None]:
        """Register an upcaster for the length of a ``with`` block (tests, and tools that read
        an archive written by another version)."""
        key = (type_name, schema_version)
        if key in self.upcasters:
            raise ValueError(f"an upcaster for {type_name!r} v{schema_version} is already registered")
        self.upcasters[key] = upcaster
        try:
            yield
        finally:
            del self.upcasters[key]


UPCASTERS: dict[tuple[str, int], Upcaster] = {}
"""``(type name, schema version)`` -> its upcaster. Empty: no event has changed shape yet."""

CODEC = EventCodec(EVENT_TYPES, UPCASTERS)
"""The codec of run events: the one every reader of the log decodes through."""


def decode(type_name: str, data: dict[str, Any] | str | bytes,
           schema_version: int = INITIAL_SCHEMA_VERSION) -> Event:
    """``CODEC.decode``: the run event behind recorded data, upcast to its current shape."""
    return CODEC.decode(type_name, data, schema_version)


def schema_version(type_name: str) -> int:
    """``CODEC.schema_version``: the version new events of ``type_name`` are written at."""
    return CODEC.schema_version(type_name)


def event_from_data(type_name: str, data: dict[str, Any]) -> Event:
    """A run event from data in its current shape (as this code writes it: nothing to upcast).

    Data read back from a store may be older: decode it with its schema version (:func:`decode`).
    """
    return CODEC.current(type_name, data)
