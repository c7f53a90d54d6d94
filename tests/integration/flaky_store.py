"""A real store that refuses its next few appends, as a database restart would."""

from __future__ import annotations

import threading
from typing import Any

from eventstore import StoreUnavailableError


class FlakyStore:
    """Wraps an event store; ``fail_next(n)`` makes the next ``n`` appends raise."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._failures = 0
        self._lock = threading.Lock()
        self.refused = 0

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._failures = n

    def append(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._failures:
                self._failures -= 1
                self.refused += 1
                raise StoreUnavailableError("the database is restarting (injected by the test)")
        return self._store.append(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
