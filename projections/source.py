"""Reading the log for a projection: recorded events in, decoded domain events out.

The live projector gets ``RecordedEvent`` values from its subscription. A
rebuild (or a long catch-up) reads pages itself: the same
``SELECT ... WHERE position > ? ORDER BY position LIMIT ?`` as
``store.read_all``, but only the columns a projection needs, with ``data``
decoded straight from its JSON text into the event's type. That skips
decoding metadata and building a generic dict first, which is most of what a
rebuild would otherwise spend (see bench/projections.py). It relies on the
store keeping ``data`` as JSON text in its ``events`` table (eventstore.schema);
a store without a ``database`` is read through ``read_all``.

Every reader here shows text the way the read tables can hold it: a NUL or
a lone surrogate in an event (written before commands were checked, or by a
model's output) comes out as U+FFFD (``flows.text.storable``). Decoding is
where this happens, so every path that writes rows (the live projector, a
catch-up, a rebuild, PostgreSQL's COPY) and every query of an event's text
gets it; an event without such text costs one regex search more.
An event that does not decode into its type is not dropped silently: it
comes out as a ``problem`` row of its page, for ``projection_errors``.

Decoding goes through ``flows.codec`` (upcasters included), on its fast path
where it can: data of a type no upcaster starts from goes straight from its
JSON text into the event with the codec's Decoder; only rows of a type that
has an upcaster need their schema version, and only for those is it read
out of the row's metadata (by the database, in the page's query).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Self

import msgspec
import sqlalchemy as sa

from eventstore import EventStore, RecordedEvent, SqlStore
from flows.codec import CODEC, INITIAL_SCHEMA_VERSION
from flows.events import RUN_STREAM_PREFIX, Event, run_id_of
from flows.text import storable, storable_value

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_PAGE = ("SELECT position, stream_id, version, type, {1}, {2} FROM events WHERE position > {0} "
         "ORDER BY position LIMIT {0}")
# SQLite hands a BLOB over as bytes without decoding UTF-8 into a str first
# (half the cost of the fetch); msgspec decodes JSON from bytes directly.
_DATA = {"sqlite": "CAST(data AS BLOB)", "postgresql": "data"}
# The schema version in a row's metadata, read by the database (metadata is JSON text).
_SCHEMA_VERSION = {"sqlite": "json_extract(metadata, '$.schema_version')",
                   "postgresql": "(metadata::json ->> 'schema_version')"}


def schema_version_column(dialect: str, column_of: str = "") -> str:
    """The SQL of a query's schema-version column: the metadata's, for rows of a type some upcaster
    starts from, else NULL (no upcaster applies: the version is not needed, and not read)."""
    versioned = sorted(CODEC.versioned())
    if not versioned or dialect not in _SCHEMA_VERSION:
        return "NULL"
    names = ", ".join("'" + name.replace("'", "''") + "'" for name in versioned)
    extract = _SCHEMA_VERSION[dialect].replace("metadata", f"{column_of}metadata")
    return f"CASE WHEN {column_of}type IN ({names}) THEN {extract} END"


def _version(value: Any) -> int:
    """A schema version read by ``schema_version_column`` (None: not read, or absent)."""
    if value is None:
        return INITIAL_SCHEMA_VERSION
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():  # PostgreSQL's ->> gives text
        return int(value)
    raise ValueError(f"schema_version {value!r} is not an integer")


def decode(type_name: str, data: Any, position: int, schema_version: Any = None) -> Event | None:
    """The domain event (its texts made storable), or None for a type this projection does not know.

    ``schema_version`` is the metadata's (None when absent). A known type whose
    data does not fit is logged and skipped here (the projector records it:
    see ``from_recorded``).
    """
    if not CODEC.knows(type_name):
        return None
    try:
        return convert(type_name, data, _version(schema_version))
    except ValueError as exc:  # msgspec's ValidationError, flows.codec's UpcastError, a bad version
        log.error("cannot read event %d (%s): %s", position, type_name, exc)
        return None


def convert(type_name: str, data: Any, schema_version: int = INITIAL_SCHEMA_VERSION) -> Event:
    """JSON values (as the store hands them out) as a run event, upcast, its texts made storable."""
    return CODEC.decode(type_name, storable_value(data) if _holds_escapes(data) else data, schema_version)


def _holds_escapes(data: Any) -> bool:
    """Whether JSON values may hold NUL or a lone surrogate: their JSON text is searched, as a page's
    is. Encoding and one search cost a sixth of walking the values in Python (bench: 20,000
    simulated events, 66 ms against 370 ms; msgspec.convert itself takes about 110 ms)."""
    try:
        return _SUSPECT.search(_encode(data)) is not None
    except (UnicodeEncodeError, msgspec.EncodeError, TypeError):  # a lone surrogate cannot be encoded
        return True


def problem(position: int, run_id: str, type_name: str, error: BaseException | str) -> dict[str, Any]:
    """A ``projection_errors`` row: the event at ``position`` could not be applied, and why."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"position": position, "run_id": storable(run_id), "event_type": storable(type_name),
            "error": storable(text)}


