"""Orchestrator: takes commands, owns the RunActors, recovers at start, schedules.

Scheduling is driven by events only — a launch, a run ending or going idle, a
slot freed, an approval — never by a timer or a polling loop (DESIGN §5):

- new queued work while idle is planned at once (a launch admits its run
  in the same message when there is capacity);
- with nothing in progress, planned work that is not blocked starts at once
  (every run ending or going idle admits the next queued run);
- a run in progress whose next event is a step finishing is not re-kicked
  because queued work exists (only events kick);
- planned work that waits says why (``plan()``, ``plan_updated`` frames).

The rules (who is admitted, who gets a slot, what the plan says) live in
``actors.scheduler.Scheduler``; this actor tells it what happened and acts on
what it decides. Agent slots are shared fairly: a free slot goes to the run
with pending requests that holds the fewest slots, ties going to the run
served least recently (round robin), so a wide fan-out cannot hold back a run
launched after it for more than one step's turn.

A store that cannot be reached never stops the orchestrator (pykka has no
supervision: an exception in a handler would end the actor for good). Where
it reads the log (recovery, driving a run again, checking who owns a run)
a StoreError is caught: the command asking gets it (a 503), and the work is
tried again later, after a backoff doubling up to ``RETRY_CAP_S``, for as
long as the outage lasts. Timers fall due on the engine's clock; nothing
polls. Should the actor die all the same (a bug), ``on_failure`` stops its
RunActors and tells the engine, which starts a new orchestrator.
"""

from __future__ import annotations

import logging
import queue
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import pykka

from actors import cluster as clustering
from actors import messages as m
from actors import recovery
from actors.context import EngineContext
from actors.errors import FlowsModuleMissing, LaunchInProgress, RunOwnedElsewhere
from actors.functions import missing_module
from actors.liveness import Liveness
from actors.run import RunActor
from actors.runlog import driven_elsewhere, load_with_owner, load_with_owner_and_leases, node_lease, route
from actors.scheduler import START_FREED, Admission, Phase, Scheduler
from eventstore import StoreError
from eventstore.cluster import Item
from eventstore.leases import default_owner
from flows.decide import decide
from flows.state import RunState
from flows.tasks.run import plan_view

log = logging.getLogger(__name__)

RETRY_CAP_S = 5.0  # the longest pause between two tries of work the store failed


PLAN_GATHER = 4096  # plan changes left to gather while nobody listens, at most


def backoff(tries: int, cap: float = RETRY_CAP_S) -> float:
    """The pause before try number ``tries + 1``: 0.5 s, doubling, at most ``cap``."""
    return min(cap, 0.5 * 2.0 ** max(0, tries - 1))


class _Renew:
    """Time to renew this process's leases."""


class _Recover:
    """Time to try recovering unfinished runs again (the store failed the last try)."""


@dataclass(frozen=True)
class _Kick:
    """Another node of the cluster changed the queue, the slots, or handed its runs off (``actors.cluster``)."""

    kind: str


@dataclass(frozen=True)
class _ApprovalDue:
    """A paused approval's timer of a run that holds no actor may have fallen due."""

    run_id: str


@dataclass(frozen=True)
class _Redrive:
    """Time to drive a run again whose actor stopped on a failure."""

    run_id: str


class _Run:
    """The orchestrator's handle on one run's actor (its scheduling is the Scheduler's)."""

    __slots__ = ("run_id", "ref", "sent", "claimed")

    def __init__(self, run_id: str, claimed: bool = False) -> None:
        self.run_id = run_id
        self.ref: pykka.ActorRef[Any] | None = None
        self.sent = 0  # messages told to the RunActor that count toward its `seen`
        self.claimed = claimed  # taken from the cluster's queue: this node drives it, whoever recorded last


