"""JSON encoding of event data and metadata, row decoding, and a type registry.

The store keeps ``data`` and ``metadata`` as JSON text, encoded once by msgspec
with dictionary keys sorted, so the text is canonical: the hash chain is
computed over it exactly as stored. Reading decodes that text back to plain
JSON values; a row that does not decode raises ``CorruptEventError`` naming
its position instead of handing out garbage.

``Codec`` is a small generic registry for users of the store on its own: it
maps type names to msgspec types, upcasts old shapes, and turns a
``RecordedEvent`` into a typed object. baton's own events are read through
``flows.codec`` (the store knows nothing of flows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from eventstore.store import (
    CorruptEventError,
    NewEvent,
    RecordedEvent,
    UnknownEventTypeError,
)

# Sorted keys make the stored text a function of the value alone, so two
# processes encoding equal data write (and hash) identical text.
_encoder = msgspec.json.Encoder(order="deterministic")
_any_decoder = msgspec.json.Decoder()
_metadata_decoder = msgspec.json.Decoder(dict[str, Any])

EMPTY_OBJECT = "{}"


def encode_json(value: Any) -> str:
    """Encode a JSON-able value (dict, list, msgspec Struct, ...) to canonical JSON text.

    Raises TypeError when the value cannot be encoded.
    """
    try:
        return _encoder.encode(value).decode()
    except (msgspec.EncodeError, TypeError, ValueError) as exc:
        raise TypeError(f"event data is not JSON-encodable: {exc}") from None


def decode_json(text: str | bytes) -> Any:
    """Decode JSON text to plain values; raises msgspec.DecodeError when invalid."""
    return _any_decoder.decode(text)


def encode_new_event(event: NewEvent) -> tuple[str, str]:
    """The (data, metadata) JSON texts of an event about to be appended."""
    return encode_json(event.data), encode_metadata(event.metadata)


def encode_metadata(metadata: dict[str, Any]) -> str:
    """The JSON text of an event's metadata (``EMPTY_OBJECT`` for none)."""
    return encode_json(metadata) if metadata else EMPTY_OBJECT


# Column order of every SELECT that feeds ``decode_row``: it is also the
# positional order of RecordedEvent's fields, so a row maps without names.
ROW_COLUMNS = (
    "position",
    "stream_id",
    "version",
    "type",
    "data",
    "metadata",
    "recorded_at",
    "hash",
    "event_id",
)


def decode_row(row: Sequence[Any]) -> RecordedEvent:
    """A stored row (in ``ROW_COLUMNS`` order) as a RecordedEvent.

    Raises CorruptEventError naming the position when data or metadata is not
    valid JSON, or metadata is not a JSON object.
    """
    position, stream_id, version, type_, data, metadata, recorded_at, hash_, event_id = row
    try:
        return RecordedEvent(
            position,
            stream_id,
            version,
            type_,
            _any_decoder.decode(data),
            _metadata_decoder.decode(metadata),
            recorded_at,
            hash_,
            event_id,
        )
    except (msgspec.DecodeError, TypeError) as exc:
        raise _corrupt(row, exc) from None


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[RecordedEvent]:
    """Decode many rows at once (for reads that return a list).

    Streaming readers decode row by row as they hand events out instead
    (``decode_row``): an event decoded just before it is consumed dies young,
    while a decoded page lives long enough for the garbage collector to
    promote, and later rescan, every dict in it.
    """
    decode_any = _any_decoder.decode
    decode_meta = _metadata_decoder.decode
    try:
        return [
            RecordedEvent(p, s, v, t, decode_any(d), decode_meta(m), r, h, i)
            for p, s, v, t, d, m, r, h, i in rows
        ]
    except (msgspec.DecodeError, TypeError):
        for row in rows:  # again, row by row, for the precise error
            decode_row(row)
        raise  # pragma: no cover - decode_row raised above


def _corrupt(row: Sequence[Any], exc: Exception) -> CorruptEventError:
    position, stream_id, version = row[0], row[1], row[2]
    return CorruptEventError(
        position, f"stream {stream_id!r} version {version}: {exc}"
    )


Upcaster = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]
"""Turns data recorded as ``(name, schema_version)`` into ``(new_name, new_data)``
at ``schema_version + 1``; may rename the type."""


class Codec:
    """A registry of event types: typed objects in, typed objects out.

    ``types`` maps a type name (the ``type`` column) to a msgspec-decodable
    type, usually a frozen Struct. ``upcasters`` maps ``(name, schema_version)``
    to a function upgrading data of that name and version by one version; the
    schema version of a recorded event is ``metadata["schema_version"]``
    (1 when absent). ``schema_versions`` gives the version new events are
    written at (default 1).

    Example::

        codec = Codec({"Note": Note}, {("Note", 1): lambda d: ("Note", {**d, "k": 0})},
                      schema_versions={"Note": 2})
        store.append("s", [codec.new_event(Note(k=1))])
        note = codec.decode(store.read_stream("s")[0])
    """

    def __init__(
        self,
        types: Mapping[str, type],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
        *,
        schema_versions: Mapping[str, int] | None = None,
    ) -> None:
        self._types = dict(types)
        self._names = {cls: name for name, cls in self._types.items()}
        self._upcasters = dict(upcasters or {})
        self._schema_versions = dict(schema_versions or {})

    def name_of(self, value: Any) -> str:
        """The registered type name of a value; KeyError when its type is unknown."""
        try:
            return self._names[type(value)]
        except KeyError:
            raise KeyError(f"{type(value).__name__} is not a registered event type") from None

    def new_event(
        self, value: Any, metadata: Mapping[str, Any] | None = None, id: str | None = None
    ) -> NewEvent:
        """A NewEvent for a registered value, its schema version in the metadata."""
        name = self.name_of(value)
        meta = dict(metadata or {})
        meta.setdefault("schema_version", self._schema_versions.get(name, 1))
        if id is None:
            return NewEvent(name, value, meta)
        return NewEvent(name, value, meta, id)

    def decode(self, recorded: RecordedEvent) -> Any:
        """The typed object behind a recorded event, upcast to the current shape.

        Raises UnknownEventTypeError (position, type) for an unregistered type
        and CorruptEventError (position, why) when the data does not fit it.
        """
        name, data = recorded.type, recorded.data
        version = recorded.metadata.get("schema_version", 1)
        if not isinstance(version, int):
            raise CorruptEventError(recorded.position, f"schema_version {version!r} is not an integer")
        while (name, version) in self._upcasters:
            try:
                name, data = self._upcasters[(name, version)](data)
            except Exception as exc:  # an upcaster failing is a data problem: say where
                raise CorruptEventError(
                    recorded.position, f"upcasting {name!r} v{version} failed: {exc!r}"
                ) from exc
            version += 1
        cls = self._types.get(name)
        if cls is None:
            raise UnknownEventTypeError(recorded.position, name)
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise CorruptEventError(
                recorded.position, f"data does not fit type {name!r}: {exc}"
            ) from None
