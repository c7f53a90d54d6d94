"""The seal: a hash over the whole log up to a position, kept inside and outside it.

The hash chains catch an edit inside a stream, but not events cut from the
end of a stream, a whole stream removed, or a stream rewritten by someone who
recomputed its hashes. A seal closes those gaps (DESIGN §13): ``SqlEventStore.seal``
reads every row up to the head in position order, hashes them all (every
column, the position included) into one digest, appends a ``LogSealed`` event
holding (head, number of events, digest) to the ``seal`` stream, and returns
the seal as one line of text to keep elsewhere (a ticket, a chat, a printout).

``verify(seal=...)`` computes the digest again as it reads the log once more
in position order: any row up to the seal's head edited, removed, added or
renumbered changes it, a log that now ends before the head was cut, and a
seal event gone from the log was removed. The seal events recorded in the log
are checked on the same pass, but only a seal kept outside the database
bounds what someone who can write the database can hide; with the chain key
(``Chain(key)``) the digests are HMACs, which such a person cannot forge.

Reading is paged, so memory stays flat however long the log.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from eventstore.chain import FULL, KEYED, Chain

SEAL_STREAM = "seal"
SEAL_TYPE = "LogSealed"
# Columns DigestCheck.feed expects, in this order, rows sorted by position.
DIGEST_COLUMNS = (
    "position", "event_id", "stream_id", "version", "type", "data", "metadata", "recorded_at", "hash",
)
_SEAL_TEXT = re.compile(r"^baton-seal:(\d+):(\d+):([23]:[0-9a-f]{64})$")
_row_encoder = msgspec.json.Encoder()


class Seal(msgspec.Struct, frozen=True):
    """The log up to ``head`` held ``events`` events whose digest was ``digest`` (``2:``/``3:`` + hex)."""

    head: int
    events: int
    digest: str

    def __str__(self) -> str:
        return f"baton-seal:{self.head}:{self.events}:{self.digest}"

    @classmethod
    def parse(cls, text: str) -> Seal:
        """A seal from the line ``baton seal`` printed; ValueError saying what is wrong with it."""
        found = _SEAL_TEXT.match(text.strip())
        if found is None:
            raise ValueError(
                f"not a seal: {text.strip()[:100]!r}; a seal looks like baton-seal:HEAD:EVENTS:2:<64 hex digits> "
                f"(as `baton seal` printed it)"
            )
        return cls(int(found[1]), int(found[2]), found[3])

    @property
    def keyed(self) -> bool:
        """Whether the digest is an HMAC under the chain key."""
        return self.digest.startswith("3:")


def seal_data(seal: Seal) -> dict[str, Any]:
    """The data of the LogSealed event recording ``seal``."""
    return {"head": seal.head, "events": seal.events, "digest": seal.digest}


def seal_of(data: Any) -> Seal:
    """The seal a LogSealed event's data records; ValueError when it is not one."""
    try:
        return msgspec.convert(data, Seal)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a seal: {exc}") from None


def _row_bytes(row: Sequence[Any]) -> bytes:
    position, event_id, stream_id, version, type_, data, metadata, recorded_at, hash_ = row
    return _row_encoder.encode(
        [position, event_id, stream_id, version, type_, data, metadata, float(recorded_at), hash_]
    ) + b"\n"


class LogDigest:
    """The running digest of rows in position order, under each scheme it can compute."""

    def __init__(self, chain: Chain) -> None:
        self.events = 0
        self.last = 0  # the position of the last row fed
        self.head = 0  # the head it was read up to (rows may be missing at the end: PostgreSQL's holes)
        self._digests = {FULL: chain.running_digest(FULL)}
        keyed = chain.running_digest(KEYED)
        if keyed is not None:
            self._digests[KEYED] = keyed

    def feed(self, row: Sequence[Any]) -> None:
        """Add one row (``DIGEST_COLUMNS`` order)."""
        line = _row_bytes(row)
        for digest in self._digests.values():
            digest.update(line)
        self.events += 1
        self.last = row[0]

    def feed_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add a page of rows (``DIGEST_COLUMNS`` order, sorted by position)."""
        for row in rows:
            self.feed(row)

    def value(self, scheme: int) -> str | None:
        """The digest so far under ``scheme`` ("2:..." or "3:..."); None without the key for 3."""
        digest = self._digests.get(scheme)
        return None if digest is None else f"{scheme}:{digest.copy().hexdigest()}"


class SealCheck:
    """Checks seals while the log streams by in position order; collects problems.

    ``seals`` are (label, seal) pairs: the seal given on the command line and
    every LogSealed event of the log.
    """

    def __init__(self, chain: Chain, seals: Iterable[tuple[str, Seal]]) -> None:
        self.problems: list[str] = []
        self.unverified = 0
        self.digest = LogDigest(chain)
        self._waiting = sorted(seals, key=lambda labelled: labelled[1].head)

    def feed(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add a page of rows (``DIGEST_COLUMNS`` order, sorted by position)."""
        for row in rows:
            while self._waiting and row[0] > self._waiting[0][1].head:
                self._settle(*self._waiting.pop(0))
            self.digest.feed(row)

    def finish(self) -> list[str]:
        """Settle the seals whose head the log never passed, and return every problem."""
        for label, seal in self._waiting:
            if self.digest.last < seal.head:
                self.problems.append(
                    f"cut: {label} covers the log up to position {seal.head} ({seal.events} events then, "
                    f"{self.digest.events} now), but the last event up to there is at position "
                    f"{self.digest.last}: events were removed from the end of what it covers"
                )
            else:
                self._settle(label, seal)
        self._waiting = []
        if self.unverified:
            self.problems.append(f"unverified: {self.unverified} keyed seal(s) need the chain key "
                                 f"(BATON_CHAIN_KEY_FILE) to be checked")
        return self.problems

    def _settle(self, label: str, seal: Seal) -> None:
        now = self.digest.value(KEYED if seal.keyed else FULL)
        if now is None:
            self.unverified += 1
        elif not hmac.compare_digest(now, seal.digest):
            self.problems.append(
                f"sealed: the log up to position {seal.head} does not match {label} ({seal.events} events then, "
                f"{self.digest.events} now): events at or before it were edited, removed, added or renumbered "
                f"after it was sealed"
            )


def recorded_seals(records: Iterable[Any], problems: list[str]) -> list[tuple[str, Seal]]:
    """The seals the log's LogSealed events hold (records of the seal stream), labelled by position."""
    out = []
    for rec in records:
        if rec.type != SEAL_TYPE:
            continue
        try:
            out.append((f"the seal recorded at position {rec.position}", seal_of(rec.data)))
        except ValueError as exc:
            problems.append(f"stream {SEAL_STREAM!r} version {rec.version} (position {rec.position}): {exc}")
    return out


def check_recorded(given: Seal, recorded: list[tuple[str, Seal]]) -> list[str]:
    """The given seal must also be in the log: a missing seal event was removed."""
    if any(seal == given for _, seal in recorded):
        return []
    return [(f"cut: the seal event of the seal given (position {given.head}, {given.events} events) is not in the "
             f"log: it, and maybe events after it, were removed")]

