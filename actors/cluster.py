"""Many nodes, one PostgreSQL (DESIGN §16): the orchestrator's part in the cluster.

With a PostgreSQL store, ``baton serve`` nodes form one cluster
(``EngineConfig.cluster``; SQLite stays single-node and nothing here runs):

- One queue. A launch records RunLaunched and RunQueued, then joins the
  shared queue (``eventstore.cluster``); any node with room admits the head,
  in launch order, once (an advisory lock orders admissions, the head is
  taken ``FOR UPDATE SKIP LOCKED``), and records RunStarted: the event's
  ``node`` says who drives the run from then on. A node driving more runs
  than the least busy one leaves the head to it for a moment, so runs spread.
  The node that enqueues a run admits the head in the same transaction when
  it would (room, and it is the least busy); its own run's launch actor then
  begins the run.
- Cluster-wide capacity. ``max_active_runs`` counts the queue's active rows,
  whichever node drives them; ``agent_slots`` counts slots held per model
  server (``EngineConfig.slot_pool``, its base URL) by every live node, each
  node holding its fair share of what is wanted (``ClusterScheduler``
  grants from what this node holds). Slots of a node whose lease ended stop
  counting; a node without its lease is fenced: no admission, no slot.
- Hand-off. A node stopping (SIGTERM) stops its runs, gives up its leases
  and unmarks its runs; the others, told by NOTIFY, claim them at once and
  recover them (lost attempts are run again, as after a crash). A node
  killed outright is noticed when its lease ends (at once on its own host).

The kicks are NOTIFY on ``eventstore.cluster.CHANNEL`` (plus the lease
heartbeat), never a polling loop; one LISTEN connection per node.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import sqlalchemy as sa

from actors.context import EngineContext
from actors.runlog import NODE_LEASE, SERVER_LEASE, read_with_owner, unended_runs
from actors.scheduler import Admission, Scheduler
from eventstore import StoreError
from eventstore.cluster import ACTIVE, CHANNEL, MEMBER, PAUSED, QUEUED, ClusterTables, Enqueued, Item
from eventstore.leases import Leases, dead_on_this_host, default_owner, leases_table
from eventstore.listen import ListenThread
from eventstore.postgres import own_connection

log = logging.getLogger(__name__)

WRITE_RETRY_CAP_S = 5.0  # the longest pause between two tries of queue changes the store failed
# How long the queue's writer lets changes gather after the first before it commits them: an approved
# run's "active again" and "ended" a few ms later then go in one commit, as one DELETE (other nodes see
# room free up this much later at most; this node's own admissions commit what is pending first).
GATHER_S = 0.01
PATIENCE_S = 0.25  # how long the head of the queue is left to a less busy node before any node takes it
START_CLAIMED = "admitted from the cluster queue"  # RunStarted's reason for a run a node took from the queue


def enabled(ctx: EngineContext) -> bool:
    """Whether this engine is a node of a cluster: asked for, recovering runs (``baton serve``), on PostgreSQL."""
    database = getattr(ctx.store, "database", None)
    return (ctx.config.cluster and ctx.config.recover and database is not None
            and database.dialect.name == "postgresql")


def join(ctx: EngineContext, kick: Callable[[str], None]) -> Cluster:
    """This engine's membership (``enabled(ctx)`` holds)."""
    config = ctx.config
    pool = config.slot_pool or config.backend
    store: Any = ctx.store  # a SqlStore (enabled() looked)
    return Cluster(store.database, ctx.leases, config.node, pool, config.max_active_runs,
                   config.agent_slots, kick, read=getattr(store, "read_sql", None))


def queued_admission() -> Admission:
    """What a launch on a node of a cluster becomes: queued, for whichever node has room to admit it."""
    return Admission(False, "queued in the cluster", 0)


class Kicks:
    """At most one kick of each kind on its way to the orchestrator (notifications come in bursts)."""

    def __init__(self, tell: Callable[[Any], None], message: Callable[[str], Any]) -> None:
        self._tell = tell
        self._message = message
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def kick(self, kind: str) -> None:
        with self._lock:
            if kind in self._pending:
                return
            self._pending.add(kind)
        self._tell(self._message(kind))

    def taken(self, kind: str) -> None:
        with self._lock:
            self._pending.discard(kind)


