"""Engine: the one object the outside (HTTP, CLI, tests) drives.

It checks a command where it can be checked without the run (the flow exists,
the band is real, there is a question), then tells the orchestrator and waits
on the reply with a timeout. A rejected command appends nothing.

It also supervises the orchestrator (pykka has no supervision): one that
died is started again, at once when a call needs it and otherwise after a
short pause, and its runs are driven again. While the store is known to be
away, a command is refused at once (StoreUnavailableError: a 503) rather
than left to wait out the ask timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Self, overload

import msgspec
import pykka

from actors import messages as m
from actors.agents import Backend, make_backend
from actors.bus import FrameBus
from actors.clock import Clock, RealClock
from actors.config import EngineConfig
from actors.context import EngineContext
from actors.errors import (
    EngineTimeout,
    EngineUnavailable,
    LaunchInProgress,
    NodeInUse,
    RunNotSettled,
    RunOwnedElsewhere,
)
from actors.ids import new_ulid
from actors.inbox import READY_S, Inbox, new_command, outcome_of
from actors.launched import Launched as Launched  # its home is light: a CLI command sent to a server builds one
from actors.orchestrator import Orchestrator
from actors.run_tasks import TASK_ACTIONS, TaskCommandRefused
from actors.runlog import KnownRuns, follow, live_nodes, load, node_lease
from actors.step_threads import StepThreads
from actors.task_attempt import TaskEnv, task_env
from actors.workspace.projects import ProjectBook
from eventstore import (
    ConcurrencyError,
    NewEvent,
    Outage,
    RecordedEvent,
    SqlStore,
    StoreError,
    StoreUnavailableError,
)
from eventstore.leases import Leases, default_owner
from flows import fork as forking
from flows import launch as launching
from flows.catalog import FlowRegistry
from flows.commands import CommandKind, CommandRequested, Refusal
from flows.errors import UnknownRun
from flows.events import RunLaunched, stream_of
from flows.launch import LaunchParams
from flows.state import RunState
from flows.status import RUN_TERMINAL
from flows.text import check_text

log = logging.getLogger(__name__)

TERMINAL = RUN_TERMINAL
_HOPS = 3  # times a command follows a run from node to node before giving up


# How long a command waits on a store that has started failing before it is answered with a 503.
STORE_GRACE_S = 2.0



def new_run_id() -> str:
    """A sortable run id (ULID)."""
    return new_ulid()


class Engine:
    """Orchestrator, RunActors and StepActors over one store.

    ``start()`` recovers every run that had not ended; ``stop()`` stops the
    actors (runs in flight are recovered by the next start).
    """

    def __init__(
        self,
        store: SqlStore,
        registry: FlowRegistry,
        config: EngineConfig | None = None,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        bus: FrameBus | None = None,
        tasks: TaskEnv | None = None,
        open_runs: Callable[[], KnownRuns | None] | None = None,
    ) -> None:
        """``tasks`` sets how task runs run (DESIGN §12); by default from ``config.worktrees`` and the backend."""
        self.config = config or EngineConfig()
        self.store = store
        self.registry = registry
        self.bus = bus if bus is not None else FrameBus()  # an empty bus is falsy (it has a length)
        self.clock = clock or RealClock()
        self.backend = backend or make_backend(self.config.backend, model=self.config.model)
        leases = Leases(store.database, ttl_s=self.config.lease_ttl_s, read=getattr(store, "read_sql", None))
        self._steps = StepThreads(self.config.step_threads)
        # A RunActor's messages are handled on one of these when a step's thread does not handle them
        # (actors.mailbox): a run's first message (a launch, an approval) does not wait for a thread to
        # start. Few are kept idle; there is no cap (a run holds one only while it handles a message).
        self._actor_threads = StepThreads(1 << 30, "baton-run", keep_idle=8)
        self.projects = ProjectBook(store, self.clock.now)
        self.ctx = EngineContext(store, registry, self.backend, self.bus, self.clock, self.config, leases,
                                 self._steps, tasks if tasks is not None else task_env(self.config, self.backend),
                                 open_runs, children=self, actor_threads=self._actor_threads)
        self._orchestrator: pykka.ActorRef[Any] | None = None
        self._inbox: Inbox | None = None
        self._supervising = threading.Lock()  # one restart of the orchestrator at a time
        self._stopped = False
        self.restarts = 0  # times the orchestrator was started again after it failed
        self.last_failure = ""  # why it last failed
        self._orphans: tuple[str, ...] = ()  # runs a failed orchestrator left, for the next one to drive
        self._launching: set[str] = set()  # run ids whose launch call has not returned (idempotency)
        self._launching_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the orchestrator (which recovers unfinished runs). Returns self."""
        if self._orchestrator is None:
            node = self.config.node
            holder = self.ctx.leases.acquire(node_lease(node), default_owner())
            if holder is not None:
                raise NodeInUse(node, holder)
            self._stopped = False
            self._orchestrator = Orchestrator.start(self.ctx, self._orchestrator_died)
            self._steps.prestart()  # the first attempt (an approval's next step) starts no thread
            self._actor_threads.prestart()  # nor the first run's actor
            self._inbox = Inbox(self.store, self.ctx.leases, node, self._carry_out, self.clock.now).start()
            # Its LISTEN connection and first read now, not under the first command (Engine.wait then
            # sees that command's commits at once): bounded, an engine starts with its database away too.
            self._inbox.ready.wait(READY_S)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every actor of this engine; unfinished runs stay in the log.

        Returns within about ``timeout`` seconds whatever the actors are doing
        (their threads are daemons; what they did not finish is recovered).
        """
        if self._inbox is not None:  # first: no command handed to this node may reach a stopped orchestrator
            self._inbox.stop()
            self._inbox = None
        with self._supervising:
            self._stopped = True
            orchestrator, self._orchestrator = self._orchestrator, None
        if orchestrator is not None:
            try:
                orchestrator.stop(block=True, timeout=timeout)
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
            try:
                self.ctx.leases.release(node_lease(self.config.node), default_owner())
            except StoreError as exc:  # the lease runs out on its own
                log.warning("could not give the node lease up: %s", exc)
        self._steps.shutdown(wait=False, cancel_futures=True)  # attempts in flight were cancelled above
        self._actor_threads.shutdown(wait=False)  # the actors were stopped above (a late one gets a thread of its own)
        if isinstance(self.clock, RealClock):
            self.clock.stop()
        self.backend.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------------------------

    @overload
    def launch(self, params: LaunchParams, /) -> Launched: ...

    @overload
    def launch(
        self,
        flow: str,
        question: str,
        *,
        band: str = launching.DEFAULT_BAND,
        model: str = "",
        project_id: str = "",
        inputs: Mapping[str, Any] | None = None,
        launched_by: str = "",
        idempotency_key: str = "",
        fast: bool = False,
    ) -> Launched: ...

    def launch(
        self,
        flow: str | LaunchParams,
        question: str = "",
        *,
        band: str = launching.DEFAULT_BAND,
        model: str = "",
        project_id: str = "",
        inputs: Mapping[str, Any] | None = None,
        launched_by: str = "",
        idempotency_key: str = "",
        fast: bool = False,
    ) -> Launched:
        """Launch a run; raises UnknownFlow or LaunchError (nothing appended).

        The request is one ``LaunchParams`` (what the HTTP route and the CLI
        build), or its fields spelled out (``launch("triage", "why?",
        band="medium")``, for Python callers): the same value either way.
        """
        if isinstance(flow, LaunchParams):
            if (question or band != launching.DEFAULT_BAND or model or project_id or inputs or launched_by
                    or idempotency_key or fast):
                raise TypeError("Engine.launch takes a LaunchParams or the fields of one, not both")
            params = flow
        else:
            params = LaunchParams(flow, question, band=band, model=model, project_id=project_id,
                                  inputs=inputs or {}, fast=fast, launched_by=launched_by,
                                  idempotency_key=idempotency_key)
        if not params.model and self.config.model:
            params = dataclasses.replace(params, model=self.config.model)
        run_id = new_run_id()
        # The project is pinned (HEAD, branch, dirty) when the run is launched: an unknown one is
        # refused, naming it, before anything is appended.
        event = launching.prepare(self.registry, params, run_id=run_id, now=self.clock.now(),
                                  backend=self.config.backend, pin=self.projects.pin)
        self._check_store()
        if params.idempotency_key:
            claimed = self._claim(params.idempotency_key, run_id)
            if claimed is None:
                try:
                    return self._launch(event)
                finally:
                    self._release(run_id)
            return self._relaunch(event, claimed)
        return self._launch(event)

    def _launch(self, event: Any) -> Launched:
        try:
            position = self._appending(lambda reply: m.LaunchRun(event, reply))
        except LaunchInProgress:
            position = self._launch_position(event.run_id, wait=True)
            if not position:
                raise
            return Launched(event.run_id, position, created=False)
        return Launched(event.run_id, position)

    def _relaunch(self, event: Any, claim: RecordedEvent) -> Launched:
        """A launch whose idempotency key an earlier call claimed: that call's run.

        Its launch is recorded (answer it), under way (wait for it), or was lost
        between the claim and the launch (its process crashed, or the store went
        away): then it is launched now, under the claimed run id, at once.
        """
        claimed = claim.data["run_id"]
        while True:
            under_way = self._under_way(claim)  # looked at before the log, so a launch ending between is seen
            position = self._launch_position(claimed)
            if position:
                return Launched(claimed, position, created=False)
            if under_way is None:
                break
            if not self._wait_launched(claimed, under_way):
                break
        if not self._take(claimed):
            position = self._launch_position(claimed, wait=True)
            if position:
                return Launched(claimed, position, created=False)
            raise LaunchInProgress(claimed)
        try:
            return self._launch(msgspec.structs.replace(event, run_id=claimed))
        finally:
            self._release(claimed)

    def _under_way(self, claim: RecordedEvent) -> float | None:
        """Until when a launch of the claimed run may still land (monotonic), or None if none can.

        In this process, a launch is under way while its call has not returned.
        Elsewhere, while the claiming node lives and its call has not timed out
        (the claim's age against the ask timeout).
        """
        claimed = claim.data["run_id"]
        with self._launching_lock:
            if claimed in self._launching:
                return time.monotonic() + self.config.ask_timeout_s
        node = claim.metadata.get("node", "")
        if node == self.config.node:
            return None  # this process claimed it and no call of it is launching it now
        left = claim.recorded_at + self.config.ask_timeout_s + 1.0 - time.time()
        if left <= 0 or (node and node not in live_nodes(self.ctx.leases.held())):
            return None
        return time.monotonic() + left

    def _wait_launched(self, run_id: str, until: float) -> bool:
        """Wait up to a second (never past ``until``, monotonic) for the run's RunLaunched; False once time is up."""
        left = until - time.monotonic()
        if left <= 0:
            return False
        try:
            self.wait(run_id, lambda s: s.launched is not None, timeout=min(left, 1.0))
            return True
        except EngineTimeout:
            return True  # look again: the launch may have ended without recording (then it is ours)

    def fork(self, run_id: str, from_step: str, *, inputs: Mapping[str, Any] | None = None, by: str = "",
             retry: bool = False) -> Launched:
        """Start a new run from ``run_id``'s log: the outcomes of steps not downstream of ``from_step``
        are copied, the rest runs afresh (``flows.fork``), with ``inputs`` changed where given.

        ``retry``: ``from_step`` must have failed, been cancelled or lost, in a run that ended.
        Raises UnknownRun, UnknownStep, NotRetryable, LaunchError, UnstorableText (nothing appended).
        """
        parent, history = load(self.ctx, run_id)
        if parent.launched is None:
            raise UnknownRun(run_id)
        events = forking.fork(parent, history, from_step, run_id=new_run_id(), now=self.clock.now(), by=by,
                              inputs=inputs, retry=retry)
        launched = events[0]
        assert isinstance(launched, RunLaunched)
        self._check_store()
        position = self._appending(lambda reply: m.LaunchRun(launched, reply, tuple(events[1:])))
        return Launched(launched.run_id, position)

    def launch_child(self, event: RunLaunched) -> None:
        """Launch a subflow step's child run, unless it exists already (called from the step's thread)."""
        if self.store.read_stream(stream_of(event.run_id), after_version=0):
            return
        try:
            self._appending(lambda reply: m.LaunchRun(event, reply))
        except (LaunchInProgress, RunOwnedElsewhere):  # launched meanwhile by an attempt before this one
            pass

    def retry(self, run_id: str, step_id: str, *, by: str = "") -> Launched:
        """Re-run a failed, cancelled or lost step of an ended run and everything downstream of it, as a fork."""
        return self.fork(run_id, step_id, by=by, retry=True)

    def approve(self, run_id: str, step_id: str, *, by: str = "", comment: str = "") -> int:
        """Approve a paused step; returns the position of StepResumed. Raises NotWaiting & co."""
        return self._command(new_command(CommandKind.APPROVE, run_id, step_id=step_id, by=by, comment=comment))

    def reject(self, run_id: str, step_id: str, *, by: str = "", comment: str = "") -> int:
        """Reject a paused step; returns the position of StepResumed."""
        return self._command(new_command(CommandKind.REJECT, run_id, step_id=step_id, by=by, comment=comment))

    async def decide_async(self, decision: str, run_id: str, step_id: str, *, by: str = "", comment: str = "") -> int:
        """``approve`` or ``reject`` (``decision``) from a coroutine: the same outcome and errors, awaited
        on the event loop (``command_async``)."""
        kind = CommandKind.APPROVE if decision == "approve" else CommandKind.REJECT
        return await self.command_async(new_command(kind, run_id, step_id=step_id, by=by, comment=comment))

    def cancel(self, run_id: str, *, reason: str = "", by: str = "") -> int:
        """Cancel a run; returns the position of RunCancelled. Raises RunFinished if it ended."""
        return self._command(new_command(CommandKind.CANCEL, run_id, by=by, comment=reason))

    def launch_tasks(self, event: RunLaunched) -> Launched:
        """Launch a task run from its RunLaunched (``flows.tasks.launch.task_run_launched``)."""
        self._check_store()
        return self._launch(event)

    def task_command(self, run_id: str, step_id: str, action: str, *, text: str = "", by: str = "") -> int:
        """A person's ``message``, ``abort``, ``retry`` or ``skip`` of one task; the position of its first event.

        Carried out here, or handed to the node driving the run (its inbox) as
        approve / reject / cancel are. Raises TaskCommandRefused or
        TaskTransitionError (nothing appended) when it does not apply now,
        with the same message wherever the run is driven.
        """
        if action not in TASK_ACTIONS:
            raise TaskCommandRefused(f"unknown task action {action!r}; actions are {', '.join(TASK_ACTIONS)}")
        check_text("text", text)  # before it is handed on: an inbox could not hold it either
        check_text("by", by)
        return self._command(new_command(CommandKind(f"task-{action}"), run_id, step_id=step_id, by=by, comment=text))

    def plan(self) -> dict[str, Any]:
        """The scheduler's plan: in progress, planned with reasons, new."""
        plan: dict[str, Any] = self._ask(lambda reply: m.PlanQuery(reply))
        return plan

    # -- reading -----------------------------------------------------------------------------

    def state(self, run_id: str) -> RunState:
        """The run's state folded from its stream (not from a read model)."""
        return load(self.ctx, run_id)[0]

    def recorded_position(self, run_id: str) -> int:
        """The position of the run's last commit when an actor of this engine drives it, or drove it to
        its end lately (0 otherwise): what a read of the run waits for in the read tables, so it shows
        what the engine recorded (a recovery after a restart, a step that just ended), not only what
        commands appended."""
        return self.ctx.watch.position(run_id)

    def wait(
        self,
        run_id: str,
        until: Callable[[RunState], bool] | Iterable[str] = TERMINAL,
        timeout: float = 30.0,
    ) -> RunState:
        """Block until the run's state satisfies ``until`` (a predicate or a set of statuses).

        A run this engine drives is watched through its RunActor's commits
        (``actors.watch``); any other (driven by another process, or by none)
        is followed in the store (``actors.runlog.follow``). Raises
        RunNotSettled (an EngineTimeout) with the last state seen.
        """
        statuses = None if callable(until) else frozenset(until)
        check = until if callable(until) else (lambda s, wanted=statuses: s.status in wanted)
        deadline = time.monotonic() + timeout
        state = self.ctx.watch.wait(run_id, check, statuses, deadline, timeout)  # a run driven here
        if state is not None:
            return state
        try:
            return follow(self.store, run_id, check, timeout=max(deadline - time.monotonic(), 0.0))
        except RunNotSettled as exc:  # named with the time the caller gave, not what was left of it
            raise RunNotSettled(run_id, exc.state, timeout) from None

    # -- plumbing ----------------------------------------------------------------------------

    def _command(self, command: CommandRequested) -> int:
        """Carry a command out here, or hand it to the node driving the run (its inbox) and wait.

        A node that dies before answering leaves the run to this process,
        which then takes it over as it would have had the node been gone
        from the start. Raises the command's own errors either way, or
        NodeDidNotAnswer when a live node stays silent past the ask timeout.
        """
        self._check_store()
        try:
            return self._carry_out(command)
        except RunOwnedElsewhere as exc:
            return self._hand_on(command, exc)

    async def command_async(self, command: CommandRequested) -> int:
        """``_command`` for a caller on an event loop (the HTTP routes): the same outcome and errors.

        The orchestrator's answer is awaited on the loop instead of a thread
        of the pool blocking on it: one thread hop fewer per command. What
        blocks goes to a thread as before: a store known to be failing (its
        check reads the store), and a command handed to another node's inbox.
        """
        if self._outage() is not None:
            return await asyncio.to_thread(self._command, command)
        kind = command.kind.value
        try:
            position: int = await self._ask_async(
                lambda reply: m.RunCommand(command.run_id, kind, reply, command.step_id, command.by, command.comment))
            return position
        except RunOwnedElsewhere as exc:
            return await asyncio.to_thread(self._hand_on, command, exc)

    def _hand_on(self, command: CommandRequested, owned: RunOwnedElsewhere) -> int:
        """After ``_carry_out`` found the run driven by another node: hand the command to that node's
        inbox and wait, or carry it out here if the node is gone meanwhile (at most ``_HOPS`` times)."""
        for hop in range(_HOPS):
            if hop:
                try:
                    return self._carry_out(command)
                except RunOwnedElsewhere as exc:
                    owned = exc
            if not owned.node or self._inbox is None or owned.node == self.config.node:
                raise owned
            answer = self._inbox.send(owned.node, command, self.config.ask_timeout_s)
            if answer is None or answer.refusal is Refusal.OWNED_ELSEWHERE:
                continue  # the node is gone, or the run moved on meanwhile: look again where it is now
            return outcome_of(command, answer)
        raise owned

    def _carry_out(self, command: CommandRequested) -> int:
        """Carry a command out in this process (what a command handed to this node's inbox runs)."""
        kind = command.kind.value
        position: int = self._ask(lambda reply: m.RunCommand(command.run_id, kind, reply, command.step_id,
                                                             command.by, command.comment), command=True)
        return position

    def health(self) -> dict[str, Any]:
        """``{status, detail, restarts}``: "ok" while the orchestrator runs, else "down" (and why)."""
        orchestrator = self._orchestrator
        if orchestrator is not None and orchestrator.is_alive():
            detail = "the orchestrator is running"
            if self.restarts:
                detail += f" (restarted {self.restarts} time(s); last failure: {self.last_failure})"
            return {"status": "ok", "detail": detail, "restarts": self.restarts}
        why = "the engine is stopped" if self._stopped else f"the orchestrator failed: {self.last_failure or '?'}"
        return {"status": "down", "detail": why, "restarts": self.restarts}

    def _orchestrator_died(self, run_ids: tuple[str, ...], error: str) -> None:
        """Called from a dying orchestrator's thread: start another after a pause (unless a call does first)."""
        self.last_failure = error
        self._orphans = run_ids
        delay = min(30.0, 0.5 * 2 ** min(self.restarts, 6))
        self.clock.call_later(delay, self._revive_quietly)

    def _revive_quietly(self) -> None:
        try:
            self._revive()
        except EngineUnavailable:
            pass  # stopped meanwhile

    def _revive(self) -> pykka.ActorRef[Any]:
        """The running orchestrator, started anew if the last one died; EngineUnavailable if stopped."""
        with self._supervising:
            current = self._orchestrator
            if current is not None and current.is_alive():
                return current
            if self._stopped or current is None:
                raise EngineUnavailable("the engine is stopped" if self._stopped else "the engine is not started")
            self.restarts += 1
            log.error("starting the orchestrator again (restart %d)", self.restarts)
            adopt, self._orphans = self._orphans, ()
            self._orchestrator = Orchestrator.start(self.ctx, self._orchestrator_died, adopt)
            return self._orchestrator

    def _check_store(self) -> None:
        """Refuse a command at once while the store is known to be away (nothing is recorded).

        A failed read is confirmed by reading again (a read that succeeds ends
        it), so one blip long ago on a quiet server refuses nothing.
        """
        outage = self._outage()
        if outage is not None:
            try:
                self.store.head()
            except StoreError:
                pass
            outage = self._outage()
        if outage is not None:
            raise StoreUnavailableError(
                f"the event store has been unavailable for {time.time() - outage.since:.0f} s ({outage.error}); "
                "nothing was recorded: try again when it is back")

    def _outage(self) -> Outage | None:
        outage = getattr(self.store, "outage", None)
        return outage() if outage is not None else None

    def _appending(self, build: Callable[[Future[Any]], Any]) -> Any:
        """Ask the orchestrator a command that appends; a store failing meanwhile answers 503 within seconds."""
        self._check_store()
        return self._ask(build, command=True)

    async def _ask_async(self, build: Callable[[Future[Any]], Any]) -> Any:
        """``_ask(build, command=True)`` awaited on the running event loop (no thread waits on the reply)."""
        waiting = asyncio.wrap_future(self._send(build))
        deadline = time.monotonic() + self.config.ask_timeout_s
        while True:
            left = deadline - time.monotonic()
            await asyncio.wait((waiting,), timeout=max(0.0, min(left, 0.25)))
            if waiting.done():
                return waiting.result()
            self._stop_waiting_if(left, command=True)

    def _ask(self, build: Callable[[Future[Any]], Any], *, command: bool = False) -> Any:
        reply = self._send(build)
        deadline = time.monotonic() + self.config.ask_timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                return reply.result(timeout=max(0.0, min(left, 0.25) if command else left))
            except FutureTimeout:
                pass
            self._stop_waiting_if(left, command=command)

    def _send(self, build: Callable[[Future[Any]], Any]) -> Future[Any]:
        """Tell the orchestrator ``build(reply)``; the reply's future."""
        orchestrator = self._revive()
        reply: Future[Any] = Future()
        try:
            orchestrator.tell(build(reply))
        except pykka.ActorDeadError:
            raise EngineUnavailable("the orchestrator stopped; it is being started again") from None
        return reply

    def _stop_waiting_if(self, left: float, *, command: bool) -> None:
        """Raise when waiting for the orchestrator's answer must end: the store away past STORE_GRACE_S
        (a command), or no time ``left`` of the ask timeout."""
        outage = self._outage() if command else None
        if outage is not None and time.time() - outage.since >= STORE_GRACE_S:
            raise StoreUnavailableError(
                f"the event store became unavailable ({outage.error}); the command is not recorded yet "
                "and may still be when the store is back (a launch: retry it with the same Idempotency-Key)")
        if left <= 0:
            raise EngineTimeout(f"no answer from the engine within {self.config.ask_timeout_s:g} s")

    def _claim(self, key: str, run_id: str) -> RecordedEvent | None:
        """Claim an idempotency key for ``run_id``: None if this call won, else the earlier claim.

        The claim is an append with expected version 0 to a stream named by the
        key, so two concurrent launches (even in two processes) cannot both win.
        It records the claiming node, so a retry can tell a launch under way from
        one lost in a crash. ``run_id`` counts as launching from before the claim.
        """
        stream = "idempotency-" + hashlib.sha256(key.encode()).hexdigest()[:40]
        self._take(run_id)
        try:
            self.store.append(stream, [NewEvent("IdempotencyKeyClaimed", {"key": key, "run_id": run_id},
                                                {"node": self.config.node})], 0,
                              timeout=min(self.config.ask_timeout_s, 10.0))
            return None
        except ConcurrencyError:
            self._release(run_id)
            return self.store.read_stream(stream)[0]
        except BaseException:
            self._release(run_id)
            raise

    def _take(self, run_id: str) -> bool:
        """Mark a launch of ``run_id`` under way in this process; False if one already is."""
        with self._launching_lock:
            if run_id in self._launching:
                return False
            self._launching.add(run_id)
            return True

    def _release(self, run_id: str) -> None:
        with self._launching_lock:
            self._launching.discard(run_id)

    def _launch_position(self, run_id: str, *, wait: bool = False) -> int:
        """Position of the run's RunLaunched (0 if none); ``wait`` gives a launch under way time to land."""
        if wait:
            try:
                self.wait(run_id, lambda s: s.launched is not None, timeout=self.config.ask_timeout_s)
            except EngineTimeout:
                return 0
        events = self.store.read_stream(stream_of(run_id), after_version=0)
        return events[0].position if events else 0

