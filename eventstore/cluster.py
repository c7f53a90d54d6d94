"""Cluster tables: one shared queue and shared slot pools for the processes on one PostgreSQL store.

Generic, like the rest of the store: it knows *items* (a run, to the actors)
and *pools* (an agent server, to the actors), never flows. Two tables sit
beside the log:

- ``cluster_queue``: one row per item not ended: ``queued`` (waiting for any
  member to admit it, in ``since`` order), ``active`` (admitted, driven by
  ``node``) or ``paused`` (waiting for a person, no room taken).
- ``cluster_slots``: per pool and member, how many slots it ``held`` and how
  many it ``wanted`` at its last word.

A member is a process whose ``cluster-<node>`` lease (``eventstore.leases``)
is alive. Whatever a member holds counts only while its lease lives: slots of
a dead member come back when its lease ends (at once for a dead pid on this
host), and a member whose lease is gone or taken is *fenced*: it admits
nothing, claims nothing and is granted no slot until it holds its lease
again. Admissions and claims are serialized by one transaction-scoped
advisory lock (a decision reads the counts of every member), each pool's
slots by a lock of its own; ``FOR UPDATE SKIP LOCKED`` takes the queue's head.
Every change another member may act on is announced with NOTIFY on
``CHANNEL`` (a hint; the tables are the truth).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa

from eventstore.leases import Leases, dead_on_this_host, leases_table, store_errors

CHANNEL = "baton_cluster"
MEMBER = "cluster-"
_ADMIT_LOCK = 0x6261746F  # "bato": the one lock every admission and claim takes
_SLOT_LOCK = 0x736C6F74  # "slot": with the pool's hash, the lock of one pool
_ANY_QUEUED = "SELECT 1 FROM cluster_queue WHERE state = 'queued' LIMIT 1"

_metadata = sa.MetaData()
queue_table = sa.Table(
    "cluster_queue",
    _metadata,
    sa.Column("item_id", sa.String(200), primary_key=True),
    sa.Column("label", sa.String(200), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("node", sa.String(200), nullable=False, server_default=""),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("changed_at", sa.Float, nullable=False),
    sa.Index("cluster_queue_order", "state", "since", "item_id"),
)
slots_table = sa.Table(
    "cluster_slots",
    _metadata,
    sa.Column("pool", sa.String(1000), primary_key=True),
    sa.Column("node", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),  # the process: its slots count while it is the member
    sa.Column("held", sa.Integer, nullable=False),
    sa.Column("wanted", sa.Integer, nullable=False),
)

QUEUED, ACTIVE, PAUSED = "queued", "active", "paused"


def _json(value: Any) -> str:
    """A statement's rows or ids as one JSON text parameter (one value to send, not one per row)."""
    return msgspec.json.encode(value).decode()


def member_lease(node: str) -> str:
    """The lease a member named ``node`` holds while it takes part."""
    return MEMBER + node


