"""RunActor: one per active run, the only writer of the run's stream.

Load, decide, append, act — in that order. Messages (step results, grants,
commands) stage events on the state; a Flush message, queued behind whatever
else arrived meanwhile, asks ``decide`` once and appends everything in one
batch with the stream's expected version (the result of the only step
under way, with nothing in the inbox, flushes at once: there is nothing
to batch it with). A run that waits only for a person
holds no thread: the actor tells the orchestrator it is idle and is stopped.
"""

from __future__ import annotations

import logging
import operator
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, ClassVar

import pykka
from msgspec.structs import replace

from actors import messages as m
from actors import run_tasks
from actors.agents import CancelToken
from actors.agents.sent import what_is_sent
from actors.agents.toolloop import PersonMessage
from actors.context import EngineContext
from actors.errors import RunBusy, RunOwnedElsewhere
from actors.evidence_check import check_evidence
from actors.mailbox import DispatchedActor
from actors.runlog import decode, load, new_events
from actors.step import EXECUTORS, Attempt, StepActor
from actors.task_attempt import TaskAttempt, forget_machinery
from actors.tool_record import AttemptEnded
from eventstore import ConcurrencyError, NewEvent, RecordedEvent, StoreClosedError, StoreError
from flows import anomaly, errors, mapping
from flows import decide as d
from flows.auth import FourEyesRefused
from flows.events import (
    Event,
    RunQueued,
    RunStarted,
    StepCancelled,
    StepFailed,
    StepStarted,
    TaskStarted,
    ToolResult,
    stream_of,
)
from flows.kinds import StepKind, kind_rules
from flows.redact import redactor
from flows.state import RunState, at_position, evolve
from flows.status import RunStatus, StepStatus
from flows.text import UnstorableText

log = logging.getLogger(__name__)

_POSITION = operator.attrgetter("position")  # a RecordedEvent's


