"""``baton serve`` seals the log on a timer and at shutdown (DESIGN §13, ``BATON_SEAL_INTERVAL_S``).

Each seal is printed (stderr) and logged, so whatever keeps the server's
output keeps the seals outside the database. A seal is skipped when nothing
was appended since the last one: an idle server does not grow its log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from eventstore import EventStore, Seal, StoreError
from eventstore.seal import LogDigest

log = logging.getLogger("baton.seal")


class Sealer:
    """A thread sealing ``store`` every ``interval_s`` seconds (none when 0); ``stop()`` seals once more.

    ``on_seal`` gets each seal made (the server prints it). A seal that fails
    (the store away) is logged and tried again at the next tick.
    """

    def __init__(self, store: EventStore, interval_s: float, on_seal: Callable[[Seal], None]) -> None:
        self._store = store
        self._interval_s = interval_s
        self._on_seal = on_seal
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # one seal at a time: the timer's and the last one
        self._sealed_head: int | None = None  # the head just after our last seal
        self._digest: LogDigest | None = None  # the log read so far: each seal reads only what is new
        self._thread = threading.Thread(target=self._run, name="baton-sealer", daemon=True)

    def start(self) -> Sealer:
        """Start the thread: it reads the log so far (so the shutdown seal has little left to read), then ticks."""
        self._thread.start()
        return self

    def seal_now(self) -> Seal | None:
        """Seal the log when it grew since the last seal; the seal, or None when there was nothing new."""
        with self._lock:
            head = self._store.head()
            if head == 0 or head == self._sealed_head:
                return None
            if self._digest is None:
                self._digest = self._store.digest_log()
            seal = self._store.seal(self._digest)  # reads the rows after the digest, and moves it on
            self._sealed_head = self._store.head()
        self._on_seal(seal)
        return seal

    def stop(self, seal: bool = True) -> Seal | None:
        """End the timer and, unless ``seal`` is false, seal once more (the shutdown seal); that seal, or None."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if not seal:
            return None
        try:
            return self.seal_now()
        except StoreError as exc:
            log.warning("the log could not be sealed at shutdown: %s", exc)
            return None

    def _run(self) -> None:
        try:
            with self._lock:
                self._digest = self._store.digest_log(self._digest)
        except StoreError as exc:  # the first seal reads the whole log instead
            log.warning("could not read the log ahead of the first seal: %s", exc)
        if self._interval_s <= 0:
            return
        while not self._stopping.wait(self._interval_s):
            try:
                self.seal_now()
            except StoreError as exc:  # the store is away: the next tick tries again
                log.warning("the log could not be sealed (trying again in %.0f s): %s", self._interval_s, exc)