@dataclass(frozen=True)
class Item:
    """A row of the queue."""

    item_id: str
    label: str
    state: str
    node: str
    since: float
    changed_at: float


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue gave: the member named to admit the head; with ``admit``, what this member took
    (``taken``) or whether it left the head to a less busy member (``deferred``)."""

    named: str
    taken: tuple[Item, ...] = ()
    deferred: bool = False


@dataclass(frozen=True)
class Admitted:
    """What one admission try gave: the items now ours, and whether one was left for a member with fewer."""

    items: tuple[Item, ...]
    deferred: bool = False


def fair_shares(limit: int, wanted: dict[str, int]) -> dict[str, int]:
    """Split ``limit`` slots among members wanting ``wanted`` each: equal shares, what one does not
    need going to the others (water filling); every share is at most what its member wants."""
    shares = dict.fromkeys(wanted, 0)
    left = limit
    hungry = sorted((n for n, w in wanted.items() if w > 0), key=lambda n: (wanted[n], n))
    while hungry and left > 0:
        each = left // len(hungry)
        if each == 0:  # fewer slots than members: one each, in name order
            for n in sorted(hungry)[:left]:
                shares[n] += 1
            break
        served = []
        for n in hungry:
            take = min(each, wanted[n] - shares[n])
            shares[n] += take
            left -= take
            if shares[n] >= wanted[n]:
                served.append(n)
        hungry = [n for n in hungry if n not in served]
    return shares


class ClusterTables:
    """The cluster tables of one store, as seen by member ``node`` (process ``owner``)."""

    def __init__(self, database: sa.Engine, leases: Leases, node: str, owner: str,
                 read: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]] | None = None) -> None:
        """``read``: runs a SELECT (``?`` placeholders) on the store's own reading connections
        (``SqlEventStore.read_sql``): ``queued``, asked whenever a node schedules, is then one round
        trip, not a pooled checkout's ping, the query and the rollback."""
        self._read = read
        if database.dialect.name != "postgresql":
            raise ValueError("a cluster needs a PostgreSQL store (SQLite stays single-node)")
        self.database = database
        self.leases = leases
        self.node = node
        self.owner = owner
        with database.begin() as conn:  # nodes starting together: one creates the tables, the others wait
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADMIT_LOCK})
            _metadata.create_all(conn, checkfirst=True)

    # -- membership --------------------------------------------------------------------------

    @store_errors
    def join(self) -> str | None:
        """Take (or keep) this member's lease: None when held, else who holds it."""
        return self.leases.acquire(member_lease(self.node), self.owner)

    @store_errors
    def leave(self) -> None:
        """Give the member lease up (a clean stop)."""
        self.leases.release(member_lease(self.node), self.owner)

    def _members(self, conn: sa.Connection) -> dict[str, str]:
        """Live members: node -> owner (expired leases and dead pids of this host left out)."""
        now = time.time()
        rows = conn.execute(sa.select(leases_table.c.name, leases_table.c.owner).where(
            leases_table.c.name.startswith(MEMBER), leases_table.c.expires_at >= now)).all()
        return {r.name[len(MEMBER):]: r.owner for r in rows if not dead_on_this_host(r.owner)}

    def _member(self, members: dict[str, str]) -> bool:
        return members.get(self.node) == self.owner

    @store_errors
    def members(self) -> dict[str, str]:
        """Live members: node -> owner."""
        with self.database.connect() as conn:
            return self._members(conn)

    # -- the queue ---------------------------------------------------------------------------

    def _call_next(self, conn: sa.Connection, members: dict[str, str] | None = None,
                   counts: dict[str, int] | None = None, *, only_if_queued: bool = False, prefer: str = "") -> str:
        """NOTIFY ``queue:<node>``: the least busy member should admit the head now (the others leave it to
        that member; each looks again at its heartbeat, and takes a head left waiting too long)."""
        if only_if_queued and conn.execute(
                sa.text("SELECT 1 FROM cluster_queue WHERE state = 'queued' LIMIT 1")).first() is None:
            return ""
        members = self._members(conn) if members is None else members
        if not members:
            return ""
        if counts is None:
            counts = {r[0]: int(r[1]) for r in conn.execute(sa.text(
                "SELECT node, count(*) FROM cluster_queue WHERE state = 'active' GROUP BY node"))}
        named = least_busy(members, counts, prefer)
        _notify(conn, "queue:" + named)
        return named

    @store_errors
    def enqueue(self, item_id: str, label: str, since: float, changes: dict[str, str] | None = None, *,
                admit: bool = False, max_active: int = 0, patience_s: float = 0.0) -> Enqueued:
        """Put an item in the queue (nothing if it is known already): the member named to admit the head.

        ``changes``: this member's changes not yet committed (as ``apply``), committed first in the same
        transaction. ``admit``: then this member admits the head as ``admit`` would, in that transaction
        too (``taken``, or ``deferred`` to a less busy member, who is named): a launch this member may
        admit costs one transaction, not three.
        """
        now = time.time()
        deferred = False
        with self.database.begin() as conn:
            if changes:
                self._apply(conn, changes, now)
            conn.execute(sa.text(
                "INSERT INTO cluster_queue (item_id, label, state, node, since, changed_at) "
                "VALUES (:i, :l, 'queued', '', :s, :n) ON CONFLICT (item_id) DO NOTHING"),
                {"i": item_id, "l": label, "s": since, "n": now})
            if admit:
                got = self._admit(conn, max_active, patience_s)
                if got.items:
                    return Enqueued(self.node, got.items)
                deferred = got.deferred
            # An idle cluster (this item alone, nothing admitted): this member takes it, no hop to another process.
            idle = conn.execute(sa.text("SELECT count(*) FROM cluster_queue")).scalar() == 1
            return Enqueued(self._call_next(conn, prefer=self.node if idle else ""), deferred=deferred)

    @store_errors
    def admit(self, max_active: int, patience_s: float) -> Admitted:
        """Take the queue's head for this member if the cluster has room (``max_active``, 0 = no limit).

        Fair: a member that drives more than the least busy live member leaves
        the head to it (``deferred``), unless the head waited ``patience_s``.
        """
        with self.database.begin() as conn:
            return self._admit(conn, max_active, patience_s)

    def _admit(self, conn: sa.Connection, max_active: int, patience_s: float) -> Admitted:
        if conn.execute(sa.text(_ANY_QUEUED)).first() is None:
            return Admitted(())
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADMIT_LOCK})
        members = self._members(conn)
        if not self._member(members):
            return Admitted(())
        counts: dict[str, int] = {r[0]: int(r[1]) for r in conn.execute(sa.text(
            "SELECT node, count(*) FROM cluster_queue WHERE state = 'active' GROUP BY node"))}
        if max_active and sum(counts.values()) >= max_active:
            return Admitted(())
        head = conn.execute(sa.text(
            "SELECT item_id, label, state, node, since, changed_at FROM cluster_queue WHERE state = 'queued' "
            "ORDER BY since, item_id LIMIT 1 FOR UPDATE SKIP LOCKED")).first()
        if head is None:
            return Admitted(())
        now = time.time()
        fewest = min(counts.get(n, 0) for n in members)
        if counts.get(self.node, 0) > fewest and now - head.changed_at < patience_s:
            return Admitted((), deferred=True)
        conn.execute(sa.text("UPDATE cluster_queue SET state = 'active', node = :me, changed_at = :n "
                             "WHERE item_id = :i"), {"me": self.node, "n": now, "i": head.item_id})
        counts[self.node] = counts.get(self.node, 0) + 1
        if not max_active or sum(counts.values()) < max_active:
            self._call_next(conn, members, counts, only_if_queued=True)
        return Admitted((Item(head.item_id, head.label, ACTIVE, self.node, head.since, now),))

    def adopt(self, item_id: str, label: str, since: float, state: str) -> bool:
        """Drive an item found unfinished: True when it is now this member's (``state``: active or paused).

        A queued item, or one a live member drives, stays as it is (False); an
        item not in the table joins it (queued ones join the queue: False).
        """
        return item_id in self.adopt_many([(item_id, label, since, state)])

    @store_errors
    def adopt_many(self, items: Iterable[tuple[str, str, float, str]]) -> set[str]:
        """``adopt`` for many items ``(item_id, label, since, state)`` in ONE transaction: those now this
        member's. A recovery of 10,000 parked runs took one transaction (and one flush to disk) per run."""
        wanted = {item[0]: item for item in items}
        if not wanted:
            return set()
        now = time.time()
        ours: set[str] = set()
        with self.database.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADMIT_LOCK})
            members = self._members(conn)
            if not self._member(members):
                return ours
            found = {r.item_id: r for r in conn.execute(sa.text(
                "SELECT item_id, state, node FROM cluster_queue WHERE item_id IN "
                "(SELECT json_array_elements_text(CAST(:ids AS json))) FOR UPDATE"), {"ids": _json(list(wanted))})}
            inserts, updates = [], []
            for item_id, label, since, state in wanted.values():
                row = found.get(item_id)
                if row is None:
                    inserts.append({"i": item_id, "l": label, "st": state, "me": "" if state == QUEUED else self.node,
                                    "s": since, "n": now})
                elif row.state == QUEUED or (row.node and row.node != self.node and row.node in members):
                    continue
                else:
                    state = QUEUED if state == QUEUED else row.state
                    updates.append({"me": "" if state == QUEUED else self.node, "st": state, "n": now, "i": item_id})
                if state != QUEUED:
                    ours.add(item_id)
            # One statement each, the rows as one JSON text: 10,000 rows one by one (executemany) were most
            # of a start's recovery of 10,000 parked runs on PostgreSQL (docs/PERFORMANCE.md, issue 15).
            if inserts:
                conn.execute(sa.text(
                    "INSERT INTO cluster_queue (item_id, label, state, node, since, changed_at) "
                    "SELECT i, l, st, me, s, n FROM json_to_recordset(CAST(:rows AS json)) "
                    "AS u(i text, l text, st text, me text, s float8, n float8)"), {"rows": _json(inserts)})
            if updates:
                conn.execute(sa.text(
                    "UPDATE cluster_queue SET node = u.me, state = u.st, changed_at = u.n "
                    "FROM json_to_recordset(CAST(:rows AS json)) AS u(i text, me text, st text, n float8) "
                    "WHERE cluster_queue.item_id = u.i"), {"rows": _json(updates)})
            if any(insert["st"] == QUEUED for insert in inserts):
                _notify(conn, "queue")
        return ours

    @store_errors
    def orphans(self) -> list[str]:
        """Items admitted or paused whose member is gone (its lease ended, or it handed them off)."""
        with self.database.connect() as conn:
            members = self._members(conn)
            rows = conn.execute(sa.text("SELECT item_id, node FROM cluster_queue WHERE state <> 'queued' "
                                        "ORDER BY since, item_id")).all()
        return [r.item_id for r in rows if r.node not in members]

    @store_errors
    def set_state(self, item_id: str, state: str) -> None:
        """This member drives the item now, in ``state`` (active after an answered approval, or paused)."""
        with self.database.begin() as conn:
            conn.execute(sa.text("UPDATE cluster_queue SET state = :st, node = :me, changed_at = :n "
                                 "WHERE item_id = :i AND state <> 'queued'"),
                         {"st": state, "me": self.node, "n": time.time(), "i": item_id})
            self._call_next(conn, only_if_queued=True)

    @store_errors
    def finish(self, item_id: str) -> None:
        """The item ended: gone from the queue (its room is free)."""
        with self.database.begin() as conn:
            conn.execute(sa.text("DELETE FROM cluster_queue WHERE item_id = :i"), {"i": item_id})
            self._call_next(conn, only_if_queued=True)

    @store_errors
    def apply(self, changes: dict[str, str]) -> None:
        """Several items' last changes in one transaction: ``item -> state`` (active or paused: this
        member drives it now, as ``set_state``) or ``item -> ""`` (ended: gone, as ``finish``)."""
        if not changes:
            return
        with self.database.begin() as conn:
            self._apply(conn, changes, time.time())
            self._call_next(conn, only_if_queued=True)

    def _apply(self, conn: sa.Connection, changes: dict[str, str], now: float) -> None:
        ended = sorted(i for i, st in changes.items() if not st)
        if ended:
            conn.execute(sa.text("DELETE FROM cluster_queue WHERE item_id = ANY(:ids)"), {"ids": ended})
        for state in sorted({st for st in changes.values() if st}):
            ids = sorted(i for i, st in changes.items() if st == state)
            conn.execute(sa.text("UPDATE cluster_queue SET state = :st, node = :me, changed_at = :n "
                                 "WHERE item_id = ANY(:ids) AND state <> 'queued'"),
                         {"st": state, "me": self.node, "n": now, "ids": ids})

    @store_errors
    def queued(self) -> bool:
        """Whether any item waits in the queue."""
        if self._read is not None:
            return bool(self._read(_ANY_QUEUED, ()))
        with self.database.connect() as conn:
            return conn.execute(sa.text(_ANY_QUEUED)).first() is not None

    @store_errors
    def hand_off(self, item_ids: Iterable[str]) -> None:
        """Stopping: the items this member drives go to whoever claims them first."""
        ids = list(item_ids)
        with self.database.begin() as conn:
            if ids:
                conn.execute(sa.text("UPDATE cluster_queue SET node = '', changed_at = :n "
                                     "WHERE node = :me AND item_id = ANY(:ids)"),
                             {"n": time.time(), "me": self.node, "ids": ids})
            conn.execute(sa.text("UPDATE cluster_slots SET held = 0, wanted = 0 WHERE node = :me"),
                         {"me": self.node})
            _notify(conn, "handoff")

    @store_errors
    def items(self) -> list[Item]:
        """Every row of the queue, in plan order."""
        with self.database.connect() as conn:
            rows = conn.execute(sa.text("SELECT item_id, label, state, node, since, changed_at FROM cluster_queue "
                                        "ORDER BY since, item_id")).all()
        return [Item(*r) for r in rows]  # the columns in Item's order

    # -- slots -------------------------------------------------------------------------------

    @store_errors
    def reserve(self, pool: str, limit: int, in_use: int, wanted: int) -> int:
        """How many slots of ``pool`` this member may hold now (never fewer than ``in_use``, which it holds).

        It asks for ``wanted`` (in use plus waiting); it gets its fair share of
        ``limit`` among live members, within what they do not hold. A fenced
        member gets nothing more than it has in flight.
        """
        with self.database.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k, hashtext(:p))"), {"k": _SLOT_LOCK, "p": pool})
            members = self._members(conn)
            rows = conn.execute(sa.text("SELECT node, owner, held, wanted FROM cluster_slots WHERE pool = :p"),
                                {"p": pool}).all()
            others = {r.node: (int(r.held), int(r.wanted)) for r in rows
                      if r.node != self.node and members.get(r.node) == r.owner}
            before = next((int(r.held) for r in rows if r.node == self.node), 0)
            if not self._member(members):  # fenced: its row stops counting (another process is the member)
                return in_use
            shares = fair_shares(limit, {**{n: w for n, (_, w) in others.items()}, self.node: wanted})
            free = limit - sum(h for h, _ in others.values())
            held = max(in_use, min(wanted, shares[self.node], free))
            conn.execute(sa.text(
                "INSERT INTO cluster_slots (pool, node, owner, held, wanted) VALUES (:p, :me, :o, :h, :w) "
                "ON CONFLICT (pool, node) DO UPDATE SET owner = excluded.owner, held = excluded.held, "
                "wanted = excluded.wanted"),
                {"p": pool, "me": self.node, "o": self.owner, "h": held, "w": wanted})
            if held < before or wanted > held:  # freed some, or waits for some another member holds
                _notify(conn, "slots")
            return held

    @store_errors
    def slots(self) -> dict[str, dict[str, int]]:
        """Slots held now by live members: pool -> node -> held."""
        with self.database.connect() as conn:
            members = self._members(conn)
            rows = conn.execute(sa.text("SELECT pool, node, owner, held FROM cluster_slots WHERE held > 0")).all()
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            if members.get(r.node) == r.owner:
                out.setdefault(r.pool, {})[r.node] = int(r.held)
        return out


def _notify(conn: sa.Connection, what: str) -> None:
    conn.execute(sa.text("SELECT pg_notify(:c, :w)"), {"c": CHANNEL, "w": what})


def least_busy(members: Iterable[str], counts: dict[str, int], prefer: str = "") -> str:
    """The member driving the fewest items: ``prefer`` when it is one of them (no hop to another
    process), else one drawn at random, so that they spread."""
    names = list(members)
    fewest = min(counts.get(n, 0) for n in names)
    tied = [n for n in names if counts.get(n, 0) == fewest]
    return prefer if prefer in tied else random.choice(tied)