class ClusterScheduler(Scheduler):
    """The node's scheduler in a cluster: room is the cluster's (admission is the queue's); slots are
    granted from what this node holds of its pool (``reserved``), not from a count of its own."""

    def __init__(self, agent_slots: int, epoch: str = "") -> None:
        super().__init__(0, agent_slots, epoch=epoch)
        self.reserved = 0

    def entry(self, run_id: str) -> tuple[str, float]:
        """The run's flow and since when it is known."""
        entry = self._runs[run_id]
        return entry.flow, entry.since

    def wanted(self) -> int:
        """Slots this node would use now: those held plus those asked for."""
        return self.slots_in_use() + sum(len(self.waiting(r)) for r in list(self._waiting))

    def _free_slots(self) -> int:
        if not self.agent_slots:
            return super()._free_slots()
        return self.reserved - self.slots_in_use()


class QueueWriter:
    """This node's changes to the queue's rows of the runs it drives (active again, paused, ended),
    committed on a thread of their own: whatever gathered in the ``GATHER_S`` after a first change, or
    while one commit waited for its flush to disk, goes in the next, as one transaction
    (``ClusterTables.apply``), only the last change of each run kept. The orchestrator's one thread then never waits for these commits.

    What this node decides from the queue reads its own changes first (``flush``: the admissions, when
    something waits in the queue; an adoption, the plan; an enqueue commits them in its own transaction,
    ``handed``). The other nodes see a change once it is committed, with the NOTIFY that tells the least
    busy one to admit the head (as before, only that the commit is this thread's). A failed commit keeps its changes, unless a later change of the
    same run replaced them, and is tried again after a pause doubling up to ``WRITE_RETRY_CAP_S``
    (the log stays the truth: ``Cluster.tidy`` removes rows of runs that ended all the same).
    """

    def __init__(self, tables: ClusterTables, gather_s: float = GATHER_S) -> None:
        self._tables = tables
        self._gather_s = gather_s
        self._pending: dict[str, str] = {}  # run -> its state now ("" = ended)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._writing = threading.Lock()  # held while a batch is written (by the thread, or a flush)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="baton-cluster-writer", daemon=True)
        self._thread.start()

    def put(self, item_id: str, state: str) -> None:
        """The run is now in ``state`` (``""``: it ended); committed soon, with whatever else gathered."""
        with self._wake:
            first = not self._pending
            self._pending[item_id] = state
            if first:  # the thread waits for a first change; the next ones it lets gather (GATHER_S)
                self._wake.notify()

    def pending(self) -> bool:
        """Whether some change is not committed yet."""
        with self._lock:
            return bool(self._pending)

    def flush(self) -> None:
        """Commit every change put so far, on the calling thread (after the batch being written, if any).

        A store failure is logged, not raised: the changes are kept and tried again by the thread.
        """
        try:
            self._write()
        except StoreError as exc:
            log.warning("the cluster's queue could not be updated: %s", exc)

    def close(self, timeout: float = 3.0) -> None:
        """Commit what is pending (one try), then stop the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    @contextlib.contextmanager
    def handed(self) -> Iterator[dict[str, str]]:
        """Every change put so far (after the batch being written, if any), for the caller to commit in
        a transaction of its own; kept for the thread's next try if that raises."""
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, {}
            try:
                yield batch
            except BaseException:
                with self._wake:  # kept for the next try, unless a later change replaced it
                    self._pending = {**batch, **self._pending}
                    self._wake.notify()
                raise

    def _write(self) -> None:
        with self.handed() as batch:
            self._tables.apply(batch)

    def _run(self) -> None:
        tries = 0
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                gathered = time.monotonic() + self._gather_s  # let what follows the first change join it
                while not self._stopping and (left := gathered - time.monotonic()) > 0:
                    self._wake.wait(left)
                stopping = self._stopping
            try:
                self._write()
                tries = 0
            except Exception as exc:  # the store is away (or a bug): the thread goes on, the changes are kept
                tries += 1
                delay = min(WRITE_RETRY_CAP_S, 0.5 * 2.0 ** (tries - 1))
                if not stopping:
                    log.warning("the cluster's queue could not be updated (%s); trying again in %.1f s", exc, delay)
                    with self._wake:
                        self._wake.wait(delay)
            if stopping:
                return


