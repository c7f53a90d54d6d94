"""One frame hub per app: follows the store once and fans frames out to every stream client.

A thread follows ``store.subscribe(after=head at start)``, turns each
recorded event into durable frames (``projections.frames.Framer``; each
carries ``id`` = the event's global position) and hands every batch to the
event loop with one ``call_soon_threadsafe``; ephemeral frames (``step_delta``,
``plan_delta``) come from the engine's FrameBus the same way. On the loop,
``_dispatch`` copies the frames into each matching client's buffer. So 100
clients cost one store subscription and one thread, not 100.

``observers`` see every batch of recorded events on the hub's thread (the
token index follows the ``auth`` stream this way: no second subscription).

``position`` is the last event whose frames were dispatched (on the loop).
A resuming client (``catch_up``) uses it to know where the store's replay
must stop and the live frames take over, so that it misses nothing and sees
nothing twice (see ``Subscriber.catch_up``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from api.http.delta_order import DeltaOrder
from eventstore import EventStore, RecordedEvent, SqlStore, StoreClosedError
from flows.events import stream_of
from projections.frames import FRAMED_TYPES, Encoded, Framer
from projections.kept_frames import KeptPage
from projections.runner import DEFAULT_NAME
from projections.source import read_framed_rows, read_kept_pages
from projections.tables import PROJECTION_VERSION

log = logging.getLogger(__name__)

Frame = dict[str, Any]
DEFAULT_BUFFER = 2000  # frames a client may fall behind before it is closed (it resumes by id)
BATCH = 500
REPLAY_PAGE = 2000  # events read per query by a stream resuming from a position
PLAN_FRAMES = frozenset({"plan_updated", "plan_delta"})
EPHEMERAL_EVERY_S = 0.01  # deltas are batched for this long: a hundredth of a second nobody reads


class SharedFrame(dict[str, Any]):
    """A live frame as every client gets it: one dict, its encodings made once for all of them.

    ``encoded(name, encode)`` returns ``encode(self)`` computed on first use:
    with 100 clients, a frame is turned into JSON / SSE bytes once, not 100 times.
    """

    __slots__ = ("_encoded",)
    _encoded: dict[str, bytes]

    def encoded(self, name: str, encode: Callable[[Frame], bytes]) -> bytes:
        """``encode(self)``, cached under ``name``."""
        cache: dict[str, bytes] | None = getattr(self, "_encoded", None)
        if cache is None:
            cache = self._encoded = {}
        value = cache.get(name)
        if value is None:
            value = cache[name] = encode(self)
        return value


class Subscriber:
    """One stream client's filter and buffer of frames, fed by the hub on the event loop.

    ``run_id`` / ``project_id`` filter frames (None: all). A client that falls
    ``limit`` frames behind is marked ``overflowed`` and should end its
    stream: the consumer resumes with Last-Event-ID, losing nothing durable,
    and the others are never held up by it.
    """

    def __init__(self, hub: FrameHub, *, run_id: str | None = None, project_id: str | None = None,
                 limit: int = DEFAULT_BUFFER) -> None:
        self.hub = hub
        self.run_id = run_id or None
        self.project_id = project_id or None
        self.limit = limit
        self.buffer: collections.deque[Frame] = collections.deque()
        self.overflowed = False
        self.closed = False
        self.last_id = 0  # id of the last durable frame handed to the consumer
        self.replayed = 0  # durable frames up to this id came from the replay: drop them if live
        self._ready = asyncio.Event()

    def matches(self, frame: Frame) -> bool:
        """Whether ``frame`` passes this client's filters."""
        if self.run_id is not None and frame.get("run_id") != self.run_id:
            return False
        if self.project_id is not None:
            if frame.get("type") in PLAN_FRAMES:
                return True  # the plan is global; it names no project
            if frame.get("project_id") != self.project_id:
                return False
        return True

    def push(self, frames: list[Frame]) -> None:
        """Take the frames that match (on the loop thread; never blocks)."""
        if self.closed or self.overflowed:
            return
        for frame in frames:
            if self.matches(frame):
                self.buffer.append(frame)
        if len(self.buffer) > self.limit:
            self.overflowed = True
            self.buffer.clear()
            # Leave the hub now: a client whose response never started (it went
            # away before the first byte) has no stream loop left to do it.
            self.hub.remove(self)
        if self.buffer or self.overflowed:
            self._ready.set()

    async def replay(self, after: int) -> AsyncIterator[Encoded | KeptPage]:
        """The durable frames after ``after``, read from the store, up to where live ones begin.

        Yields pages of frames already encoded (``read_frames``); it ends once the buffer holds exactly the live
        frames after the replay. The hand-over is exact because, on the loop
        thread, reading ``hub.position`` and emptying the buffer happen with
        no dispatch in between: every event up to that position is replayed,
        every later one arrives live. If the buffer overflows during a long
        replay, the live frames are dropped and the replay simply goes on to
        the hub's new position.
        """
        cursor = max(after, 0)
        while True:
            upto = self.hub.position
            self.buffer = collections.deque(f for f in self.buffer if not _durable_upto(f, upto))
            if self.overflowed and not self.closed:
                self.hub.subscribers.add(self)  # it left on overflow; what it missed is replayed next
            self.overflowed = False
            if cursor >= upto:
                break
            async for frames in self.hub.read_frames(cursor, upto, self.run_id, self.project_id):
                yield frames
            cursor = upto
            if not self.overflowed:
                break
        self.replayed = max(self.replayed, cursor)
        self.last_id = max(self.last_id, cursor)

    async def next_frames(self, timeout: float | None) -> list[Frame] | None:
        """The buffered frames (waiting up to ``timeout`` s for some); [] on timeout; None when
        this client must end (overflowed, or the hub stopped)."""
        if not self.buffer and not self.overflowed and not self.closed:
            self._ready.clear()
            try:
                # asyncio.timeout, not wait_for: no extra task per wake-up, times 100 clients
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        if self.overflowed or self.closed:
            return None
        frames = []
        while self.buffer:
            frame = self.buffer.popleft()
            if not self.matches(frame):  # the filters may have been set after it was buffered
                continue
            fid = frame.get("id")
            if fid is not None:
                if fid <= self.replayed:
                    continue  # the replay gave it already
                self.last_id = fid  # (frames of one event share an id: compare with replayed, not this)
            frames.append(frame)
        return frames

    def close(self) -> None:
        """Stop taking frames and leave the hub."""
        self.closed = True
        self._ready.set()
        self.hub.remove(self)