Item = tuple[str, Event, int, int]
"""One event of a run, ready to apply: (run_id, event, position, stream version).

A plain tuple: a replay makes one per event, and a NamedTuple costs twice as much to build.
"""


class Page(NamedTuple):
    """A page of the log: the run events in it, and the last position it covered.

    ``problems`` are ``projection_errors`` rows of the events in it that did not decode.
    """

    items: list[Item]
    last: int
    count: int  # type: ignore[assignment]  # a field named as tuple.count, which it hides
    problems: Sequence[dict[str, Any]] = ()


def from_recorded(records: Sequence[RecordedEvent]) -> Page:
    """A page of events handed out by a subscription (data already decoded to JSON values)."""
    items = []
    problems = []
    for rec in records:
        run_id = run_id_of(rec.stream_id)
        if run_id is None:
            continue  # not a run's stream (e.g. idempotency keys): nothing to show
        if not CODEC.knows(rec.type):
            continue
        try:
            event = convert(rec.type, rec.data, _version(rec.metadata.get("schema_version")))
        except ValueError as exc:  # msgspec's ValidationError, flows.codec's UpcastError, a bad version
            log.error("projection skips event %d (%s): %s", rec.position, rec.type, exc)
            problems.append(problem(rec.position, run_id, rec.type, exc))
            continue
        items.append((run_id, event, rec.position, rec.version))
    return Page(items, records[-1].position if records else 0, len(records), problems)


class LogReader:
    """Pages of the log for one catch-up, read on one connection held for its length.

    ``fetch(after, limit)`` runs a page's query; ``page(fetched)`` turns its
    rows into decoded items. A pipeline runs ``fetch`` in its reading thread
    and ``page`` where it applies: on PostgreSQL the query is a wait on the
    server, during which the GIL is free, while building and decoding rows
    holds the GIL wherever it runs. The connection is held (and on PostgreSQL
    in autocommit) so a page costs one round trip, not a pool check-out with
    its ping, a BEGIN and a ROLLBACK. Use as a context manager.

    A store without a ``database`` is read through ``read_all``.
    """

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._database: sa.Engine | None = store.database if isinstance(store, SqlStore) else None
        self._raw: Any = None
        self._sql = ""

    def __enter__(self) -> Self:
        if self._database is not None:
            dialect = self._database.dialect.name
            mark = "%s" if dialect == "postgresql" else "?"
            self._sql = _PAGE.format(mark, _DATA.get(dialect, "data"), schema_version_column(dialect))
            self._raw = self._database.raw_connection()
            if dialect == "postgresql":
                self._raw.driver_connection.autocommit = True  # each page its own snapshot, as before
        return self

    def __exit__(self, *exc: object) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            if self._database is not None and self._database.dialect.name == "postgresql":
                raw.driver_connection.autocommit = False  # the pool is shared with store.database users
        except Exception:
            raw.invalidate()  # a connection that cannot say is not handed out again
        raw.close()

    def fetch(self, after: int, limit: int) -> tuple[Any, int]:
        """Run the query of the page after ``after`` (up to ``limit`` events); hand it to ``page``."""
        if self._raw is None:
            return list(self._store.read_all(after=after, limit=limit)), after
        cursor = self._raw.cursor()
        cursor.execute(self._sql, (after, limit))
        return cursor, after

    @staticmethod
    def discard(fetched: tuple[Any, int]) -> None:
        """Drop a page ``fetch`` ran without reading it (a catch-up that stops)."""
        cursor, _ = fetched
        if not isinstance(cursor, list):
            cursor.close()

    @staticmethod
    def page(fetched: tuple[Any, int]) -> Page:
        """The page a ``fetch`` ran: its rows, decoded."""
        cursor, after = fetched
        if isinstance(cursor, list):
            return from_recorded(cursor) if cursor else Page([], after, 0)
        rows = cursor.fetchall()
        cursor.close()
        return rows_page(rows, after)