class Cluster:
    """One node's membership: the tables, the LISTEN thread, and the calls the orchestrator makes."""

    def __init__(self, database: Any, leases: Leases, node: str, pool: str, max_active_runs: int,
                 agent_slots: int, kick: Callable[[str], None],
                 read: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]] | None = None) -> None:
        self.tables = ClusterTables(database, leases, node, default_owner(), read=read)
        self.node = node
        self.pool = pool
        self.max_active_runs = max_active_runs
        self.agent_slots = agent_slots
        holder = self.tables.join()
        if holder is not None:
            log.error("another live process (%s) holds cluster member %s; give each node its own BATON_NODE",
                      holder, node)
        self._writer = QueueWriter(self.tables)
        self._listener = _Listener(database, self._heard, kick)

    def close(self) -> None:
        self._writer.close()
        self._listener.stop()

    def _heard(self, kind: str) -> str:
        """What a notification asks of this node: ``queue:<node>`` is for that node only ("" = nothing)."""
        what, _, node = kind.partition(":")
        return "" if node and node != self.node else what

    # -- membership --------------------------------------------------------------------------

    def beat(self) -> None:
        """Keep this node's member lease (the heartbeat's part)."""
        holder = self.tables.join()
        if holder is not None:
            log.error("cluster member %s is held by %s: this node is fenced (no admission, no slot)",
                      self.node, holder)

    def tidy(self, here: set[str], ended: Callable[[str], bool]) -> None:
        """Rows naming this node for runs it no longer knows whose log shows an end (a failed
        update of the table): gone, so that they stop taking room."""
        self._writer.flush()
        for item in self.tables.items():
            if item.node == self.node and item.state != QUEUED and item.item_id not in here and ended(item.item_id):
                self.tables.finish(item.item_id)

    def hand_off(self, run_ids: list[str], release_node: Callable[[], None]) -> None:
        """Stopping: give up the leases, then unmark the runs so the others claim them now."""
        try:
            self._writer.flush()  # the runs that ended are gone from the queue, not handed off
            release_node()
            self.tables.leave()
            self.tables.hand_off(run_ids)
        except Exception:  # the store is away: the leases run out, the runs are taken over then
            log.warning("could not hand the runs off; the other nodes take them when the lease ends", exc_info=True)

    # -- runs --------------------------------------------------------------------------------

    def enqueue(self, run_id: str, flow: str, since: float) -> Enqueued:
        """Put the run in the queue and admit the head here if this node would (``ClusterTables.admit``),
        in one transaction with this node's queue changes not yet committed (the room they free counts)."""
        with self._writer.handed() as changes:
            return self.tables.enqueue(run_id, flow, since, changes, admit=True, max_active=self.max_active_runs,
                                       patience_s=PATIENCE_S)

    def admit(self) -> tuple[list[Item], bool]:
        """Runs this node takes from the queue now, and whether it left the head to a less busy node.

        With nothing queued (one read on the store's reading connections) there is nothing to admit,
        and this node's changes not yet committed can wait; with something queued they are committed
        first, so that the room counted is this node's too.
        """
        if not self.tables.queued():
            return [], False
        self._writer.flush()
        got = self.tables.admit(self.max_active_runs, PATIENCE_S)  # one at a time: the next goes to the least busy
        return list(got.items), got.deferred

    def adopt(self, run_id: str, flow: str, since: float, phase: str) -> bool:
        """A run found unfinished: True when this node drives it now (``phase``: active/paused/queued)."""
        self._writer.flush()
        return self.tables.adopt(run_id, flow, since, phase)

    def adopt_many(self, runs: list[tuple[str, str, float, str]]) -> set[str]:
        """``adopt`` for every run a recovery found, ``(run_id, flow, since, phase)``, in one transaction:
        those this node drives now."""
        self._writer.flush()
        return self.tables.adopt_many(runs)

    def orphans(self) -> list[str]:
        self._writer.flush()
        return self.tables.orphans()

    def active(self, run_id: str) -> None:
        """The run (an answered approval) is active again on this node (committed by the queue's writer)."""
        self._writer.put(run_id, ACTIVE)

    def paused(self, run_id: str) -> None:
        """The run waits for a person on this node: it takes no room (committed by the queue's writer)."""
        self._writer.put(run_id, PAUSED)

    def ended(self, run_id: str) -> None:
        """The run ended: its row goes, its room is free (committed by the queue's writer)."""
        self._writer.put(run_id, "")

    # -- slots -------------------------------------------------------------------------------

    def fit_slots(self, scheduler: ClusterScheduler) -> None:
        """Hold as many slots of the pool as this node's steps want, within its fair share."""
        if not self.agent_slots:
            return
        in_use, wanted = scheduler.slots_in_use(), scheduler.wanted()
        if wanted == scheduler.reserved:
            return
        scheduler.reserved = self.tables.reserve(self.pool, self.agent_slots, in_use, wanted)

    # -- the plan ----------------------------------------------------------------------------

    def plan(self) -> dict[str, Any]:
        """The cluster's plan, the same from every node, naming the node driving each run."""
        self._writer.flush()
        items = self.tables.items()
        slots = self.tables.slots().get(self.pool, {})
        members = sorted(self.tables.members())
        active = [i for i in items if i.state == ACTIVE]
        in_progress = [{"run_id": i.item_id, "flow": i.label, "since": i.since, "node": i.node or None}
                       for i in active]
        waiting = [(i, "capacity", f"{len(active)} of {self.max_active_runs} runs in progress in the cluster")
                   for i in items if i.state == QUEUED]
        waiting += [(i, "approval", "waiting for a person to approve or reject") for i in items if i.state == PAUSED]
        planned = [{"run_id": i.item_id, "flow": i.label, "position": n, "reason": reason, "detail": detail,
                    "node": i.node or None, "steps_waiting_for_slot": 0}
                   for n, (i, reason, detail) in enumerate(waiting, 1)]
        return {
            "cluster": True,
            "nodes": members,
            "max_active_runs": self.max_active_runs,
            "agent_slots": self.agent_slots,
            "slot_pool": self.pool,
            "slots_in_use": sum(slots.values()),
            "slots_by_node": slots,
            "in_progress": in_progress,
            "planned_queued": planned,
            "new_queued": [],
        }