def _durable_upto(frame: Frame, upto: int) -> bool:
    fid = frame.get("id")
    return fid is not None and fid <= upto


class FrameHub:
    """Follows the store (and the ephemeral frame bus) and fans frames out to Subscribers.

    ``project_of(run_id)`` tells a Framer the project of a run launched before
    it started reading (``ReadModel.run_project``); ``open_projects()`` those of
    every run not ended, learned once as it starts (``ReadModel.open_run_projects``:
    an approval drain of parked runs then asks none). Start it on the running
    loop (``start()``), stop it with ``stop()``.
    """

    def __init__(self, store: EventStore, *, bus: Any = None,
                 project_of: Callable[[str], str | None] | None = None,
                 open_projects: Callable[[], Mapping[str, str]] | None = None,
                 buffer: int = DEFAULT_BUFFER,
                 observers: Iterable[Callable[[list[RecordedEvent]], None]] = (),
                 kept: tuple[str, int] | None = (DEFAULT_NAME, PROJECTION_VERSION)) -> None:
        self.store = store
        # The projection (name, version) whose kept frames a resume reads up to its checkpoint
        # (``projections.tables.stream_frames``); None: every replay decodes and frames the log.
        self.kept = kept if isinstance(store, SqlStore) else None
        self.open_projects = open_projects
        self.observers = list(observers)
        self.bus = bus
        self.project_of = project_of
        self.buffer = buffer
        self.position = 0
        self.subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscription: Any = None
        self._unsubscribe_bus: Callable[[], None] | None = None
        self._ephemeral: list[Frame] = []
        self._ephemeral_lock = threading.Lock()
        self._ephemeral_scheduled = False

    def start(self) -> FrameHub:
        """Begin following from the store's head (no replay: clients ask for their own)."""
        self._loop = asyncio.get_running_loop()
        self._order = DeltaOrder(self._loop, lambda frames: self._dispatch(frames, None))
        self.position = self.store.head()
        self._subscription = self.store.subscribe(after=self.position)
        self._thread = threading.Thread(target=self._follow, args=(self.position,), name="baton-frame-hub",
                                        daemon=True)
        self._thread.start()
        if self.bus is not None:
            self._unsubscribe_bus = self.bus.subscribe(self._on_bus_frame)
        return self

    def stop(self) -> None:
        """Stop following and end every client's stream."""
        self._stopping.set()
        if self._unsubscribe_bus is not None:
            self._unsubscribe_bus()
        if self._subscription is not None:
            self._subscription.close()
        if self._thread is not None:
            self._thread.join(5)
        self.end_streams()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the hub serves (None before ``start``)."""
        return self._loop

    def end_streams(self) -> None:
        """End every client's stream (on the loop): the server is going away, they resume elsewhere."""
        for subscriber in list(self.subscribers):
            subscriber.close()

    def subscribe(self, *, run_id: str | None = None, project_id: str | None = None) -> Subscriber:
        """A new client, receiving live frames from now on (call on the loop)."""
        subscriber = Subscriber(self, run_id=run_id, project_id=project_id, limit=self.buffer)
        self.subscribers.add(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        """Forget a client (idempotent)."""
        self.subscribers.discard(subscriber)

    async def read_frames(self, after: int, upto: int, run_id: str | None,
                          project_id: str | None = None) -> AsyncIterator[Encoded | KeptPage]:
        """Durable frames of the events in (after, upto] that pass the filters, a page at a time
        (never an empty one): those the projector kept, up to its checkpoint, then the log's.

        The frames of the events the projection has applied come as it kept them
        (``projections.tables.stream_frames``: each page one query, with ``project_id`` only that
        project's rows), each page read in the same snapshot as the checkpoint that bounds it; the
        events after that bound (not projected yet), or all of them when the store keeps no frames of
        this code's version (tables of an older version, not rebuilt yet), are read from the log and
        framed (``read_log_frames``). So is one run's (``run_id``): its stream is a few dozen
        events, read by the log's own index.
        """
        if self.kept is not None and run_id is None and after < upto:
            name, version = self.kept
            pages = read_kept_pages(self.store, after, upto, name, version, REPLAY_PAGE, project_id=project_id)
            loop = asyncio.get_running_loop()
            fetching = loop.run_in_executor(None, _next_or_error, pages)
            try:
                while True:
                    got = await fetching
                    if isinstance(got, BaseException):  # no such table (an older store), the database away
                        log.info("stream replay: kept frames unread after %d (%s: %s); reading the log",
                                 after, type(got).__name__, got)
                        break
                    if got is None:
                        break
                    fetching = loop.run_in_executor(None, _next_or_error, pages)
                    body, after, _ = got
                    if body:
                        yield KeptPage(body, after)
            finally:
                fetching.cancel()
        if after < upto:
            async for page in self.read_log_frames(after, upto, run_id, project_id):
                yield page

    async def read_log_frames(self, after: int, upto: int, run_id: str | None,
                              project_id: str | None = None) -> AsyncIterator[Encoded]:
        """Durable frames of the events in (after, upto] that pass the filters, read from the store
        and encoded in a worker thread, a page at a time (never an empty one).

        With ``run_id``, only that run's stream is read (not the whole log).
        Otherwise the database hands over only the events that give frames
        (``projections.source.read_framed_rows``: run streams, ``FRAMED_TYPES``;
        with ``project_id``, not the runs the read tables place in another
        project). Each page is decoded, framed and encoded to JSON in the
        worker thread (``Framer.encode_rows``: the frames' dicts are never built;
        runs launched after the projector's checkpoint come whatever their
        project, and are filtered there): the loop only hands the bytes on.
        """
        framer = Framer(self.project_of)
        if run_id:
            pages = _pages(self._run_records(run_id, after, upto), upto)

            def next_run_page() -> Encoded | None:
                page = next(pages, None)
                return None if page is None else framer.encode_records(page, project_id)

            while (encoded := await asyncio.to_thread(next_run_page)) is not None:
                if encoded:
                    yield encoded
            return
        source = read_framed_rows(self.store, after, upto, FRAMED_TYPES, REPLAY_PAGE,
                                  project_id=project_id if self.project_of is not None else None)

        # The next page's query runs while this one is encoded: the database's
        # work (and, on PostgreSQL, the wait for it, the GIL free) overlaps ours.
        loop = asyncio.get_running_loop()
        fetching = loop.run_in_executor(None, next, source, None)
        try:
            while (rows := await fetching) is not None:
                fetching = loop.run_in_executor(None, next, source, None)
                encoded = await loop.run_in_executor(None, framer.encode_rows, rows, project_id)
                if encoded:
                    yield encoded
        finally:
            fetching.cancel()  # a consumer that stopped: a read under way ends on its own, unread

    def _run_records(self, run_id: str, after: int, upto: int) -> Iterable[RecordedEvent]:
        return (r for r in self.store.read_stream(stream_of(run_id)) if after < r.position <= upto)

    # -- the thread and the loop ------------------------------------------------------------------

    def _on_bus_frame(self, frame: Frame) -> None:
        # Deltas come in bursts from several step threads. They are handed to
        # the loop in batches, at most one per EPHEMERAL_EVERY_S: with 100
        # clients, each batch costs every client a wake-up and a socket write.
        loop = self._loop
        if loop is None or self._stopping.is_set():
            return
        with self._ephemeral_lock:
            self._ephemeral.append(frame)
            if self._ephemeral_scheduled:
                return
            self._ephemeral_scheduled = True
        try:
            loop.call_soon_threadsafe(loop.call_later, EPHEMERAL_EVERY_S, self._flush_ephemeral)
        except RuntimeError:  # the loop closed: the app is shutting down
            pass

    def _flush_ephemeral(self) -> None:
        with self._ephemeral_lock:
            frames, self._ephemeral = self._ephemeral, []
            self._ephemeral_scheduled = False
        if frames:
            self._dispatch(frames, None)

    def _dispatch(self, frames: list[Frame], position: int | None) -> None:
        if position is not None:
            # Deltas published before this event was appended go out before it.
            self._flush_ephemeral()
            self.position = position
            frames = self._order.durable(frames)
        else:
            frames = [f for f in frames if self._order.ephemeral(f)]
        if not frames or not self.subscribers:
            return
        frames = [SharedFrame(f) for f in frames]
        for subscriber in list(self.subscribers):
            subscriber.push(frames)

    def _observe(self, records: list[RecordedEvent]) -> None:
        """Hand the batch to each observer (on this thread); one that fails is logged, never stops the hub."""
        for observe in self.observers:
            try:
                observe(records)
            except Exception:
                log.warning("frame hub: an observer failed on events up to position %d", records[-1].position,
                            exc_info=True)

    def _follow(self, position: int) -> None:
        framer = Framer(self.project_of)
        if self.open_projects is not None:  # the runs not ended: one read now, not one per run as each moves
            try:
                framer.learn(self.open_projects())
            except Exception:  # the read tables are missing or away: project_of answers run by run
                log.warning("frame hub: the projects of open runs could not be read", exc_info=True)
        subscription = self._subscription
        delay = 0.5
        while not self._stopping.is_set():
            try:
                first = subscription.next_event(timeout=1.0)
                if first is None:
                    continue
                records = [first]
                while len(records) < BATCH:
                    more = subscription.next_event(timeout=0)
                    if more is None:
                        break
                    records.append(more)
                self._observe(records)
                frames = [f for rec in records for f in framer.frames(rec)]
                position = records[-1].position
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._dispatch, frames, position)
                delay = 0.5
            except StoreClosedError:
                return
            except RuntimeError:  # the loop closed under us: the app is shutting down
                if self._stopping.is_set() or (self._loop is not None and self._loop.is_closed()):
                    return
                raise
            except Exception:
                # The database went away: resubscribe from the last position handed out.
                log.warning("frame hub: reading the store failed; retrying in %.1f s", delay, exc_info=True)
                subscription.close()
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 10.0)
                try:
                    subscription = self._subscription = self.store.subscribe(after=position)
                except StoreClosedError:
                    return


def _next_or_error(pages: Iterator[Any]) -> Any:
    """The next item of ``pages`` (None at the end), or the exception reading it raised."""
    try:
        return next(pages, None)
    except Exception as exc:
        return exc


def _pages(records: Iterable[RecordedEvent], upto: int, size: int = BATCH) -> Iterator[list[RecordedEvent]]:
    page: list[RecordedEvent] = []
    for rec in records:
        if rec.position > upto:
            break
        page.append(rec)
        if len(page) >= size:
            yield page
            page = []
    if page:
        yield page
