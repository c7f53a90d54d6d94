"""In-process publish/subscribe for ephemeral frames (token deltas, plan updates).

Durable frames come from the store; these never touch it. A subscriber's
callback runs on the publisher's thread, so it must only hand the frame over
(put it on a queue, ``loop.call_soon_threadsafe``) and return.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Frame = dict[str, Any]


class FrameBus:
    """Fan ephemeral frames out to every subscriber in this process."""

    def __init__(self) -> None:
        self._subscribers: dict[int, Callable[[Frame], None]] = {}
        self._lock = threading.Lock()
        self._next = 0

    def subscribe(self, fn: Callable[[Frame], None]) -> Callable[[], None]:
        """Call ``fn(frame)`` for every published frame; returns the unsubscribe function."""
        with self._lock:
            key = self._next
            self._next += 1
            self._subscribers[key] = fn

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    def publish(self, frame: Frame) -> None:
        """Hand ``frame`` to every subscriber; one failing subscriber does not stop the others."""
        with self._lock:
            subscribers = list(self._subscribers.values())
        for fn in subscribers:
            try:
                fn(frame)
            except Exception:
                log.exception("frame subscriber failed; frame %s dropped for it", frame.get("type"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._subscribers)