def rows_page(rows: Sequence[Sequence[Any]], after: int) -> Page:
    """A page of ``events`` rows (position, stream_id, version, type, data, schema version), decoded.

    The schema version may be None (not read: see ``schema_version_column``).
    """
    if not rows:
        return Page([], after, 0)
    fast = CODEC.fast()
    knows = CODEC.knows
    cut = len(RUN_STREAM_PREFIX)
    suspect = (_SUSPECT if isinstance(rows[0][4], (bytes, bytearray)) else _SUSPECT_TEXT).search
    try:
        # Events of other streams (e.g. idempotency keys) and of types this
        # projection does not know are left out; their positions still count.
        items = [
            (stream_id[cut:],
             fast[type_name].decode(data) if type_name in fast and suspect(data) is None
             else _careful(type_name, data, schema_version),
             position, version)
            for position, stream_id, version, type_name, data, schema_version in rows
            if (type_name in fast or knows(type_name)) and stream_id.startswith(RUN_STREAM_PREFIX)
        ]
        problems: list[dict[str, Any]] = []
    except (msgspec.DecodeError, ValueError):
        items, problems = _one_by_one(rows)
    return Page(items, rows[-1][0], len(rows), problems)


# JSON text holds NUL or a surrogate only as a \u escape (raw, neither is valid JSON or UTF-8):
# data without one of those escapes needs no escaping. A search costs about an eighth of
# msgspec's decoding of the same rows (bench: 13 MB of simulated events, 17 ms against 127 ms).
_SUSPECT_TEXT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SUSPECT = re.compile(_SUSPECT_TEXT.pattern.encode())


def _careful(type_name: str, data: str | bytes, schema_version: Any = None) -> Event:
    """One row's data as its event, through ``flows.codec`` (the slow path of ``rows_page``, and
    ``decode_events``). Text holding a NUL or a lone surrogate escape is decoded to JSON values and
    made storable first; the standard library's decoder reads what msgspec's refuses (a lone
    surrogate escape)."""
    version = _version(schema_version)
    suspect = _SUSPECT if isinstance(data, (bytes, bytearray)) else _SUSPECT_TEXT
    if suspect.search(data) is None:  # type: ignore[arg-type]
        return CODEC.decode(type_name, data, version)  # nothing to escape: straight from the text
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        value = json.loads(data, parse_constant=_not_json)
    return CODEC.decode(type_name, storable_value(value), version)



def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_FRAMED = ("SELECT position, {5}, type, {1}, {2} FROM events WHERE position > {0} AND position <= {0} "
           "AND stream_id >= '" + RUN_STREAM_PREFIX + "' AND stream_id < '" + RUN_STREAM_PREFIX[:-1]
           + chr(ord(RUN_STREAM_PREFIX[-1]) + 1) + "' AND type IN ({3}){4} ORDER BY position LIMIT {0}")