class RunActor(DispatchedActor):
    """Drives one run from its stream.

    Its messages are handled on the engine's kept threads (``EngineContext.actor_threads``), or on the
    step thread that reports a result while no other thread handles them (``actors.mailbox``): a run
    holds a thread only while it has a message to handle.
    """

    def threads(self) -> Any:
        return self.ctx.actor_threads

    def work_threads(self) -> Any:
        return self.ctx.steps

    def hand_over(self) -> bool:
        keeps = getattr(self.ctx.steps, "keeps_work", None)  # a step thread holding the attempt it started
        return keeps is not None and keeps()

    def __init__(self, ctx: EngineContext, orchestrator: pykka.ActorRef[Any], run_id: str,
                 loaded: tuple[RunState, list[tuple[int, Event]]] | None = None) -> None:
        super().__init__()
        # The run's state and history as the orchestrator just read them to route a command
        # (nothing else writes the run meanwhile: the command is its next change): not read twice.
        self.loaded = loaded
        self.ctx = ctx
        self.orchestrator = orchestrator
        self.run_id = run_id
        self.stream = stream_of(run_id)
        self.state = RunState()
        self.history: list[tuple[int, Event]] = []
        self.pending: list[Event] = []
        self.recorded_version = 0
        self.attempts: dict[str, Attempt] = {}
        self.requested: set[str] = set()  # agent steps waiting for a slot
        self.held: set[str] = set()  # agent steps holding a slot
        self.flush_queued = False
        self.wake_timer: Any = None
        self.wake_at: float | None = None
        self.approval_timer: Any = None  # while this actor lives; once idle, the orchestrator keeps it
        self.timer_at: float | None = None
        self.seen = 0  # orchestrator messages processed (see RunIdle)
        self.actor = ""  # who the next batch is recorded as (a person for commands; else the engine)
        self.cause = ""  # what the next batch follows from (a command; else the last recorded event)
        self.stopped = False
        self.stop_error: BaseException | None = None  # why it stopped before it could load its run
        self.recovered = False
        self.tool_tallies: dict[str, anomaly.ToolTally] = {}  # step -> its running attempt's tool errors
        # a task run's running attempts: where a person's message goes (actors.run_tasks)
        self.task_inboxes: dict[str, queue.SimpleQueue[PersonMessage]] = {}
        self.task_attempts: dict[str, TaskAttempt] = {}  # a task run's attempts whose threads have not reported
        self.task_view: dict[str, Any] | None = None  # a task run's tasks as last told to the plan (run_tasks)
        # While a message is handled: the attempts it started, handed to the step threads once it is
        # (a thread woken earlier only waits for the GIL this one holds until then).
        self.starting: list[StepActor] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        try:
            if self.loaded is not None:
                self.state, self.history = self.loaded
                self.loaded = None
            else:
                self.state, self.history = load(self.ctx, self.run_id)
        except StoreError as exc:  # the store is away: stop (answering what waits), to be driven again
            log.warning("run %s cannot be loaded (%s); it will be driven again", self.run_id, exc)
            self.stopped, self.stop_error = True, exc
            self._tell_orchestrator(m.RunFenced(self.run_id, str(exc), retry=True, urn=self.actor_ref.actor_urn))
            return
        self.recorded_version = self.state.version
        self.ctx.watch.publish(self.run_id, self, self.state)
        self.recovered = False
        if self.state.running() and not self.state.terminal:
            # No live process drives this run (the orchestrator checked), so attempts the log shows
            # running belong to a process that is gone.
            self._on_recover(m.Recover(self.ctx.config.node), flush=False)

    def on_stop(self) -> None:
        self.ctx.watch.gone(self.run_id, self)
        for timer in (self.wake_timer, self.approval_timer):
            if timer is not None:
                timer.cancel()
        for attempt in self.attempts.values():  # stopped with work in flight: recovery re-runs it
            attempt.cancel_timers()
            attempt.token.cancel()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        log.error("run actor %s crashed: %s; the run will be recovered", self.run_id, exception_value)
        self.ctx.watch.gone(self.run_id, self)
        for attempt in self.attempts.values():
            attempt.token.cancel()
        self._tell_orchestrator(m.RunFenced(self.run_id, f"{exception_type.__name__}: {exception_value}",
                                            retry=True, urn=self.actor_ref.actor_urn))

    def on_receive(self, message: Any) -> None:
        if self.stopped:
            reply = getattr(message, "reply", None)
            if self.state.terminal and isinstance(message, (m.Resume, m.Cancel)):
                pass  # answered below: the run has ended (RunFinished)
            else:
                _fail(reply, self.stop_error or RunBusy(self.run_id))
                return
        handler = self._handlers.get(type(message))
        if handler is None:
            raise TypeError(f"RunActor got an unknown message {message!r}")
        if type(message) in _FROM_ORCHESTRATOR:
            self.seen += 1
        self.starting = []
        handler(self, message)
        starting, self.starting = self.starting, None
        for step in starting:  # last: the step's thread wakes as this one goes back to its inbox
            step.start(self.ctx.steps)

    # -- commands ----------------------------------------------------------------------------

    def _on_launch(self, msg: m.Launch) -> None:
        self.actor, self.cause = msg.event.launched_by or "anonymous", "command:launch"
        now = self.ctx.clock.now()
        follow: Event = (
            RunStarted(run_id=self.run_id, reason=msg.reason, plan_position=msg.plan_position, at=now)
            if msg.start
            else RunQueued(run_id=self.run_id, reason=msg.reason, plan_position=msg.plan_position, at=now)
        )
        self._stage([msg.event, *msg.after, follow])
        # What the launch starts goes in its commit, as what an approval starts goes in the approval's:
        # a run's first step waits for one commit, not two (one commit fewer per run).
        recorded = self._flush(reply=msg.reply)
        if recorded:
            _resolve(msg.reply, recorded[0].position)

    def _on_begin(self, msg: m.Begin) -> None:
        if self.state.status != RunStatus.QUEUED:
            self._flush()
            return
        self._stage([RunStarted(run_id=self.run_id, reason=msg.reason, at=self.ctx.clock.now())])
        self._flush()

    def _on_recover(self, msg: m.Recover, flush: bool = True) -> None:
        if not self.recovered:
            self.recovered = True
            if self.state.tasks is not None:  # git against the log first, while the log's tasks still run
                run_tasks.reconcile_at_recovery(self)
            self._stage(d.recover(self.state, self.ctx.clock.now(), node=msg.node))
        if flush:
            self._flush()

    def _on_resume(self, msg: m.Resume) -> None:
        self.actor, self.cause = msg.by or "anonymous", f"command:{msg.decision}"
        try:
            events = d.resume(self.state, msg.step_id, msg.decision, self.ctx.clock.now(), by=msg.by,
                              comment=msg.comment)
        except (errors.NotWaiting, errors.UnknownStep, errors.UnknownRun, errors.RunFinished, UnstorableText,
                FourEyesRefused) as exc:
            _fail(msg.reply, exc)
            self._report_idle()
            return
        self._stage(events)
        recorded = self._flush(reply=msg.reply)
        if recorded:
            _resolve(msg.reply, recorded[0].position)

    def _on_cancel(self, msg: m.Cancel) -> None:
        try:
            self._flush_now()  # record what was already staged before deciding the cancel
            self.actor, self.cause = msg.by or "anonymous", "command:cancel"
            events = d.cancel(self.state, self.history, self.ctx.clock.now(), reason=msg.reason, by=msg.by,
                              evidence=check_evidence(self.state))
        except (errors.RunFinished, errors.UnknownRun, UnstorableText) as exc:
            _fail(msg.reply, exc)
            self._report_idle()
            return
        self._stage(events)
        recorded = self._commit(reply=msg.reply)
        if recorded is not None:
            _resolve(msg.reply, recorded[-1].position)
            self._ended()

    # -- what steps and the scheduler say ------------------------------------------------------

    def _on_granted(self, msg: m.SlotsGranted) -> None:
        usable = [sid for sid in msg.step_ids if sid in self.requested]
        self.requested.difference_update(usable)
        startable = [sid for sid in usable if ITEM_SLOT not in sid
                     and self.state.steps[sid].status == StepStatus.PENDING and not self.state.terminal]
        startable += self._grant_items([sid for sid in usable if ITEM_SLOT in sid])
        self.held.update(startable)
        unused = tuple(sid for sid in msg.step_ids if sid not in startable)
        if unused:
            self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=unused))
        startable = [sid for sid in startable if ITEM_SLOT not in sid]
        if startable:
            self._stage(d.start(self.state, startable, self.ctx.clock.now()))
        self._queue_flush()

    def _grant_items(self, slot_ids: list[str]) -> list[str]:
        """Hand granted slots to the map items that asked for them; the slots that found their item."""
        given = []
        for slot_id in slot_ids:
            step_id, _, index = slot_id.rpartition(ITEM_SLOT)
            attempt = self.attempts.get(step_id)
            if attempt is not None and attempt.slots is not None and not self.state.terminal:
                attempt.slots.grant(int(index))
                given.append(slot_id)
        return given

    def _on_item_slot(self, msg: m.ItemSlotWanted) -> None:
        attempt = self.attempts.get(msg.step_id)
        if attempt is None or attempt.attempt != msg.attempt:
            return
        slot_id = f"{msg.step_id}{ITEM_SLOT}{msg.index}"
        self.requested.add(slot_id)
        self._tell_orchestrator(m.RequestSlots(self.run_id, (slot_id,)))

    def _on_result(self, msg: m.StepResult) -> None:
        attempt = self.attempts.get(msg.step_id)
        if attempt is None or attempt.attempt != msg.attempt:
            return  # a late answer from an attempt that already ended (timeout, cancel)
        if attempt.kind == StepKind.TASK:  # a task's attempt recorded its own end as it went
            run_tasks.task_result(self, msg)
            return
        self._end_attempt(msg.step_id)
        now = self.ctx.clock.now()
        if msg.cancelled:
            return
        limit = self.ctx.config.max_step_errors
        if not msg.failed and kind_rules(self.state.spec(msg.step_id).kind).fans_out:
            events = self._gathered(msg, now)
        elif msg.failed:
            # The one door from a backend's or an exception's words into the log: no secret passes it.
            redact = redactor(self.ctx.config.known_secrets)
            events = d.fail(self.state, msg.step_id, msg.attempt, redact(msg.error), now, duration_s=msg.duration_s,
                            frames=redact.all(msg.frames), usage=msg.usage)
            events = anomaly.after_failure(self.state, events, limit, now)
        else:
            events = d.complete(self.state, msg.step_id, msg.attempt, msg.output, now, duration_s=msg.duration_s,
                                usage=msg.usage, fields=msg.fields)
            events = anomaly.after_completion(self.state, events, now, limit)
        self._stage(events)
        self._flush_soon()

    def _gathered(self, msg: m.StepResult, now: float) -> list[Event]:
        """A map's attempt returned: its outcome, from the items recorded (``flows.mapping.gather``)."""
        left = mapping.unfinished(self.state, msg.step_id)
        output, problem = mapping.gather(self.state, msg.step_id) if not left else ("", f"items {left} did not end")
        if problem:
            return d.fail(self.state, msg.step_id, msg.attempt, problem, now, duration_s=msg.duration_s)
        return d.complete(self.state, msg.step_id, msg.attempt, output, now, duration_s=msg.duration_s)

    def _on_map_item(self, msg: m.MapItemResult) -> None:
        attempt = self.attempts.get(msg.step_id)
        if attempt is None or attempt.attempt != msg.attempt:
            return  # from an attempt that already ended (cancelled, lost)
        slot_id = f"{msg.step_id}{ITEM_SLOT}{msg.index}"
        if slot_id in self.held:  # the item is done with its agent slot
            self.held.discard(slot_id)
            self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=(slot_id,)))
        error = redactor(self.ctx.config.known_secrets)(msg.error) if msg.error else ""
        self._stage(mapping.item_ended(self.state, msg.step_id, msg.attempt, msg.index, self.ctx.clock.now(),
                                       output=msg.output, error=error, failed=msg.failed, prompt=msg.prompt,
                                       duration_s=msg.duration_s))
        self._queue_flush()

    def _on_step_events(self, msg: m.StepEvents) -> None:
        """Append a running attempt's tool calls now: its next model turn waits on this (DESIGN §11)."""
        attempt = self.attempts.get(msg.step_id)
        if attempt is None or attempt.attempt != msg.attempt or self.state.terminal or self.stopped:
            _fail(msg.reply, AttemptEnded(f"step {msg.step_id} attempt {msg.attempt} has ended"))
            return
        now = self.ctx.clock.now()
        attempt.touch(now)  # tools at work are a sign of life for the stall watch
        before = self.tool_tallies.get(msg.step_id, anomaly.ToolTally())
        after = anomaly.tally_tools(before, msg.attempt, msg.events)
        self.tool_tallies[msg.step_id] = after
        if before.attempt != msg.attempt:
            before = anomaly.ToolTally(attempt=msg.attempt)
        found = anomaly.after_tool_results(self.state, msg.step_id, msg.attempt, before, after,
                                           [e for e in msg.events if isinstance(e, ToolResult)], now,
                                           self.ctx.config.max_step_errors)
        self._stage([*msg.events, *found])
        recorded = self._commit()
        if recorded is None:
            _fail(msg.reply, AttemptEnded(f"step {msg.step_id}: the run could not record its tool calls"))
            return
        if any(isinstance(e, (StepFailed, StepCancelled)) for e in found):  # nudged or aborted: stop the loop
            self._end_attempt(msg.step_id, cancel=True)
            _fail(msg.reply, AttemptEnded(f"step {msg.step_id} attempt {msg.attempt} was ended by the anomaly "
                                          "watch"))
            self._queue_flush()
            return
        _resolve(msg.reply, recorded[-1].position if recorded else 0)

    def _on_timeout(self, msg: m.StepTimedOut) -> None:
        attempt = self.attempts.get(msg.step_id)
        if attempt is None or attempt.attempt != msg.attempt:
            return
        attempt.token.cancel()
        self._end_attempt(msg.step_id)
        timeout = self.state.spec(msg.step_id).timeout_s
        now = self.ctx.clock.now()
        events = d.fail(self.state, msg.step_id, msg.attempt, f"timeout after {timeout:g} s", now,
                        duration_s=time.monotonic() - attempt.started)
        self._stage(anomaly.after_failure(self.state, events, self.ctx.config.max_step_errors, now))
        self._queue_flush()

    def _on_stall_check(self, msg: m.StallCheck) -> None:
        attempt = self.attempts.get(msg.step_id)
        if attempt is None or attempt.attempt != msg.attempt:
            return
        now, stall_s = self.ctx.clock.now(), self.ctx.config.stall_s
        silent = now - attempt.last_activity
        if silent < stall_s:
            self._watch(attempt, stall_s - silent)
            return
        if attempt.stall_known:  # the same stall, already reported: one anomaly per episode
            self._watch(attempt, stall_s)
            return
        events = anomaly.stalled(self.state, msg.step_id, msg.attempt, silent, now, self.ctx.config.max_step_errors)
        self._stage(events)
        if any(isinstance(e, (StepFailed, StepCancelled)) for e in events):
            self._end_attempt(msg.step_id, cancel=True)
        else:  # notified: the episode lasts until a sign of life; keep watching for it
            attempt.stall_reported = attempt.deltas
            self._watch(attempt, stall_s)
        self._queue_flush()

    def _watch(self, attempt: Attempt, delay: float) -> None:
        step_id, number = attempt.step_id, attempt.attempt
        attempt.stall_timer = self.ctx.clock.call_later(
            delay, lambda: self._tell_self(m.StallCheck(step_id, number)))

    def _on_wake(self, msg: m.Wake) -> None:
        self.wake_timer, self.wake_at = None, None
        self._flush()

    def _on_flush(self, msg: m.Flush) -> None:
        self.flush_queued = False
        self._flush()

    # -- the cycle: stage, decide, append, act -------------------------------------------------

    def _stage(self, events: Sequence[Event], folded: RunState | None = None) -> None:
        """Stage ``events`` and fold them into the state; ``folded``: the state they lead to from this one
        (a decision's), taken as it is unless an agent step's start changed below."""
        if not events:  # (a decision without events leads to the state it was taken on)
            return
        # What an agent step will be sent (system prompt, sampling, tools) is recorded with its start.
        staged = [what_is_sent(self.state, e) if isinstance(e, StepStarted) else e for e in events]
        if folded is not None and staged == events:
            self.state = folded
        else:
            for event in staged:
                self.state = evolve(self.state, event)
        self.pending.extend(staged)

    def _queue_flush(self) -> None:
        if not self.flush_queued:
            self.flush_queued = True
            self.actor_ref.tell(m.Flush())

    def _flush_soon(self) -> None:
        """Flush at once when nothing could be batched with it (no other attempt under way, nothing in the
        inbox); else queue a Flush behind what arrives meanwhile.

        A step's result in a sequential run is alone: telling itself a Flush cost a pykka envelope and an
        inbox round for nothing. The results of parallel steps are batched, one commit for many.
        """
        if not self.flush_queued and not self.attempts and self.actor_inbox.empty():
            self._flush()
        else:
            self._queue_flush()

    def _flush_now(self) -> None:
        if self.pending:
            self._commit()

    def _flush(self, reply: Future[Any] | None = None) -> list[RecordedEvent] | None:
        """Decide, append everything staged in one batch, then act on it."""
        if self.stopped:
            return None
        now = self.ctx.clock.now()
        decision = d.decide(self.state, now)
        self._stage(decision.events, decision.state)
        ready = [sid for sid in decision.ready if sid not in self.requested and sid not in self.held]
        if ready and not self.ctx.config.agent_slots:  # no slot limit: start at once, in this batch
            self._stage(d.start(self.state, ready, now))
            ready = []
        if (decision.finished and not self.state.terminal and self.state.tasks is None and self.pending and not ready
                and getattr(self.ctx.store, "renders_last", False)):
            # The run ends with this batch: its terminal event goes in the same commit (see _commit).
            recorded = self._commit(reply=reply, finishing=True)
            if recorded is not None:
                self._arm_wake(decision.wake_at)
                self._arm_approval_timer(decision.timer_at)
                self._ended()
            return recorded
        recorded = self._commit(reply=reply) if self.pending else []
        if recorded is None:
            return None
        if ready:
            self.requested.update(ready)
            self._tell_orchestrator(m.RequestSlots(self.run_id, tuple(ready)))
        self._arm_wake(decision.wake_at)
        self._arm_approval_timer(decision.timer_at)
        if decision.land and not self.state.terminal:  # a task run's landing gate was approved: land, then finish
            run_tasks.land_at_gate(self)
            return recorded
        if decision.finished and not self.state.terminal and not (self.state.tasks is not None and self.attempts):
            # (a task run ends once its attempts' threads have: an aborted one is still cleaning up; its
            # integration worktree goes with the end, in the same batch)
            if self.state.tasks is not None:
                run_tasks.close_integration(self)
            event = d.finish(self.state, self.history, self.ctx.clock.now(), check_evidence(self.state))
            self._stage([event])
            if self._commit() is not None:
                self._ended()
            return recorded
        self._report_idle()
        return recorded

    def _commit(self, reply: Future[Any] | None = None, finishing: bool = False) -> list[RecordedEvent] | None:
        """Append what is staged, expecting the recorded version; then start what it started.

        ``finishing``: the staged batch ends the run's last step, and the run's terminal event follows
        it in the same commit. Its report cites the positions of the batch's events, which the store
        gives them only as it commits: the store renders it then (``append(last=...)``), exactly as
        it would be rendered after a commit of its own (same report, actor, causation), one commit
        fewer per run.
        """
        batch, self.pending = self.pending, []
        metadata = {
            "node": self.ctx.config.node,
            "actor": self.actor or f"baton@{self.ctx.config.node}",
            "correlation_id": self.run_id,
            # the command behind the batch, else the last recorded event the decision followed
            "causation_id": self.cause or (f"position:{self.history[-1][0]}" if self.history else "launch"),
        }
        self.actor = self.cause = ""
        new = new_events(batch, metadata)
        last = self._terminal_renderer(batch, new) if finishing else None
        try:
            if last is None:
                recorded = self.ctx.store.append(self.stream, new, expected_version=self.recorded_version)
            else:
                recorded = self.ctx.store.append(self.stream, new, expected_version=self.recorded_version, last=last)
                terminal = decode(recorded[-1])  # as recorded (a retry's outcome is the first attempt's)
                self.state = evolve(self.state, terminal)
                batch = [*batch, terminal]
        except ConcurrencyError as exc:
            self._fenced(RunOwnedElsewhere(self.run_id, f"another writer ({exc})"), reply, retry=False)
            return None
        except StoreClosedError as exc:  # the engine is stopping: the next start recovers the run
            log.info("run %s: not recorded, the store closed: %s", self.run_id, exc)
            self._fenced(exc, reply, retry=False)
            return None
        except Exception as exc:  # the store failed: stop, and drive the run again after a pause
            log.exception("run %s: append failed", self.run_id)
            self._fenced(exc, reply, retry=True)
            return None
        self.recorded_version = recorded[-1].version if recorded else self.recorded_version
        self.history.extend(zip(map(_POSITION, recorded), batch))  # (position, event) pairs, made in C
        if recorded:
            self.state = at_position(self.state, recorded[-1].position)
            if self.state.version == self.recorded_version:  # what is recorded, nothing staged after it
                self.ctx.watch.publish(self.run_id, self, self.state)
        for event in batch:
            if isinstance(event, StepStarted) and self._still_running(event):
                self._start_attempt(event)
            elif isinstance(event, StepCancelled):
                self._end_attempt(event.step_id, cancel=True)
            elif isinstance(event, TaskStarted):
                run_tasks.start_task(self, event)
        if self.state.tasks is not None:
            run_tasks.publish(self, batch)
            run_tasks.resume_merged(self)
        return recorded

    def _terminal_renderer(self, batch: list[Event], new: list[NewEvent]) -> Callable[[list[int]], NewEvent]:
        """Add a stand-in for the run's terminal event to ``new``; return what renders it from the
        positions the store gives ``batch`` (``_commit``)."""
        state, history, now = self.state, self.history, self.ctx.clock.now()
        evidence = check_evidence(state)
        stand_in = NewEvent("RunCompleted", {})
        new.append(stand_in)
        node = self.ctx.config.node

        def render(positions: list[int]) -> NewEvent:
            event = d.finish(state, [*history, *zip(positions, batch)], now, evidence)
            # what a commit of its own would say: the engine's, following the batch's last event
            metadata = {"node": node, "actor": f"baton@{node}", "correlation_id": self.run_id,
                        "causation_id": f"position:{positions[-1]}"}
            return replace(new_events([event], metadata)[0], id=stand_in.id)

        return render

    def _still_running(self, event: StepStarted) -> bool:
        """Whether the attempt a recorded StepStarted began is still the step's, under way (a fork's copy
        of a parent's attempt is followed in the same batch by how that attempt ended: nothing to start)."""
        st = self.state.steps.get(event.step_id)
        return st is not None and st.status == StepStatus.RUNNING and st.attempt == event.attempt

    def _start_attempt(self, event: StepStarted) -> None:
        ctx, state = self.ctx, self.state
        attempt = Attempt(event.step_id, event.attempt, event.kind, CancelToken(), time.monotonic(), ctx.clock.now())
        call = EXECUTORS[event.kind].prepare(ctx, state, event)
        if isinstance(call, str):
            self._refuse(attempt, call)
            return
        attempt.slots = call.slots
        if call.recorder is not None:
            call.recorder.attach(self.actor_ref)
        if kind_rules(event.kind).streams_output:  # only a step that streams signs of life can stall
            self._watch(attempt, ctx.config.stall_s)
        timeout_s = state.spec(event.step_id).timeout_s
        if timeout_s:
            attempt.timer = ctx.clock.call_later(
                timeout_s, lambda: self._tell_self(m.StepTimedOut(event.step_id, event.attempt)))
        if event.step_id in self.held:
            step_id = event.step_id
            attempt.release = lambda: self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=(step_id,)))
        self.attempts[event.step_id] = attempt
        step = StepActor(self.actor_ref, attempt, call, run_id=self.run_id, bus=ctx.bus, clock=ctx.clock,
                         max_output_bytes=ctx.config.max_output_bytes, redact=redactor(ctx.config.known_secrets),
                         deliver=self.deliver)
        if self.starting is None:
            step.start(ctx.steps)
        else:
            self.starting.append(step)  # started once the message is handled (on_receive)

    def _refuse(self, attempt: Attempt, error: str) -> None:
        """End an attempt that cannot start, as a failure of that attempt."""
        self.attempts[attempt.step_id] = attempt
        self.actor_ref.tell(m.StepResult(attempt.step_id, attempt.attempt, failed=True, error=error))

    def _end_attempt(self, step_id: str, cancel: bool = False) -> None:
        attempt = self.attempts.pop(step_id, None)
        if attempt is None:
            return
        attempt.cancel_timers()
        if cancel:
            attempt.token.cancel()
        if step_id in self.held:
            self.held.discard(step_id)
            self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=(step_id,)))
        if attempt.slots is not None:  # a map of agents: its items' slots and requests go with it
            prefix = step_id + ITEM_SLOT
            held = tuple(s for s in self.held if s.startswith(prefix))
            withdrawn = tuple(s for s in self.requested if s.startswith(prefix))
            self.held.difference_update(held)
            self.requested.difference_update(withdrawn)
            if held or withdrawn:
                self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=held, withdrawn=withdrawn))

    def _arm_wake(self, wake_at: float | None) -> None:
        if wake_at is None or (self.wake_at is not None and self.wake_at <= wake_at):
            return
        if self.wake_timer is not None:
            self.wake_timer.cancel()
        self.wake_at = wake_at
        self.wake_timer = self.ctx.clock.call_later(max(0.0, wake_at - self.ctx.clock.now()),
                                                    lambda: self._tell_self(m.Wake()))

    def _arm_approval_timer(self, timer_at: float | None) -> None:
        if timer_at == self.timer_at:
            return
        if self.approval_timer is not None:
            self.approval_timer.cancel()
            self.approval_timer = None
        self.timer_at = timer_at
        if timer_at is not None:
            self.approval_timer = self.ctx.clock.call_later(max(0.0, timer_at - self.ctx.clock.now()),
                                                            lambda: self._tell_self(m.ApprovalDue()))

    def _on_approval_due(self, msg: m.ApprovalDue) -> None:
        self.timer_at, self.approval_timer = None, None
        self._flush()

    def _ended(self) -> None:
        for sid in list(self.attempts):
            self._end_attempt(sid, cancel=True)
        if self.state.tasks is not None:
            if not self.stopped:  # cancelled: the integration worktree goes now, recorded after the end
                run_tasks.close_integration(self)
                if self.pending:
                    self._commit()
                run_tasks.clean_up_after_cancel(self)  # and the aborted tasks' worktrees, once their threads are done
            forget_machinery(self.run_id)
        withdrawn = tuple(self.requested)
        self.requested.clear()
        if withdrawn or self.held:
            self._tell_orchestrator(m.ReleaseSlots(self.run_id, held=tuple(self.held), withdrawn=withdrawn))
            self.held.clear()
        self.stopped = True
        self._tell_orchestrator(m.RunEnded(self.run_id, self.state.status, urn=self.actor_ref.actor_urn))

    def _report_idle(self) -> None:
        """Tell the orchestrator this actor can stop: nothing runs, waits, or is staged.

        A running run is never idle, even for a moment between a result and
        its flush: a refused command handled in that moment must not get the
        actor stopped with the flush still in its inbox.
        """
        if (self.attempts or self.requested or self.wake_at is not None or self.pending or self.flush_queued
                or self.state.status == RunStatus.RUNNING):
            return
        self._tell_orchestrator(m.RunIdle(self.run_id, self.seen, self.state.status, urn=self.actor_ref.actor_urn,
                                          timer_at=self.timer_at))

    def _fenced(self, error: BaseException, reply: Future[Any] | None, *, retry: bool) -> None:
        log.warning("run %s: %s; this actor stops", self.run_id, error)
        self.ctx.watch.gone(self.run_id, self)
        _fail(reply, error)
        for sid in list(self.attempts):
            self._end_attempt(sid, cancel=True)
        self.stopped = True
        self._tell_orchestrator(m.RunFenced(self.run_id, str(error), retry=retry, urn=self.actor_ref.actor_urn))

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # the run ended; a late timer has nothing to do

    def _tell_orchestrator(self, message: Any) -> None:
        try:
            self.orchestrator.tell(message)
        except pykka.ActorDeadError:
            log.info("orchestrator stopped; %s for run %s dropped", type(message).__name__, self.run_id)

    _handlers: ClassVar[dict[type, Callable[[RunActor, Any], None]]] = {
        m.Launch: _on_launch,
        m.Begin: _on_begin,
        m.Recover: _on_recover,
        m.Resume: _on_resume,
        m.Cancel: _on_cancel,
        m.SlotsGranted: _on_granted,
        m.StepResult: _on_result,
        m.MapItemResult: _on_map_item,
        m.ItemSlotWanted: _on_item_slot,
        m.StepEvents: _on_step_events,
        m.StepTimedOut: _on_timeout,
        m.StallCheck: _on_stall_check,
        m.Wake: _on_wake,
        m.ApprovalDue: _on_approval_due,
        m.Flush: _on_flush,
        m.TaskEvents: run_tasks.on_task_events,
        m.TaskCommand: run_tasks.on_task_command,
    }


ITEM_SLOT = "#"  # a map item's slot id: "<step>#<index>" (no step id holds a "#")

_FROM_ORCHESTRATOR = (m.Launch, m.Begin, m.Recover, m.Resume, m.Cancel, m.SlotsGranted, m.TaskCommand)


def _resolve(reply: Future[Any] | None, value: Any) -> None:
    if reply is not None and not reply.done():
        reply.set_result(value)


def _fail(reply: Future[Any] | None, exc: BaseException) -> None:
    if reply is not None and not reply.done():
        reply.set_exception(exc)


__all__ = ["RunActor"]
