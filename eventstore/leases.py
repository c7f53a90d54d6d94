"""Leases: which process owns a named thing (a stream, a run) for now.

Optimistic concurrency already fences a writer that lost a stream; a lease
keeps two processes from *starting* the same work in the first place. A lease
is a row ``(name, owner, expires_at)``. It is taken when free, expired, or
already ours; its owner renews every lease it holds in one statement; a
process that dies stops renewing. An owner name ``host:pid`` lets a process on
the same host take over at once from an owner whose pid is gone (kill -9),
instead of waiting out the TTL.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from eventstore.store import StoreUnavailableError

T = TypeVar("T")


def store_errors(method: Callable[..., T]) -> Callable[..., T]:
    """A database error of a lease call is the store being unavailable, as for any other store call."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise StoreUnavailableError(f"leases: {' '.join(str(exc.orig or exc).split())}") from exc

    return call

_metadata = sa.MetaData()
leases_table = sa.Table(
    "leases",
    _metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

_ACQUIRE = sa.text(
    "INSERT INTO leases (name, owner, expires_at) VALUES (:name, :owner, :expires) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE leases.owner = excluded.owner OR leases.expires_at < :now OR leases.owner = :dead"
)


def default_owner() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_on_this_host(owner: str) -> bool:
    """Whether ``owner`` (``host:pid``) names a process of this host that is gone.

    A process killed (kill -9) whose parent has not reaped it yet is a zombie: signals still
    "reach" its pid, but it runs no more. In a container whose first process reaps late (or a
    shell that started the server in the background), a killed server stayed a zombie for seconds,
    and its runs waited for the next heartbeat (10 s) instead of being recovered at the restart.
    """
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False  # (this process's own leases: read at every command, and alive by definition)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: str) -> bool:
    """Whether the process has exited, all of it, and waits to be reaped (Linux's /proc; False where there
    is none).

    Every thread is asked, not only the first. After a kill -9, the thread the pid names was a zombie
    within 0.3 ms, while another tore the process down (its memory first, its files last) for 25-50 ms
    more, its sockets still open. A node that took the dead one's model slots in that time sent the
    model server one call more than the slots, beside the dead node's call still open there.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as stat:
                if stat.read().rpartition(b")")[2].split(None, 1)[0] not in (b"Z", b"X"):
                    return False
    except FileNotFoundError:  # reaped meanwhile, or a thread ended as it was read: then not yet
        return not os.path.exists(f"/proc/{pid}")
    except (OSError, IndexError):
        return False
    return bool(tasks)


class Leases:
    """Leases kept in the store's own database (the table is created if missing)."""

    def __init__(self, database: sa.Engine, ttl_s: float = 30.0,
                 read: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]] | None = None) -> None:
        """``read``: runs a SELECT (``?`` placeholders) on the store's own reading connections
        (``SqlEventStore.read_sql``): a lease read is then one round trip, not a pooled checkout's
        ping and SQLAlchemy's statement machinery (a command's ownership check reads the leases)."""
        self.database = database
        self.ttl_s = ttl_s
        self._read = read
        _metadata.create_all(database, checkfirst=True)

    @store_errors
    def acquire(self, name: str, owner: str) -> str | None:
        """Take ``name`` for ``owner``: None on success, else the owner holding it."""
        now = time.time()
        with self.database.begin() as conn:
            current = conn.execute(
                sa.select(leases_table.c.owner, leases_table.c.expires_at).where(leases_table.c.name == name)
            ).first()
            dead = current.owner if current is not None and dead_on_this_host(current.owner) else ""
            result = conn.execute(_ACQUIRE, {"name": name, "owner": owner, "expires": now + self.ttl_s,
                                             "now": now, "dead": dead})
            if result.rowcount:
                return None
        holder = self.owner_of(name)
        return holder or None

    @store_errors
    def release(self, name: str, owner: str) -> None:
        """Give ``name`` up (only if ``owner`` holds it)."""
        with self.database.begin() as conn:
            conn.execute(sa.delete(leases_table).where(leases_table.c.name == name, leases_table.c.owner == owner))

    @store_errors
    def renew(self, owner: str) -> int:
        """Extend every lease ``owner`` holds; returns how many it still holds."""
        with self.database.begin() as conn:
            result = conn.execute(
                sa.update(leases_table).where(leases_table.c.owner == owner)
                .values(expires_at=time.time() + self.ttl_s)
            )
            return result.rowcount

    @store_errors
    def release_all(self, owner: str) -> None:
        """Give up every lease ``owner`` holds (a clean stop)."""
        with self.database.begin() as conn:
            conn.execute(sa.delete(leases_table).where(leases_table.c.owner == owner))

    @store_errors
    def owner_of(self, name: str) -> str:
        """Who holds ``name`` now ("" when nobody, or the lease expired)."""
        if self._read is not None:
            rows = self._read("SELECT owner, expires_at FROM leases WHERE name = ?", (name,))
            row = rows[0] if rows else None
        else:
            with self.database.connect() as conn:
                row = conn.execute(
                    sa.select(leases_table.c.owner, leases_table.c.expires_at).where(leases_table.c.name == name)
                ).first()
        if row is None or row[1] < time.time() or dead_on_this_host(row[0]):
            return ""
        return str(row[0])

    def held_read(self) -> tuple[str, tuple[Any, ...]] | None:
        """The SELECT (``?`` placeholders) ``held`` runs, for a caller that reads it beside another read
        (``SqlEventStore.read_stream_and``); its rows go to ``held_from``. None without a store's reads."""
        if self._read is None:
            return None
        return "SELECT name, owner FROM leases WHERE expires_at >= ?", (time.time(),)

    @staticmethod
    def held_from(rows: Any) -> dict[str, str]:
        """``held``'s answer from the rows of ``held_read``."""
        return {name: owner for name, owner in rows if not dead_on_this_host(owner)}

    @store_errors
    def held(self) -> dict[str, str]:
        """Every live lease: name -> owner."""
        now = time.time()
        if self._read is not None:
            rows: Any = self._read("SELECT name, owner FROM leases WHERE expires_at >= ?", (now,))
        else:
            with self.database.connect() as conn:
                rows = conn.execute(sa.select(leases_table.c.name, leases_table.c.owner)
                                    .where(leases_table.c.expires_at >= now)).all()
        return self.held_from(rows)
