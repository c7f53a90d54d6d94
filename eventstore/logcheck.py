"""``verify()`` of the whole log in the same read as another reader of it, in position order.

``SqlEventStore.verify`` reads the log several times: once in ``(stream_id,
version)`` order for the hash chains, once more in position order for the
seals, plus a scan for the first keyed hash and (SQLite) one for holes in
the positions. ``LogCheck`` takes the rows a reader of the whole log already
has in hand (``baton replay --verify``'s fold) and finds the same problems,
worded and ordered as ``verify`` words and orders them:

- the hash chains, with one running state per stream in flight (its last
  version, hash and scheme). A stream whose rows, in position order, do not
  follow on cleanly (a version missing, a hash that does not match, a weaker
  scheme, an unkeyed hash after the log was keyed) is set aside and checked
  again at the end by ``ChainVerifier`` over its own rows in version order,
  so its problems read exactly as ``verify`` writes them. A stream clean in
  position order is clean in version order: ``(stream_id, version)`` is
  unique and each version follows the one before;
- a stream the reader says has ended (``let_go``: a run that ended) drops
  its state; a row of it after that sets it aside too (an intact log has
  none), so memory follows the streams in flight, not the log;
- on SQLite, holes in the positions; every seal, recorded or given
  (``eventstore.seal.SealCheck`` fed the same rows).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from eventstore.chain import FULL, KEYED, LEGACY, Chain, ChainVerifier, hash_version
from eventstore.chain import _message as _message
from eventstore.seal import SEAL_STREAM, Seal, SealCheck, check_recorded, recorded_seals

# What ``feed`` takes: rows in this column order (eventstore.seal.DIGEST_COLUMNS), sorted by position.
ROW_COLUMNS = ("position", "event_id", "stream_id", "version", "type", "data", "metadata", "recorded_at", "hash")

_sha256 = hashlib.sha256


class LogCheck:
    """Checks the whole log as it streams by in position order; ``finish`` gives what ``verify`` gives.

    ``holes``: positions are 1, 2, 3, ... with none missing (SQLite's; a
    PostgreSQL sequence leaves holes that prove nothing). ``seals``: the
    seals to check, as ``recorded_seals`` labels them, with ``seal_problems``
    found while reading them (see ``for_store``).
    """

    def __init__(self, chain: Chain, *, holes: bool, seals: list[tuple[str, Seal]] | None = None,
                 seal_problems: list[str] | None = None) -> None:
        self._chain = chain
        self._holes = holes
        self._gaps: list[str] = []
        self._last = 0  # the position of the last row fed
        self._first = 0  # the position of the first row fed
        self._keyed_since: int | None = None  # the first keyed hash's position (the log's keyed from there)
        # stream -> (version, hash, scheme, keyed events of it that could not be checked)
        self._streams: dict[str, tuple[int, str, int, int]] = {}
        self._gone: set[str] = set()  # streams let go (their run ended)
        self._aside: set[str] = set()  # streams to check again in version order
        self._unchecked = 0  # keyed events of clean streams that need the key we lack
        self._seal_problems = seal_problems or []
        self._seals = SealCheck(chain, seals) if seals else None
        self._seal_head = max((seal.head for _, seal in seals), default=0) if seals else 0

    @classmethod
    def for_store(cls, store: Any, seal: Seal | None = None) -> LogCheck:
        """A check of ``store``'s whole log (an SqlEventStore) and of ``seal`` (kept outside the database).

        Reads the seal stream now, as ``verify`` reads it; raises what ``read_stream`` raises.
        """
        problems: list[str] = []
        recorded = recorded_seals(store.read_stream(SEAL_STREAM), problems)
        seals = list(recorded)
        if seal is not None:
            seals.append(("the seal given", seal))
            problems += check_recorded(seal, recorded)
        return cls(store.chain, holes=store.dialect == "sqlite", seals=seals, seal_problems=problems)

    def feed(self, rows: Sequence[Sequence[Any]]) -> None:
        """Check a page of rows (``ROW_COLUMNS`` order, sorted by position, following the last page)."""
        if not rows:
            return
        streams, gone, aside, chain = self._streams, self._gone, self._aside, self._chain
        keyed_since, last = self._keyed_since, self._last
        holes = self._holes
        for row in rows:
            position, event_id, stream_id, version, type_, data, metadata, recorded_at, stored = row
            if holes and position != last + 1:
                if last:
                    self._gaps.append(f"positions {last + 1}..{position - 1} are missing: events were "
                                      f"removed from the log")
                else:
                    self._first = position
            last = position
            if keyed_since is None and stored.startswith("3:"):
                keyed_since = self._keyed_since = position
            if stream_id in aside:
                continue
            state = streams.get(stream_id)
            if state is None:
                if version != 1 or stream_id in gone:
                    self._set_aside(stream_id)
                    continue
                previous, previous_scheme, unchecked = "", 0, 0
            else:
                if version != state[0] + 1:
                    self._set_aside(stream_id)
                    continue
                _, previous, previous_scheme, unchecked = state
            # The two unkeyed schemes inline (hash_version's tests, in its order); the rest through the chain.
            if len(stored) == 64 and ":" not in stored:
                scheme = LEGACY
                matches = previous_scheme <= LEGACY and (keyed_since is None or position <= keyed_since) and (
                    _sha256((previous + type_ + data).encode()).hexdigest() == stored)
            elif len(stored) == 66 and stored[:2] == "2:":
                scheme = FULL
                matches = previous_scheme <= FULL and (keyed_since is None or position <= keyed_since) and (
                    _sha256(_message(previous, event_id, stream_id, version, type_, data, metadata,
                                     recorded_at)).hexdigest() == stored[2:])
            else:
                scheme = hash_version(stored)
                if (scheme and scheme < previous_scheme) or (
                        scheme < KEYED and keyed_since is not None and position > keyed_since):
                    matches = False
                else:
                    expected = chain.expected(stored, previous, event_id, stream_id, version, type_, data,
                                              metadata, recorded_at)
                    if expected is None:  # keyed, and we have no key: counted, as verify counts it
                        unchecked += 1
                        self._unchecked += 1
                        matches = True
                    else:
                        matches = expected == stored
            if not matches:
                self._set_aside(stream_id)
                continue
            streams[stream_id] = (version, stored, scheme if scheme > previous_scheme else previous_scheme,
                                  unchecked)
        self._last = last
        if self._seals is not None and rows[0][0] <= self._seal_head:
            self._seals.feed(rows if rows[-1][0] <= self._seal_head else
                             [row for row in rows if row[0] <= self._seal_head])

    def let_go(self, stream_id: str) -> None:
        """The stream has ended (its run did): forget its chain; a row of it after this is a problem to look at."""
        if self._streams.pop(stream_id, None) is not None:
            self._gone.add(stream_id)

    def _set_aside(self, stream_id: str) -> None:
        self._aside.add(stream_id)
        state = self._streams.pop(stream_id, None)
        if state is not None:
            self._unchecked -= state[3]

    def finish(self, stream_rows: Callable[[str], Iterable[Sequence[Sequence[Any]]]]) -> list[str]:
        """Every problem, as ``verify()`` of the whole log gives them (same words, same order).

        ``stream_rows(stream_id)``: the pages of one stream's rows in
        ``eventstore.chain.VERIFY_COLUMNS`` order, by version (for the streams
        set aside, checked again as ``verify`` checks them).
        """
        checker = ChainVerifier(self._chain, self._keyed_since)
        for stream_id in sorted(self._aside):  # verify reads streams in this order (binary collation)
            for page in stream_rows(stream_id):
                checker.feed(page)
        checker.keyed_unchecked += self._unchecked
        problems = checker.finish()
        if self._holes:
            problems += self._gaps
            if self._first > 1:  # verify's query gives the hole before the first position last
                problems.append(f"positions 1..{self._first - 1} are missing: events were removed from the log")
        if self._seals is None:
            return problems + self._seal_problems
        return problems + self._seals.finish() + self._seal_problems

    @property
    def set_aside(self) -> int:
        """How many streams were checked again on their own (0 for an intact log)."""
        return len(self._aside)



_LOG_ROWS = f"SELECT {', '.join(ROW_COLUMNS)} FROM events ORDER BY position"
_STREAM_ROWS = ("SELECT stream_id, version, position, type, data, hash, event_id, metadata, recorded_at FROM events"
                " WHERE stream_id = {0} ORDER BY version")
PAGE = 2000  # rows per fetch


def log_pages(store: Any, page: int = PAGE) -> Iterator[list[tuple[Any, ...]]]:
    """Every row of ``store``'s log (an SqlEventStore) in ``ROW_COLUMNS`` order, by position, ``page`` at a time.

    One query on one connection, read as it goes: one snapshot of the log,
    no query planned per page. On PostgreSQL a server-side cursor, read a
    page ahead by a thread of its own, so the server produces the next page
    while the caller works on this one (the thread waits on the socket
    without the GIL); at most two pages wait.
    """
    if store.dialect == "postgresql":
        return _read_ahead(_pages(store, page))
    return _pages(store, page)


def _pages(store: Any, page: int) -> Iterator[list[tuple[Any, ...]]]:
    raw = store.database.raw_connection()
    try:
        driver = raw.driver_connection
        if store.dialect == "postgresql":
            cursor = driver.cursor(name="baton_log_check", binary=True)  # binary: cheaper numbers
            cursor.itersize = page
        else:
            cursor = driver.cursor()
        try:
            cursor.execute(_LOG_ROWS)
            while True:
                rows = cursor.fetchmany(page)
                if rows:
                    yield rows
                if len(rows) < page:
                    return
        finally:
            cursor.close()
            if store.dialect == "postgresql":
                driver.rollback()
    finally:
        raw.close()


_END = object()


def _read_ahead(pages: Iterator[list[tuple[Any, ...]]], depth: int = 2) -> Iterator[list[tuple[Any, ...]]]:
    """``pages``, read by a thread up to ``depth`` pages ahead of the caller; its errors are raised here."""
    ahead: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for rows in pages:
                if stop.is_set():
                    break
                ahead.put(rows)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            ahead.put(exc)
        else:
            ahead.put(_END)
        finally:
            getattr(pages, "close", lambda: None)()

    reader = threading.Thread(target=read, name="baton-log-read-ahead", daemon=True)
    reader.start()
    try:
        while (item := ahead.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while reader.is_alive():  # the caller stopped early: unblock the reader, let it close its cursor
            try:
                ahead.get(timeout=0.05)
            except queue.Empty:
                pass
        reader.join()


def stream_pages(store: Any, stream_id: str) -> Iterator[list[tuple[Any, ...]]]:
    """One stream's rows in ``eventstore.chain.VERIFY_COLUMNS`` order, by version (what ``LogCheck.finish`` takes)."""
    sql = _STREAM_ROWS.format("%s" if store.dialect == "postgresql" else "?")
    raw = store.database.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()
        cursor.execute(sql, (stream_id,))
        while rows := cursor.fetchmany(PAGE):
            yield rows
        cursor.close()
        if store.dialect == "postgresql":
            raw.driver_connection.rollback()
    finally:
        raw.close()
