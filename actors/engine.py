"""Engine: the one object the outside (HTTP, CLI, tests) drives.

It checks a command where it can be checked without the run (the flow exists,
the band is real, there is a question), then tells the orchestrator and waits
on the reply with a timeout. A rejected command appends nothing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import msgspec
import pykka
from ulid import ULID

from actors import messages as m
from actors.agents import Backend, make_backend
from actors.bus import FrameBus
from actors.clock import Clock, RealClock
from actors.config import EngineConfig
from actors.context import EngineContext
from actors.errors import LaunchInProgress, NodeInUse, RunOwnedElsewhere
from actors.inbox import Inbox, new_command, outcome_of
from actors.runlog import node_lease
from actors.orchestrator import Orchestrator
from actors.runlog import decode, load
from eventstore import ConcurrencyError, EventStore, NewEvent
from eventstore.leases import Leases, default_owner
from flows import launch as launching
from flows.commands import CommandKind, CommandRequested, Refusal
from flows.catalog import FlowRegistry
from flows.events import stream_of
from flows.state import RUN_TERMINAL, RunState, evolve

log = logging.getLogger(__name__)

TERMINAL = RUN_TERMINAL
_HOPS = 3  # times a command follows a run from node to node before giving up


class EngineTimeout(TimeoutError):
    """The engine did not answer within its ask timeout."""


@dataclass(frozen=True)
class Launched:
    """The answer to a launch: the run, the position of its RunLaunched, and
    whether this call created it (False: the idempotency key named an earlier run)."""

    run_id: str
    position: int
    created: bool = True


def new_run_id() -> str:
    """A sortable run id (ULID)."""
    return str(ULID())


class Engine:
    """Orchestrator, RunActors and StepActors over one store.

    ``start()`` recovers every run that had not ended; ``stop()`` stops the
    actors (runs in flight are recovered by the next start).
    """

    def __init__(
        self,
        store: EventStore,
        registry: FlowRegistry,
        config: EngineConfig | None = None,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
        bus: FrameBus | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.store = store
        self.registry = registry
        self.bus = bus if bus is not None else FrameBus()  # an empty bus is falsy (it has a length)
        self.clock = clock or RealClock()
        self.backend = backend or make_backend(self.config.backend, model=self.config.model)
        leases = Leases(store.engine, ttl_s=self.config.lease_ttl_s)  # type: ignore[attr-defined]
        self._steps = ThreadPoolExecutor(self.config.step_threads, thread_name_prefix="baton-step")
        self.ctx = EngineContext(store, registry, self.backend, self.bus, self.clock, self.config, leases,
                                 self._steps)
        self._orchestrator: pykka.ActorRef | None = None
        self._inbox: Inbox | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Engine:
        """Start the orchestrator (which recovers unfinished runs). Returns self."""
        if self._orchestrator is None:
            node = self.config.node
            holder = self.ctx.leases.acquire(node_lease(node), default_owner())
            if holder is not None:
                raise NodeInUse(node, holder)
            self._orchestrator = Orchestrator.start(self.ctx)
            self._inbox = Inbox(self.store, self.ctx.leases, node, self._carry_out, self.clock.now).start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every actor of this engine; unfinished runs stay in the log."""
        if self._inbox is not None:  # first: no command handed to this node may reach a stopped orchestrator
            self._inbox.stop()
            self._inbox = None
        if self._orchestrator is not None:
            try:
                self._orchestrator.stop(block=True, timeout=timeout)
            except pykka.ActorDeadError:
                pass
            self._orchestrator = None
            self.ctx.leases.release(node_lease(self.config.node), default_owner())
        self._steps.shutdown(wait=False, cancel_futures=True)  # attempts in flight were cancelled above
        if isinstance(self.clock, RealClock):
            self.clock.stop()
        self.backend.close()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------------------------

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
    ) -> Launched:
        """Launch a run of ``flow``; raises UnknownFlow or LaunchError (nothing appended)."""
        run_id = new_run_id()
        event = launching.prepare(
            self.registry, run_id=run_id, now=self.clock.now(), flow=flow, question=question, band=band,
            model=model or self.config.model, backend=self.config.backend, project_id=project_id,
            inputs=inputs, launched_by=launched_by, idempotency_key=idempotency_key, fast=fast,
        )
        if idempotency_key:
            claimed = self._claim_key(idempotency_key, run_id)
            if claimed != run_id:
                # Another call holds the key: its launch is recorded, or about to be.
                position = self._launch_position(claimed, wait=True)
                if position:
                    return Launched(claimed, position, created=False)
                # the key was claimed but that launch never got recorded (its process died in between)
                event = msgspec.structs.replace(event, run_id=claimed)
        try:
            position = self._ask(lambda reply: m.LaunchRun(event, reply))
        except LaunchInProgress:
            position = self._launch_position(event.run_id, wait=True)
            if not position:
                raise
            return Launched(event.run_id, position, created=False)
        return Launched(event.run_id, position)

    def approve(self, run_id: str, step_id: str, *, by: str = "", comment: str = "") -> int:
        """Approve a paused step; returns the position of StepResumed. Raises NotWaiting & co."""
        return self._command(new_command(CommandKind.APPROVE, run_id, step_id=step_id, by=by, comment=comment))

    def reject(self, run_id: str, step_id: str, *, by: str = "", comment: str = "") -> int:
        """Reject a paused step; returns the position of StepResumed."""
        return self._command(new_command(CommandKind.REJECT, run_id, step_id=step_id, by=by, comment=comment))

    def cancel(self, run_id: str, *, reason: str = "", by: str = "") -> int:
        """Cancel a run; returns the position of RunCancelled. Raises RunFinished if it ended."""
        return self._command(new_command(CommandKind.CANCEL, run_id, by=by, comment=reason))

    def plan(self) -> dict[str, Any]:
        """The scheduler's plan: in progress, planned with reasons, new."""
        return self._ask(lambda reply: m.PlanQuery(reply))

    # -- reading -----------------------------------------------------------------------------

    def state(self, run_id: str) -> RunState:
        """The run's state folded from its stream (not from a read model)."""
        return load(self.ctx, run_id)[0]

    def wait(
        self,
        run_id: str,
        until: Callable[[RunState], bool] | Iterable[str] = TERMINAL,
        timeout: float = 30.0,
    ) -> RunState:
        """Block until the run's state satisfies ``until`` (a predicate or a set of statuses).

        Follows the store, so it sees runs driven by any process. Raises
        EngineTimeout with the last state seen.
        """
        check = until if callable(until) else (lambda s, wanted=frozenset(until): s.status in wanted)
        deadline = time.monotonic() + timeout
        subscription = self.store.subscribe(after=self.store.head())
        try:
            state = self.state(run_id)
            stream = stream_of(run_id)
            while not check(state):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineTimeout(f"run {run_id} is {state.status} after {timeout:g} s")
                rec = subscription.next_event(timeout=min(left, 1.0))
                if rec is not None and rec.stream_id == stream and rec.version == state.version + 1:
                    state = evolve(state, decode(rec), rec.position)  # the next event: fold it on
                elif rec is None or rec.stream_id == stream:
                    state = self.state(run_id)  # a gap (or a quiet second): read the stream again
            return state
        finally:
            subscription.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _command(self, command: CommandRequested) -> int:
        """Carry a command out here, or hand it to the node driving the run (its inbox) and wait.

        A node that dies before answering leaves the run to this process,
        which then takes it over as it would have had the node been gone
        from the start. Raises the command's own errors either way, or
        NodeDidNotAnswer when a live node stays silent past the ask timeout.
        """
        for _ in range(_HOPS):
            try:
                return self._carry_out(command)
            except RunOwnedElsewhere as exc:
                if not exc.node or self._inbox is None or exc.node == self.config.node:
                    raise
                owner = exc
            answer = self._inbox.send(owner.node, command, self.config.ask_timeout_s)
            if answer is None or answer.refusal is Refusal.OWNED_ELSEWHERE:
                continue  # the node is gone, or the run moved on meanwhile: look again where it is now
            return outcome_of(command, answer)
        raise owner

    def _carry_out(self, command: CommandRequested) -> int:
        """Carry a command out in this process (what a command handed to this node's inbox runs)."""
        kind = command.kind.value
        return self._ask(lambda reply: m.RunCommand(command.run_id, kind, reply, command.step_id, command.by,
                                                    command.comment))

    def _ask(self, build: Callable[[Future], Any]) -> Any:
        if self._orchestrator is None:
            raise RuntimeError("the engine is not started")
        reply: Future = Future()
        self._orchestrator.tell(build(reply))
        try:
            return reply.result(timeout=self.config.ask_timeout_s)
        except FutureTimeout:
            raise EngineTimeout(f"no answer from the engine within {self.config.ask_timeout_s:g} s") from None

    def _claim_key(self, key: str, run_id: str) -> str:
        """The run an idempotency key belongs to: this one if the claim wins.

        The claim is an append with expected version 0 to a stream named by the
        key, so two concurrent launches (even in two processes) cannot both win.
        """
        stream = "idempotency-" + hashlib.sha256(key.encode()).hexdigest()[:40]
        try:
            self.store.append(stream, [NewEvent("IdempotencyKeyClaimed", {"key": key, "run_id": run_id})], 0)
            return run_id
        except ConcurrencyError:
            return self.store.read_stream(stream)[0].data["run_id"]

    def _launch_position(self, run_id: str, *, wait: bool = False) -> int:
        """Position of the run's RunLaunched (0 if none); ``wait`` gives a launch under way time to land."""
        if wait:
            try:
                self.wait(run_id, lambda s: s.launched is not None, timeout=self.config.ask_timeout_s)
            except EngineTimeout:
                return 0
        events = self.store.read_stream(stream_of(run_id), after_version=0)
        return events[0].position if events else 0