class Orchestrator(pykka.ThreadingActor):
    """One per engine (process).

    ``on_death(run_ids, error)`` is called (from the dying actor's thread) if the
    actor fails; ``adopt`` are runs a failed predecessor was driving, driven
    again at start even when this engine does not recover runs.
    """

    # A daemon thread: an actor blocked in a call that cannot be interrupted must not keep
    # the process alive once it is told to stop (everything recorded is durable already).
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        """A ``queue.SimpleQueue``, as the RunActor's (``RunActor._create_actor_inbox``)."""
        return queue.SimpleQueue()

    def __init__(self, ctx: EngineContext, on_death: Callable[[tuple[str, ...], str], None] | None = None,
                 adopt: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.ctx = ctx
        self._on_death = on_death
        self._adopt = adopt
        self._recover_tries = 0
        self._recover_due = False  # a retry of recovery is scheduled
        self.runs: dict[str, _Run] = {}  # the runs known here (the same as the scheduler's)
        self.cluster: clustering.Cluster | None = None  # set at start when this node is part of a cluster
        self._kicks = clustering.Kicks(self._tell_self, _Kick)  # one _Kick of each kind on its way at most
        epoch = uuid.uuid4().hex[:12]
        self.scheduler = (clustering.ClusterScheduler(ctx.config.agent_slots, epoch=epoch) if clustering.enabled(ctx)
                          else Scheduler(ctx.config.max_active_runs, ctx.config.agent_slots, epoch=epoch))
        self._renewal: Any = None
        self.liveness = Liveness(ctx.leases, ctx.config.node)
        self._retries: dict[str, int] = {}  # run -> times it was driven again after a failure
        self._approval_timers: dict[str, Any] = {}  # run -> the timer of its paused approval (durable: in the log)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        try:
            if isinstance(self.scheduler, clustering.ClusterScheduler):
                self.cluster = clustering.join(self.ctx, self._kicks.kick)
            if self.ctx.config.recover:
                self._try_recover()
            for run_id in self._adopt:
                self._tell_self(_Redrive(run_id))
            self._heartbeat()
            self._warm_command_read()
        except Exception as exc:  # pykka stops the actor without calling on_failure: call it, then let it stop
            self.on_failure(type(exc), exc, exc.__traceback__)
            raise

    def _warm_command_read(self) -> None:
        """Run a command's read (a run's stream and the leases, ``load_with_owner_and_leases``) once, for no
        run: the first command of a fresh process for a run it has not loaded (an approval after a
        restart: W4 fresh) then finds that read's path warm, on the connection it will take (the last
        one used), instead of paying for it cold on its critical path (docs/PERFORMANCE.md)."""
        try:
            load_with_owner_and_leases(self.ctx, "")
        except StoreError:  # the database is away for a moment: the first command reads it cold
            pass

    def on_stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
        for timer in self._approval_timers.values():
            timer.cancel()
        self._stop_runs(timeout=3.0)
        if self.cluster is not None:  # the others take this node's runs over now, not when its lease ends
            self.cluster.hand_off(list(self.runs), lambda: self.ctx.leases.release(node_lease(self.ctx.config.node),
                                                                                   default_owner()))
            self.cluster.close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        """The actor dies of an exception: stop its RunActors and let the engine start another."""
        log.error("the orchestrator failed (%s: %s); its runs are handed to a new one",
                  getattr(exception_type, "__name__", exception_type), exception_value)
        if self._renewal is not None:
            self._renewal.cancel()
        self._stop_runs(timeout=3.0)
        if self.cluster is not None:  # the next orchestrator joins again (and adopts the runs)
            self.cluster.close()
        if self._on_death is not None:
            name = getattr(exception_type, "__name__", str(exception_type))
            self._on_death(tuple(self.runs), f"{name}: {exception_value}")

    def _stop_runs(self, timeout: float) -> None:
        """Stop every RunActor at once and wait for them together, at most ``timeout`` seconds.

        An actor blocked in a call (an append while the database is away) is not
        waited for any longer: its thread is a daemon, and its run is recovered.
        """
        stopping = []
        for run in self.runs.values():
            if run.ref is not None:
                try:
                    stopping.append(run.ref.stop(block=False))
                except pykka.ActorDeadError:
                    pass
        try:
            pykka.get_all(stopping, timeout=timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            log.warning("some run actors did not stop within %.0f s; their runs are recovered at the next start",
                        timeout)

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise TypeError(f"Orchestrator got an unknown message {message!r}")
        try:
            return handler(self, message)
        finally:
            self._plan_changed()  # whatever the message changed in the plan, as one delta

    def _recover(self) -> None:
        """Take over every run that has not ended and no live process drives (DESIGN §4,
        ``actors.recovery``): a run parked at an approval is registered paused with its timer armed,
        its stream read only when something touches it; every other run is told to recover.

        Runs at start, and again whenever a node this process knew alive has
        lost its lease (its process is gone): its runs are then ours to finish.
        """
        live, now = self.liveness.live(), self.ctx.clock.now()
        found = recovery.unfinished(self.ctx, live, now, self.runs)
        if self.cluster is not None:  # one transaction for them all; queued ones the cluster's queue admits
            ours = self.cluster.adopt_many([(f.run_id, f.flow, f.since, f.phase.value) for f in found])
            found = [f for f in found if f.run_id in ours]
        for f in found:
            run = self._register(f.run_id, f.flow, f.since, f.phase)
            if f.state is not None and f.state.tasks is not None:  # a task run's plan entry carries its tasks
                self.scheduler.set_tasks(f.run_id, plan_view(f.state.tasks, 0))
            if f.phase is Phase.ACTIVE:
                self._tell_run(run, m.Recover(self.ctx.config.node))
            else:
                self._arm_approval(f.run_id, f.timer_at if f.state is None else decide(f.state, now).timer_at)
        self._schedule()
        self._plan_changed()

    def _try_recover(self) -> None:
        """Recover, or, if the store fails, try again later (RETRY_CAP_S at most between tries)."""
        try:
            self._recover()
        except StoreError as exc:
            self._recover_tries += 1
            if self._recover_due:
                return  # a try is already scheduled
            delay = backoff(self._recover_tries)
            log.warning("could not recover unfinished runs (%s); trying again in %.1f s", exc, delay)
            self._recover_due = True
            self.ctx.clock.call_later(delay, lambda: self._tell_self(_Recover()))
        else:
            self._recover_tries = 0

    def _heartbeat(self) -> None:
        """Renew this process's node lease, and arm the next renewal (a third of the TTL).

        Other processes read the lease to tell a run driven by a live process
        (leave it alone) from one whose process is gone (recover it).
        """
        node = self.ctx.config.node
        try:
            if not self.ctx.leases.renew(default_owner()):
                holder = self.ctx.leases.acquire(node_lease(node), default_owner())
                if holder is not None:
                    log.error("another live process (%s) has taken node name %s; give each process its own "
                              "BATON_NODE", holder, node)
            if self.cluster is not None:
                self.cluster.beat()
                self.cluster.tidy(set(self.runs), lambda run_id: load_with_owner(self.ctx, run_id)[0].terminal)
        except Exception:  # the database is away for a moment: the next beat tries again
            log.warning("could not renew the node lease", exc_info=True)
        self._renewal = self.ctx.clock.call_later(self.ctx.config.lease_ttl_s / 3, self._beat)
        try:
            gone = self.liveness.gone()
        except Exception:
            log.warning("could not read the node leases", exc_info=True)
            return
        if gone and self.ctx.config.recover:
            log.warning("node(s) %s stopped renewing their lease; taking over their runs", ", ".join(sorted(gone)))
            self._try_recover()
        elif self.cluster is not None:
            self._schedule()  # a lost notification costs one beat at most

    def _beat(self) -> None:
        self._tell_self(_Renew())

    # -- commands ----------------------------------------------------------------------------

    def _on_launch(self, msg: m.LaunchRun) -> None:
        ev = msg.event
        if ev.run_id in self.runs:  # a second launch of the same run id (a repeated Idempotency-Key)
            if not msg.reply.done():
                msg.reply.set_exception(LaunchInProgress(ev.run_id))
            return
        if ev.parent_run_id:  # a subflow's child counts toward capacity, but never waits behind the queue:
            self.scheduler.add(ev.run_id, ev.flow, ev.at, Phase.ACTIVE)  # its parent's room waits on it
            admission = Admission(True, f"child of run {ev.parent_run_id}", 0)
        elif self.cluster is not None:  # recorded queued; once recorded, it joins the cluster's queue (_on_idle)
            self.scheduler.add(ev.run_id, ev.flow, ev.at, Phase.UNPLANNED)
            admission = clustering.queued_admission()
        else:
            admission = self.scheduler.launch(ev.run_id, ev.flow, ev.at)
        run = self.runs[ev.run_id] = _Run(ev.run_id)
        self._tell_run(run, m.Launch(ev, admission.start, admission.reason, admission.position, msg.reply,
                                      msg.after))

    def _on_command(self, msg: m.RunCommand) -> None:
        run = self.runs.get(msg.run_id)
        if run is None:  # ended, or never seen by this process: its actor will look at the log
            run = self._register(msg.run_id, "", self.ctx.clock.now(), Phase.UNPLANNED)
        if msg.kind == "cancel":
            told = self._tell_run(run, m.Cancel(msg.comment or "cancelled", msg.by, msg.reply))
        elif msg.kind.startswith("task-"):  # a person's word on one task of a task run (actors.run_tasks)
            self.scheduler.resume(run.run_id)
            told = self._tell_run(run, m.TaskCommand(msg.step_id, msg.kind[5:], msg.by, msg.comment, msg.reply))
        else:
            decision = "approved" if msg.kind == "approve" else "rejected"
            self.scheduler.resume(run.run_id)  # an answered approval never waits behind the queue
            if self.cluster is not None:
                self._in_cluster(self.cluster.active, run.run_id)
            told = self._tell_run(run, m.Resume(msg.step_id, decision, msg.by, msg.comment, msg.reply))
        if not told:  # another process drives it
            self._forget(msg.run_id)
            self._schedule()

    def _current(self, run_id: str, urn: str) -> _Run | None:
        """The run, if ``urn`` is its current actor (word from a replaced actor is stale)."""
        run = self.runs.get(run_id)
        if run is None or run.ref is None or (urn and run.ref.actor_urn != urn):
            return None
        return run

    def _on_idle(self, msg: m.RunIdle) -> None:
        run = self._current(msg.run_id, msg.urn)
        if run is None or run.sent != msg.seen:
            return  # a command reached the actor after it said it was idle: it is busy again
        assert run.ref is not None
        if self.cluster is not None and msg.status == "queued" and \
                self.scheduler.phase(msg.run_id) is Phase.UNPLANNED:  # its launch is recorded: to the queue
            self._to_queue(self.cluster, run)
            return
        run.ref.stop(block=False)
        run.ref = None
        if msg.status == "paused":
            self.scheduler.pause(msg.run_id)
            if self.cluster is not None:
                self._in_cluster(self.cluster.paused, msg.run_id)
            self._arm_approval(msg.run_id, msg.timer_at)
        elif msg.status == "running":
            log.error("run %s is running but has nothing to do; it stays registered", msg.run_id)
        elif msg.status != "queued":  # unknown or already ended: a command found nothing to do
            self._forget(msg.run_id)
        self._schedule()

    def _to_queue(self, cluster: clustering.Cluster, run: _Run) -> None:
        """A launch recorded queued joins the cluster's queue, and this node admits the head then if it
        would. Taken so, the run is begun by its idle actor, which holds its state; else the actor stops,
        and the node named to admit the run starts one (this one at once, another on NOTIFY)."""
        assert isinstance(self.scheduler, clustering.ClusterScheduler) and run.ref is not None
        flow, since = self.scheduler.entry(run.run_id)
        try:
            queued = cluster.enqueue(run.run_id, flow, since)
        except StoreError as exc:  # queued in the log: it joins the queue when it is driven again
            self._forget(run.run_id)
            self._redrive_later(run.run_id, exc)
            return
        if not any(item.item_id == run.run_id for item in queued.taken):
            self._forget(run.run_id)
        self._admitted(queued.taken, queued.deferred, launched=run)
        if queued.taken:
            self._schedule(read_queue=False)
        elif queued.named == cluster.node and not queued.deferred:
            self._schedule()

    def _on_ended(self, msg: m.RunEnded) -> None:
        if self._current(msg.run_id, msg.urn) is None:
            return
        self._retries.pop(msg.run_id, None)
        self._forget(msg.run_id)
        if self.cluster is not None:
            self._in_cluster(self.cluster.ended, msg.run_id)
        # The cluster's queue is not read here: the queue writer's commit of this end asks it in its
        # transaction and, if a run waits, names the least busy node to admit it (this one's kick if
        # it is this one). One read fewer per run that ends, a queued run admitted GATHER_S later at most.
        self._schedule(read_queue=False)

    def _on_fenced(self, msg: m.RunFenced) -> None:
        if self._current(msg.run_id, msg.urn) is None:
            return  # a stale actor (a duplicate launch, a replaced actor): the run's own actor goes on
        self._forget(msg.run_id)
        if msg.retry and self.ctx.config.recover:
            self._redrive_later(msg.run_id, msg.error)
        else:
            log.warning("run %s left to its owner: %s", msg.run_id, msg.error)
        self._schedule()

    def _redrive_later(self, run_id: str, error: object) -> None:
        """Drive the run again after a pause that doubles with each try (RETRY_CAP_S at most)."""
        tries = self._retries.get(run_id, 0) + 1
        self._retries[run_id] = tries
        delay = backoff(tries)
        log.warning("run %s stopped (%s); driving it again in %.1f s", run_id, error, delay)
        self.ctx.clock.call_later(delay, lambda: self._tell_self(_Redrive(run_id)))

    def _on_redrive(self, msg: _Redrive) -> None:
        """Drive a run again after its actor stopped on a store failure or a crash."""
        if msg.run_id in self.runs:
            return
        try:
            state, _, last_node = load_with_owner(self.ctx, msg.run_id)
            elsewhere = driven_elsewhere(state, last_node, self.ctx.config.node, self.liveness.live_with(last_node))
        except StoreError as exc:
            self._redrive_later(msg.run_id, exc)
            return
        if state.terminal or state.launched is None:
            self._retries.pop(msg.run_id, None)
            return
        if elsewhere:
            return
        phase = recovery.phase_found(state, self.ctx.clock.now())
        if self.cluster is not None:
            try:
                if not self.cluster.adopt(msg.run_id, state.launched.flow, state.launched_at, phase.value):
                    return  # queued (the cluster's queue admits it) or driven by a live node
            except StoreError as exc:
                self._redrive_later(msg.run_id, exc)
                return
        run = self._register(msg.run_id, state.launched.flow, state.launched_at, phase)
        if phase is Phase.ACTIVE:
            self._tell_run(run, m.Recover(self.ctx.config.node))
        else:
            self._arm_approval(msg.run_id, decide(state, self.ctx.clock.now()).timer_at)
        self._schedule()

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # stopped: the next start recovers what is left

    def _arm_approval(self, run_id: str, at: float | None) -> None:
        """Keep the timer of a paused run's approval (its due time is in the log: recovery arms it again)."""
        old = self._approval_timers.pop(run_id, None)
        if old is not None:
            old.cancel()
        if at is not None:
            delay = max(0.0, at - self.ctx.clock.now())
            self._approval_timers[run_id] = self.ctx.clock.call_later(
                delay, lambda: self._tell_self(_ApprovalDue(run_id)))

    def _on_approval_due(self, msg: _ApprovalDue) -> None:
        """Wake a paused run whose approval timer fell due: its actor decides (``flows.decide.timed_out``)."""
        self._approval_timers.pop(msg.run_id, None)
        run = self.runs.get(msg.run_id)
        if run is None or self.scheduler.phase(msg.run_id) is not Phase.PAUSED:
            return  # ended, driven elsewhere, or under way (its own actor keeps the timer meanwhile)
        self.scheduler.resume(msg.run_id)
        if not self._tell_run(run, m.Begin("approval timer")):
            self._forget(msg.run_id)
        self._schedule()
        self._plan_changed()

    def _register(self, run_id: str, flow: str, since: float, phase: Phase) -> _Run:
        """Know a run found in the log (or named by a command): a handle here, its phase in the scheduler."""
        self.scheduler.add(run_id, flow, since, phase)
        run = self.runs[run_id] = _Run(run_id)
        return run

    def _forget(self, run_id: str) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None and run.ref is not None:
            run.ref.stop(block=False)
        self.scheduler.forget(run_id)

    # -- capacity ----------------------------------------------------------------------------

    def _schedule(self, read_queue: bool = True) -> None:
        """Act on what the scheduler decides now: start the queued runs it admits, hand out free slots.

        A run that cannot be told to begin (the store is away, or another
        process drives it) is forgotten, which makes room for the next.
        ``read_queue``: False leaves the cluster's queue alone (a run's end: see ``_on_ended``).
        """
        if self.cluster is not None:
            self._cluster_schedule(self.cluster, read_queue)
        while started := self.scheduler.admit():
            for run_id in started:
                if not self._tell_run(self.runs[run_id], m.Begin(START_FREED)):
                    self._forget(run_id)
        for grant in self.scheduler.grant():
            run = self.runs.get(grant.run_id)
            if run is not None:
                self._tell_run(run, m.SlotsGranted(grant.step_ids))

    def _cluster_schedule(self, cluster: clustering.Cluster, read_queue: bool = True) -> None:
        """Take what the cluster's queue admits for this node, and hold the slots its steps want."""
        assert isinstance(self.scheduler, clustering.ClusterScheduler)
        try:
            admitted, deferred = cluster.admit() if read_queue else ([], False)
            cluster.fit_slots(self.scheduler)
        except StoreError as exc:  # the next kick or beat tries again
            log.warning("the cluster's queue could not be read: %s", exc)
            return
        self._admitted(admitted, deferred)

    def _admitted(self, admitted: Iterable[Item], deferred: bool, launched: _Run | None = None) -> None:
        """Drive the runs this node took from the cluster's queue (``launched``, a run whose launch's
        idle actor is still here, keeps it); ``deferred``: the head was left to a less busy node, taken
        here if it has not been after a moment."""
        for item in admitted:
            if launched is not None and item.item_id == launched.run_id:
                run = launched
                self.scheduler.forget(run.run_id)
                run.claimed = True
            else:
                if item.item_id in self.runs:  # known here for a command: drive it as admitted
                    self._forget(item.item_id)
                run = self.runs[item.item_id] = _Run(item.item_id, claimed=True)
            self.scheduler.add(item.item_id, item.label, item.since, Phase.ACTIVE)
            if not self._tell_run(run, m.Begin(clustering.START_CLAIMED)):
                self._forget(item.item_id)
        if deferred:
            self.ctx.clock.call_later(clustering.PATIENCE_S, lambda: self._kicks.kick("patience"))

    def _in_cluster(self, call: Callable[..., None], *args: Any) -> None:
        """Tell the cluster's tables; a store failure is logged (the lease and the log settle it later)."""
        try:
            call(*args)
        except StoreError as exc:
            log.warning("the cluster's tables could not be updated (%s): %s", getattr(call, "__name__", call), exc)

    def _on_kick(self, msg: _Kick) -> None:
        self._kicks.taken(msg.kind)
        if msg.kind == "handoff" and self.ctx.config.recover:
            try:
                self.liveness.live(fresh=True)  # the node that left gave its lease up a moment ago
            except StoreError:
                pass  # recovery meets the same error, and tries again later
            self._try_recover()  # a stopping node gave its runs up: claim them now
        else:
            self._schedule()

    def _on_request(self, msg: m.RequestSlots) -> None:
        self.scheduler.request(msg.run_id, msg.step_ids)
        self._schedule()

    def _on_release(self, msg: m.ReleaseSlots) -> None:
        self.scheduler.release(msg.run_id, held=msg.held, withdrawn=msg.withdrawn)
        self._schedule()

    # -- the plan ----------------------------------------------------------------------------

    def _on_tasks_changed(self, msg: m.TasksChanged) -> None:
        """A task run's tasks moved: its plan entry carries them, and the next ``plan_delta`` frame."""
        self.scheduler.set_tasks(msg.run_id, msg.tasks)
        self._plan_changed()

    def _on_plan(self, msg: m.PlanQuery) -> None:
        if not msg.reply.done():
            msg.reply.set_result(self.plan())

    def plan(self) -> dict[str, Any]:
        """The scheduler's plan (``Scheduler.plan``): in progress, planned with why it waits, new.

        Any change not yet published goes out first, so the plan's ``seq`` is
        that of the last ``plan_delta`` frame and the frames after it apply to it.
        In a cluster, the cluster's plan (``Cluster.plan``), with the node driving each run (its
        ``epoch`` and ``seq`` are this node's: its ``plan_delta`` frames carry this node's changes).
        """
        self._plan_changed(force=True)
        if self.cluster is not None:
            try:
                return {**self.cluster.plan(), "epoch": self.scheduler.epoch, "seq": self.scheduler.seq}
            except StoreError as exc:
                log.warning("the cluster's plan could not be read: %s", exc)
        return self.scheduler.plan()

    def _plan_changed(self, force: bool = False) -> None:
        """Publish what changed in the plan as one ``plan_delta`` frame (the work is the runs touched).

        With nobody listening (an engine without a server, or a server's start before its
        app) the changes are left to gather in the scheduler, and consumed without building
        a frame (``Scheduler.delta_unseen``) before the plan is read (``force``) or once a
        few thousand gathered: the next delta carries every run they touched, and follows
        on from the plan read. (A start that recovered 10,000 parked runs built a delta of
        10,000 entries for nobody.)
        """
        if not len(self.ctx.bus):
            if force or self.scheduler.pending_changes() >= PLAN_GATHER:
                self.scheduler.delta_unseen()  # nobody takes a frame: no entry is built
            return
        delta = self.scheduler.delta()
        if delta is not None:
            self.ctx.bus.publish({"type": "plan_delta", **delta})

    # -- plumbing ----------------------------------------------------------------------------

    def _tell_run(self, run: _Run, message: Any) -> bool:
        """Tell the run's actor, starting it if needed.

        Before taking over a run this process did not launch, check where the
        command belongs (``runlog.route``): with another live process driving
        it, the reply (if any) gets RunOwnedElsewhere naming that node (the
        Engine hands the command to its inbox); with code steps this process
        cannot import, FlowsModuleMissing. Either way nothing is started.
        """
        if run.ref is None or not run.ref.is_alive():
            # A launch's run is new (its id was just made): its stream is empty, not read. (Were it not, the
            # launch's append, expecting version 0, would fail as a conflict.)
            loaded: tuple[RunState, list[Any]] | None = (RunState(run_id=run.run_id), []) \
                if isinstance(message, m.Launch) else None
            if not isinstance(message, (m.Launch, m.Recover)) and not run.claimed:
                reply = getattr(message, "reply", None)
                try:
                    # (the leases read with the stream, in its round trip: fresh, and after it)
                    state, history, last_node, held = load_with_owner_and_leases(self.ctx, run.run_id)
                    loaded = (state, history)
                    runs_code = not isinstance(message, m.Cancel)
                    where = route(state, last_node, self.ctx.config.node, self.liveness.live_from(held, last_node),
                                  lambda: missing_module(state, self.ctx.registry) if runs_code else "")
                except StoreError as exc:  # the command gets the error (503); the run is driven again later
                    if reply is not None and not reply.done():
                        reply.set_exception(exc)
                    known = self.scheduler.phase(run.run_id) is not Phase.UNPLANNED
                    self._forget(run.run_id)
                    if known:
                        self._redrive_later(run.run_id, exc)
                    return False
                if where.node or where.missing:
                    if reply is not None and not reply.done():
                        reply.set_exception(RunOwnedElsewhere(run.run_id, where.node, node=where.node) if where.node
                                            else FlowsModuleMissing(run.run_id, where.missing))
                    return False
            run.ref = RunActor.start(self.ctx, self.actor_ref, run.run_id, loaded)
            run.sent = 0
        run.sent += 1
        run.ref.tell(message)
        return True

    def _on_renew(self, msg: _Renew) -> None:
        self._heartbeat()

    def _on_recover(self, msg: _Recover) -> None:
        self._recover_due = False
        self._try_recover()

    _handlers: ClassVar[dict[type, Callable[[Orchestrator, Any], Any]]] = {
        m.LaunchRun: _on_launch,
        m.RunCommand: _on_command,
        m.RunIdle: _on_idle,
        m.RunEnded: _on_ended,
        m.RunFenced: _on_fenced,
        m.RequestSlots: _on_request,
        m.ReleaseSlots: _on_release,
        m.PlanQuery: _on_plan,
        m.TasksChanged: _on_tasks_changed,
        _Renew: _on_renew,
        _Recover: _on_recover,
        _Redrive: _on_redrive,
        _Kick: _on_kick,
        _ApprovalDue: _on_approval_due,
    }