# The data of a replay's rows as bytes on both backends: PostgreSQL's text as its UTF-8 bytes (a
# ``bytea`` in binary format: the driver hands it over as it comes, without decoding it into a str;
# msgspec reads the bytes as it reads the text).
_FRAMED_DATA = {**_DATA, "postgresql": "convert_to(data, 'UTF8')"}
# A project's runs, and the runs the read tables do not know yet (launched after the projector's
# checkpoint: the caller filters their frames by project itself).
_OF_PROJECT = (" AND (EXISTS (SELECT 1 FROM flow_runs f WHERE f.run_id = substr(events.stream_id, {1}) "
               "AND f.project_id = {0}) OR NOT EXISTS (SELECT 1 FROM flow_runs f "
               "WHERE f.run_id = substr(events.stream_id, {1})))")


def read_framed(store: EventStore, after: int, upto: int, types: Iterable[str], page: int = 2000, *,
                project_id: str | None = None) -> Iterator[Page]:
    """Pages of the run events in (after, upto] whose type is one of ``types``, decoded as
    ``rows_page`` decodes them (see ``read_framed_rows``: the same rows)."""
    for rows in _framed_pages(store, after, upto, types, page, project_id, "stream_id, version"):
        yield from_recorded(rows) if isinstance(rows[0], RecordedEvent) else rows_page(rows, after)


FramedRow = tuple[int, str, str, Any, Any]
"""A run event as ``read_framed_rows`` hands it over: (position, run id, type, data, schema version).

``data`` is the JSON text (bytes, from both databases: PostgreSQL's text as its UTF-8), or JSON values
(a dict) from a store without a ``database``; the schema version is None where not read (``schema_version_column``).
"""


def read_framed_rows(store: EventStore, after: int, upto: int, types: Iterable[str], page: int = 2000, *,
                     project_id: str | None = None) -> Iterator[Sequence[FramedRow]]:
    """Pages of the run events in (after, upto] whose type is one of ``types``, as rows, not decoded:
    what a stream resuming from a position needs to build its frames (``Framer.encode_rows``).

    The database leaves out every other event (other streams, types that give
    no frame), so they are neither sent over nor decoded. With ``project_id``
    it also leaves out the runs the read tables place in another project
    (``flow_runs``); runs they do not know yet still come, for the caller to
    filter by the project their RunLaunched names. Each page checks a
    connection out of the pool for its one query and gives it back, so a long
    replay holds none between pages. A store without a ``database`` is read
    through ``read_all`` and filtered here (by type only).
    """
    cut = len(RUN_STREAM_PREFIX)
    for rows in _framed_pages(store, after, upto, types, page, project_id, f"substr(stream_id, {cut + 1})"):
        if isinstance(rows[0], RecordedEvent):
            yield [(r.position, r.stream_id[cut:], r.type, r.data, r.metadata.get("schema_version"))
                   for r in rows if r.stream_id.startswith(RUN_STREAM_PREFIX)]
        else:
            yield rows


def _framed_pages(store: EventStore, after: int, upto: int, types: Iterable[str], page: int,
                  project_id: str | None, stream_columns: str) -> Iterator[Sequence[Any]]:
    """The pages of ``read_framed`` (``stream_columns`` after the position) and ``read_framed_rows``;
    ``RecordedEvent``s from a store without a ``database``. Never an empty page."""
    wanted = sorted(set(types) | CODEC.versioned())  # a type an upcaster renames may become a wanted one
    if not isinstance(store, SqlStore):
        records = [r for r in store.read_all(after=after, limit=max(upto - after, 0)) if r.type in wanted]
        for start in range(0, len(records), page):
            yield records[start:start + page]
        return
    database = store.database
    dialect = database.dialect.name
    mark = "%s" if dialect == "postgresql" else "?"
    project = "" if project_id is None else _OF_PROJECT.format(mark, len(RUN_STREAM_PREFIX) + 1)
    sql = _FRAMED.format(mark, _FRAMED_DATA.get(dialect, "data"), schema_version_column(dialect),
                         ", ".join("'" + name.replace("'", "''") + "'" for name in wanted), project,
                         stream_columns)
    params: tuple[Any, ...] = () if project_id is None else (project_id,)
    while after < upto:
        raw = database.raw_connection()
        try:
            cursor = raw.cursor(binary=True) if dialect == "postgresql" else raw.cursor()
            cursor.execute(sql, (after, upto, *params, page))
            rows = cursor.fetchall()
            cursor.close()
            if dialect == "postgresql":
                raw.rollback()
        finally:
            raw.close()
        if not rows:
            return
        yield rows
        if len(rows) < page:
            return
        after = rows[-1][0]


