"""Time for the actors: ``now()`` and ``call_later``, injectable for tests.

Timers are how retries fall due, attempts time out and stalls are noticed;
they are never used to poll for work. ``RealClock`` runs every timer on one
thread; ``ManualClock`` fires timers only when a test advances it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Timer(Protocol):
    """A scheduled call that may still be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What actors need of time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        """Call ``fn`` (on the clock's thread) after ``delay_s`` seconds."""
        ...


def _nothing() -> None:
    pass


class _Entry:
    __slots__ = ("due", "fn", "cancelled")

    def __init__(self, due: float, fn: Callable[[], None]) -> None:
        self.due = due
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = _nothing  # drop the closure now: a cancelled 15-minute timeout must not pin its actor


def _fire(entry: _Entry) -> None:
    try:
        entry.fn()
    except Exception:  # a timer callback must not kill the clock thread; say so loudly
        log.exception("timer callback failed")


class RealClock:
    """Wall-clock time; one daemon thread fires every due timer."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def now(self) -> float:
        return time.time()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        entry = _Entry(time.monotonic() + max(0.0, delay_s), fn)
        with self._cond:
            heapq.heappush(self._heap, (entry.due, next(self._seq), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="baton-clock", daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry

    def stop(self) -> None:
        """Drop every pending timer and end the thread."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, entry = heapq.heappop(self._heap)
            if not entry.cancelled:
                _fire(entry)


class ManualClock:
    """A clock for tests: time moves only when ``advance`` is called.

    Due timers fire inside ``advance``, in due order, on the caller's thread.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Timer:
        with self._lock:
            entry = _Entry(self._now + max(0.0, delay_s), fn)
            heapq.heappush(self._heap, (entry.due, next(self._seq), entry))
        return entry

    def pending(self) -> int:
        """How many timers are waiting (cancelled ones excluded)."""
        with self._lock:
            return sum(not e.cancelled for _, _, e in self._heap)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due on the way."""
        with self._lock:
            target = self._now + seconds
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > target:
                    self._now = target
                    return
                due, _, entry = heapq.heappop(self._heap)
                self._now = max(self._now, due)
            if not entry.cancelled:
                _fire(entry)
