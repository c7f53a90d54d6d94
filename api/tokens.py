"""The token book: tokens as events of the ``auth`` stream, and the admin token file.

The shell around :mod:`flows.auth`: make a token (256 random bits), decide,
append with the stream's expected version (a conflict is decided again on the
fresh stream, so two admins at once lose nothing and double nothing), and
hand the token out once. Only its SHA-256 is recorded.

The admin token file: the first ``baton serve`` on a store with no valid
token makes an ``admin`` token and writes it to a file only its owner can
read (``Settings.admin_token_file``), where ``baton`` commands find it. It is
written to a new file in the same folder, then renamed over the old one: a
symlink planted at that path is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from eventstore import Codec, ConcurrencyError, CorruptEventError, EventStore, NewEvent, RecordedEvent
from flows.auth import (
    AUTH_EVENT_TYPES,
    AUTH_STREAM,
    TOKEN_PREFIX,
    Role,
    Token,
    TokenExists,
    TokenRegistry,
    fold,
    issue,
    revoke,
    token_hash,
)
from flows.events import Event, event_data

log = logging.getLogger(__name__)

_RETRIES = 3
_CODEC = Codec(AUTH_EVENT_TYPES)
BOOTSTRAP_NAME = "admin"


def new_token() -> str:
    """A fresh token: the prefix and 256 random bits, URL-safe (49 characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Issued(NamedTuple):
    """A token just made: shown once, never again (the log keeps its hash)."""

    name: str
    role: Role
    token: str
    position: int


class TokenBook:
    """Tokens as the ``auth`` stream of an event store."""

    def __init__(self, store: EventStore, now: Callable[[], float]) -> None:
        """Read and append through ``store``; stamp events with ``now()``."""
        self._store = store
        self._now = now

    def registry(self, since: TokenRegistry | None = None) -> TokenRegistry:
        """The registry folded from the stream as it is now (only the events after ``since``, when given)."""
        after = since.version if since is not None else 0
        return fold((_decoded(rec) for rec in self._store.read_stream(AUTH_STREAM, after)), since)

    def tokens(self) -> list[Token]:
        """Every valid token, by name."""
        return sorted(self.registry().tokens.values(), key=lambda t: t.name)

    def create(self, name: str, role: str, *, by: str) -> Issued:
        """Make a token for ``name`` with ``role``; raises the errors of :func:`flows.auth.issue`."""
        token = new_token()
        digest = token_hash(token)
        position = self._decide_and_append(lambda reg: issue(reg, name, role, digest, by=by, now=self._now()), by)
        return Issued(name, Role(role), token, position)

    def revoke(self, name: str, *, by: str, reason: str = "") -> int:
        """Revoke the token ``name``; the position of TokenRevoked. Raises UnknownToken."""
        return self._decide_and_append(lambda reg: revoke(reg, name, by=by, reason=reason, now=self._now()), by)

    def _decide_and_append(self, decide: Callable[[TokenRegistry], list[Event]], by: str) -> int:
        """Load, decide, append with the expected version; on a conflict, again."""
        conflict: ConcurrencyError | None = None
        for _ in range(_RETRIES):
            registry = self.registry()
            events = decide(registry)
            new = [NewEvent(type(e).__name__, event_data(e), {"schema_version": 1, "actor": by}) for e in events]
            try:
                recorded = self._store.append(AUTH_STREAM, new, expected_version=registry.version)
            except ConcurrencyError as exc:
                conflict = exc  # someone else appended: decide again on what they wrote
                continue
            return recorded[-1].position
        assert conflict is not None
        raise conflict


def _decoded(rec: RecordedEvent) -> Event:
    """The auth event recorded, or (logged) a plain Event that changes nothing when it does not decode.

    A TokenIssued that cannot be read grants nothing; the stream goes on being
    read, so one bad row does not lock every token out of the server.
    """
    try:
        event: Event = _CODEC.decode(rec)
        return event
    except CorruptEventError as exc:
        log.error("auth stream: %s; it is skipped", exc)
        return Event(at=rec.recorded_at)


def bootstrap(book: TokenBook, path: Path, *, by: str) -> Issued | None:
    """On a store with no valid token: an admin token, written to ``path`` (0600); else None.

    Two servers starting on one new store at once: one issues, the other
    finds its token and issues none. The token is recorded first (only one
    process wins that), then written; when the file cannot be written the
    token is revoked again and the OSError raised: a valid admin token that
    nobody holds would leave the next start nothing to make one for.
    """
    if book.registry().tokens:
        return None
    try:
        issued = book.create(BOOTSTRAP_NAME, Role.ADMIN.value, by=by)
    except (ConcurrencyError, TokenExists):  # another server got there first
        return None
    try:
        write_token_file(path, issued.token)
    except OSError:
        book.revoke(BOOTSTRAP_NAME, by=by, reason=f"its token file {path} could not be written")
        raise
    return issued


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path``, readable and writable by its owner only (its folder made 0700 if new).

    Written to a temporary file of the same folder (created 0600), then
    renamed over ``path``: a symlink at ``path`` is replaced, not followed.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".baton-token-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(token + "\n")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def read_token_file(path: Path) -> str | None:
    """The token in ``path``, or None when there is no such file.

    A file others may read is still used, with a warning: the token in it
    should be treated as known to them (``chmod 600`` it, or revoke it).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s can be read by others (mode %o): chmod 600 it, or revoke its token",
                    path, stat.S_IMODE(mode))
    return text or None