def read_event(type_name: str, data: Any, schema_version: Any, position: int) -> Event | None:
    """One row's event, through ``flows.codec`` (upcasters, text made storable), or None (logged) when
    it does not decode (a type this code does not know is None, not logged): the careful path of a
    reader that decodes row by row (``Framer.encode_rows``)."""
    if not CODEC.knows(type_name):
        return None
    try:
        if isinstance(data, (str, bytes)):
            return _careful(type_name, data, schema_version)
        return convert(type_name, data, _version(schema_version))
    except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
        log.error("cannot read event %d (%s): %s", position, type_name, exc)
        return None


def suspect_search(data: Any) -> Callable[[Any], Any]:
    """The search that finds, in JSON text of ``data``'s kind (bytes or str), an escape of NUL or a
    lone surrogate: the text a reader must make storable before it decodes (``_careful``)."""
    return (_SUSPECT if isinstance(data, (bytes, bytearray)) else _SUSPECT_TEXT).search


_AT = "SELECT position, type, data, {0} FROM events WHERE position IN :positions"
_IN_CHUNK = 900  # bound parameters per IN (...): under SQLite's oldest limit of 999


def read_events(conn: sa.Connection, positions: Iterable[int]) -> dict[int, Event]:
    """The events at these global positions, decoded as a projection decodes them.

    How a query gets what the read tables point at (a run's launch, a
    step's output and prompt, a run's report). Positions that hold no event
    of a known type, or one that does not decode, are left out (and logged).
    """
    wanted = sorted({p for p in positions if p > 0})
    out: dict[int, Event] = {}
    if not wanted:
        return out
    query = sa.text(_AT.format(schema_version_column(conn.dialect.name))).bindparams(
        sa.bindparam("positions", expanding=True))
    for start in range(0, len(wanted), _IN_CHUNK):
        out.update(decode_events(conn.execute(query, {"positions": wanted[start : start + _IN_CHUNK]})))
    return out


def decode_events(rows: Iterable[Sequence[Any]]) -> dict[int, Event]:
    """``(position, type, data, schema version)`` rows of ``events`` as domain events by position
    (see ``read_events``; the version may be None: not read)."""
    out: dict[int, Event] = {}
    for position, type_name, data, schema_version in rows:
        if not CODEC.knows(type_name):
            continue
        try:
            out[position] = _careful(type_name, data, schema_version)
        except (msgspec.DecodeError, ValueError) as exc:
            log.error("projection cannot read event %d (%s): %s", position, type_name, exc)
    return out


def _one_by_one(rows: Sequence[Sequence[Any]]) -> tuple[list[Item], list[dict[str, Any]]]:
    """The slow path of a page holding a row that does not decode: that row becomes a problem."""
    items: list[Item] = []
    problems: list[dict[str, Any]] = []
    for position, stream_id, version, type_name, data, schema_version in rows:
        if not CODEC.knows(type_name) or not stream_id.startswith(RUN_STREAM_PREFIX):
            continue
        try:
            event = _careful(type_name, data, schema_version)
        except (msgspec.DecodeError, ValueError) as exc:  # ValidationError is a DecodeError
            log.error("projection skips event %d (%s): %s", position, type_name, exc)
            problems.append(problem(position, stream_id[len(RUN_STREAM_PREFIX) :], type_name, exc))
            continue
        items.append((stream_id[len(RUN_STREAM_PREFIX) :], event, position, version))
    return items, problems