class _Listener(ListenThread):
    """LISTEN on the cluster channel; each notification kicks the orchestrator (a hint, coalesced there)."""

    what = "cluster"

    def __init__(self, database: Any, heard: Callable[[str], str], kick: Callable[[str], None]) -> None:
        super().__init__("baton-cluster-listen")
        self._database = database
        self._heard = heard
        self._kick = kick
        self._notes: list[str] = []
        self._thread.start()

    def _connect(self) -> psycopg.Connection:
        conn = own_connection(self._database, "baton-cluster")
        self._notes = []
        conn.add_notify_handler(functools.partial(_collect, self._notes))
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _follow(self, conn: psycopg.Connection) -> None:
        self._kick("listen")  # whatever changed while nobody listened
        while not self._stopping.is_set():
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], 5.0)
            if self._wake_r in ready:
                return
            conn.execute("SELECT 1")  # reads what arrived: the handler collects it
            kinds, self._notes[:] = {self._heard(k) for k in self._notes}, []
            for kind in kinds - {""}:
                self._kick(kind)


def _collect(into: list[str], notify: psycopg.Notify) -> None:
    into.append(notify.payload)


def nodes_of(store: Any) -> list[dict[str, Any]]:
    """Every node that holds (or held) a lease on ``store``: its owner process, its lease, the server it
    answers at, the runs it drives and the slots it holds (``GET /api/nodes``, ``baton nodes``).

    In a cluster the runs come from the shared queue; a single node's from the log (the node that
    recorded an unfinished run's last event drives it).
    """
    database = store.database
    now = time.time()
    with database.connect() as conn:
        rows = conn.execute(sa.select(leases_table)).all()
        clustered = sa.inspect(conn).has_table("cluster_queue")
        queue = conn.execute(sa.text("SELECT item_id, state, node FROM cluster_queue ORDER BY since, item_id")
                             ).all() if clustered else []
        slots = conn.execute(sa.text("SELECT pool, node, held FROM cluster_slots WHERE held > 0")
                             ).all() if clustered else []
    found: dict[str, dict[str, Any]] = {}
    servers: dict[str, str] = {}
    for row in rows:
        alive = row.expires_at >= now and not dead_on_this_host(row.owner)
        if row.name.startswith(SERVER_LEASE):
            if alive:
                servers[row.owner] = row.name[len(SERVER_LEASE):]
            continue
        for prefix, what in ((NODE_LEASE, "lease"), (MEMBER, "member")):
            if row.name.startswith(prefix):
                node = found.setdefault(row.name[len(prefix):], {
                    "node": row.name[len(prefix):], "owner": row.owner, "alive": False, "lease_expires_at": None,
                    "member": False, "url": None, "driving": [], "paused": [], "slots": {}})
                if what == "lease":
                    node.update(owner=row.owner, alive=alive, lease_expires_at=row.expires_at)
                else:
                    node["member"] = alive
    for node in found.values():
        node["url"] = servers.get(node["owner"])
    if clustered:
        for item in queue:
            if item.node in found and item.state != QUEUED:
                found[item.node]["driving" if item.state == ACTIVE else "paused"].append(item.item_id)
        for slot in slots:
            if slot.node in found and found[slot.node]["alive"]:
                found[slot.node]["slots"][slot.pool] = int(slot.held)
    else:
        for run_id in unended_runs(store):
            state, _, last = read_with_owner(store, run_id)
            if last in found and not state.terminal:
                found[last]["paused" if state.status == "paused" else "driving"].append(run_id)
    return sorted(found.values(), key=lambda n: (not n["alive"], n["node"]))
