"""The hash chain of a stream: how each event's hash is made and how it is checked.

Each event's hash is ``sha256(previous hash of its stream + type + data)`` in
hex, with ``""`` as the previous hash of version 1 and ``data`` the JSON text
exactly as stored. The PostgreSQL append function computes the same digest in
SQL (see ``eventstore.postgres``); ``verify`` recomputes it here, so the two
implementations check each other.

A chain detects any edited, removed or reordered event *inside* a stream.
It cannot detect that the newest events of a stream were cut off (nothing
follows them to break); comparing a stream's head hash with one kept
elsewhere closes that gap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

# Columns ChainVerifier.feed expects, in this order; rows must come sorted by
# (stream_id, version).
VERIFY_COLUMNS = ("stream_id", "version", "position", "type", "data", "hash")


def event_hash(previous_hash: str, type_: str, data: str) -> str:
    """The chained hash of one event (hex sha256)."""
    return hashlib.sha256((previous_hash + type_ + data).encode()).hexdigest()


class ChainVerifier:
    """Checks rows in (stream_id, version) order and collects human-readable problems.

    Feed it any number of pages, then read ``problems``. It keeps one stream's
    state at a time, so memory does not grow with the log.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked = 0
        self._stream: str | None = None
        self._version = 0
        self._position = 0
        self._hash = ""

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        """Check a page of rows (``VERIFY_COLUMNS`` order, sorted by stream then version)."""
        for stream_id, version, position, type_, data, stored_hash in rows:
            self.checked += 1
            if stream_id != self._stream:
                self._stream, self._version, self._position, self._hash = stream_id, 0, 0, ""
            where = f"stream {stream_id!r} version {version} (position {position})"
            chain_known = True
            if version != self._version + 1:
                chain_known = False
                first_missing = self._version + 1
                missing = (
                    f"version {first_missing}"
                    if version - 1 == first_missing
                    else f"versions {first_missing}..{version - 1}"
                )
                self.problems.append(
                    f"removed: {missing} of stream {stream_id!r} missing before "
                    f"position {position}; the hash chain is broken at {where}"
                )
            if position <= self._position:
                self.problems.append(
                    f"reordered: {where} was recorded before version {self._version} "
                    f"(position {self._position}) of the same stream"
                )
            if chain_known and event_hash(self._hash, type_, data) != stored_hash:
                self.problems.append(
                    f"edited: {where} does not match its hash; its type or data was "
                    f"changed after it was recorded (or the previous event's hash was)"
                )
            self._version, self._position, self._hash = version, position, stored_hash