# A page of the frames the projector kept (``projections.tables.stream_frames``), bounded, in the same
# statement (one snapshot), by the projection's checkpoint at this code's version: the rows up to it
# are all there and no later one is (a rebuild empties the table and the checkpoint together).
_KEPT_BOUND = ("WITH b AS (SELECT {least}({0}, COALESCE((SELECT position FROM projection_checkpoints "
               "WHERE name = {0} AND version = {0}), 0)) AS upto) ")
# SQLite: the page as one row (its count, last position, bodies joined in order, and the bound), joined
# by SQLite, so the sqlite3 module makes one row a page, not one per event: 0.20 s of CPU for 400k rows
# against 0.32 s (and the GIL free while SQLite joins them). The subquery (ORDER BY ... LIMIT: never
# flattened into an aggregate) hands the rows over in position order.
_KEPT_SQLITE = (_KEPT_BOUND.format("?", least="min") + "SELECT count(*), max(p.position), "
                "CAST(group_concat(p.body, '') AS BLOB), (SELECT upto FROM b) FROM "
                "(SELECT position, body FROM stream_frames WHERE position > ? "
                "AND position <= (SELECT upto FROM b){filter} ORDER BY position LIMIT ?) AS p")
# PostgreSQL: the rows (bytea in binary: bytes as they come), the bound on each (one row of nulls when
# there is none). string_agg on the server cost it twice the time of sending the rows (1.1-1.6 s
# against 0.65-0.85 s for 400k), and psycopg's binary rows cost our process about as little.
_KEPT_POSTGRESQL = (_KEPT_BOUND.format("%s", least="LEAST") + "SELECT b.upto, p.position, p.body FROM b "
                    "LEFT JOIN LATERAL (SELECT position, body FROM stream_frames WHERE position > %s "
                    "AND position <= b.upto{filter} ORDER BY position LIMIT %s) AS p ON true ORDER BY p.position")


def read_kept_pages(store: EventStore, after: int, upto: int, name: str, version: int, page: int = 2000, *,
                    project_id: str | None = None) -> Iterator[tuple[bytes, int, int]]:
    """The kept frames of the events in (after, min(upto, the checkpoint)], as pages of
    ``(their SSE bytes joined, the position the page covers up to, the rows the database read)``;
    the last page may be empty (b"") and says where the kept frames end: the events after it are
    not projected yet.

    ``name`` and ``version``: the projection whose checkpoint bounds them; of another version (its
    tables not rebuilt yet) the bound is 0 and nothing is kept. With ``project_id``, only that
    project's rows are read: the others never leave the database.
    Raises what the database raises (no such table: a store of an older version), for the caller
    to read the log instead.
    """
    database = store.database  # type: ignore[attr-defined]
    postgres = database.dialect.name == "postgresql"
    mark = "%s" if postgres else "?"
    where = ""
    params: list[Any] = []
    if project_id is not None:
        where += f" AND project_id = {mark}"
        params.append(project_id)
    sql = (_KEPT_POSTGRESQL if postgres else _KEPT_SQLITE).format(filter=where)
    while True:
        raw = database.raw_connection()
        try:
            cursor = raw.cursor(binary=True) if postgres else raw.cursor()
            cursor.execute(sql, (upto, name, version, after, *params, page))
            if postgres:
                rows = cursor.fetchall()
                bound = rows[0][0]
                if rows[0][1] is None:
                    rows = []
                count = len(rows)
                last: Any = rows[-1][1] if rows else None
                body = b"".join([row[2] for row in rows])
            else:
                count, last, body, bound = cursor.fetchone()
            cursor.close()
            if postgres:
                raw.rollback()
        finally:
            raw.close()
        if count < page:  # the page reaches the bound (or the bound is behind ``after``)
            yield (bytes(body) if body else b""), max(after, bound), count
            return
        yield bytes(body), last, count
        after = last
