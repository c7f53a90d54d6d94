"""StepActor: one per running attempt of a step, and the executors that say how each kind runs.

``EXECUTORS`` maps a ``StepKind`` to its executor: where the RunActor handles its message,
``prepare`` turns a recorded StepStarted into a :class:`Call` (or says why the
attempt cannot start); the StepActor runs that call on a thread of the step
pool, streams token deltas to the frame bus, tells its RunActor what happened,
and stops. A kind that runs nothing (an approval waits for a person) has no
executor. Cancelling is done through the attempt's CancelToken, from any
thread: the backend closes its HTTP stream or kills its process group at once,
so the RunActor never waits on a step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    wait,
)
from typing import Any, Protocol

import msgspec
import pykka

from actors.agents import AgentError, AgentRequest, Cancelled, CancelToken, persona_text
from actors.agents.toolloop import LoopLimits, ToolBackend
from actors.bus import FrameBus
from actors.clock import Clock
from actors.context import EngineContext
from actors.errors import OutputTooLarge
from actors.functions import resolve_function
from actors.messages import ItemSlotWanted, MapItemResult, StepResult
from actors.runlog import follow
from actors.step_threads import StepThreads
from actors.tool_record import ToolRecorder
from actors.workspace.errors import WorkspaceError
from actors.workspace.tools import TOOL_SCHEMA_HASH, Toolbox
from flows import StepContext, children, mapping
from flows.context import detached
from flows.decide import code_output
from flows.errors import BatonError
from flows.events import StepStarted
from flows.kinds import StepKind
from flows.redact import Redactor
from flows.state import RunState
from flows.status import StepStatus
from flows.text import encodable, encodable_fields

log = logging.getLogger(__name__)

FRAMES_KEPT = 5
"""How many of a failing code step's innermost traceback frames its StepFailed records."""

Delta = Callable[[str], None]
Report = Callable[[Any], None]  # tells the attempt's RunActor a message


# Answer, Call and Attempt (one of each per attempt) are msgspec Structs, not dataclasses: a frozen
# dataclass's __init__ is Python, one object.__setattr__ a field (~120 opcodes an attempt between them).


class Answer(msgspec.Struct, frozen=True):
    """What an attempt produced: its output, a code step's fields, a model's usage and name."""

    output: str
    fields: dict[str, Any] | None = None
    usage: Mapping[str, Any] = {}
    model: str = ""


class Call(msgspec.Struct, frozen=True):
    """An attempt ready to run: ``run(token, delta)`` does the work on a pool thread, calling
    ``delta`` with each piece of a streamed answer.

    ``what`` names its output in the error of an output too large to record ("the model answered").
    """

    run: Callable[[CancelToken, Delta], Answer]
    what: str
    recorder: ToolRecorder | None = None  # an agent step with tools: its calls go to the log through the RunActor
    reporting: Callable[[CancelToken, Delta, Report], Answer] | None = None
    """Instead of ``run``, for an attempt that tells its RunActor of its progress (a map's items)."""
    slots: ItemSlots | None = None
    """Where the RunActor hands this attempt's items the agent slots they asked for (a map of agents)."""


class ItemSlots:
    """The agent slots granted to the items of one map attempt: an item waits here for its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._granted: dict[int, threading.Event] = {}

    def _event(self, index: int) -> threading.Event:
        with self._lock:
            return self._granted.setdefault(index, threading.Event())

    def grant(self, index: int) -> None:
        """Item ``index`` may run now."""
        self._event(index).set()

    def wait(self, index: int, token: CancelToken) -> bool:
        """Block until item ``index`` holds a slot (True) or the attempt is cancelled (False). A grant is
        spent by the wait that took it: the item's next try (its retries) waits for a slot of its own."""
        granted = self._event(index)
        unregister = token.on_cancel(granted.set)
        granted.wait()
        unregister()
        granted.clear()
        return not token.cancelled


class StepExecutor(Protocol):
    """How one kind of step runs (``EXECUTORS``)."""

    def prepare(self, ctx: EngineContext, state: RunState, event: StepStarted) -> Call | str:
        """The call that runs the attempt ``event`` started (on ``state``, which holds it), or
        why it cannot start: that text fails the attempt, and the model is never called."""
        ...


class AgentExecutor:
    """An agent step: the persona's system prompt and the recorded prompt, sent to the backend.

    With a workspace and tools (``StepStarted.tool_schema_hash`` set, see
    ``actors.agents.sent``), the backend runs the tool loop over the run's
    pinned root; each turn's calls are recorded through the RunActor first.
    """

    def prepare(self, ctx: EngineContext, state: RunState, event: StepStarted) -> Call | str:
        try:
            system = event.system or persona_text(event.persona)
        except Exception as exc:  # fail closed: never call a model without its persona
            return f"persona {event.persona!r}: {exc}"
        workspace = state.launched.workspace if state.launched is not None else None
        request = AgentRequest(state.run_id, event.step_id, event.attempt, event.persona, system, event.prompt,
                               event.model, workdir=workspace.root if workspace else "",
                               sampling=dict(event.sampling))
        backend = ctx.backend
        if event.tool_schema_hash:
            return tool_call(ctx, event, request)

        def run(token: CancelToken, delta: Delta) -> Answer:
            answer = backend.run(request, delta, token)
            return Answer(answer.output, usage=dict(answer.usage), model=answer.model)

        return Call(run, "the model answered")


def tool_call(ctx: EngineContext, event: StepStarted, request: AgentRequest) -> Call | str:
    """The call of an agent step that reads its workspace with the tools (DESIGN §11)."""
    backend = ctx.backend
    if not isinstance(backend, ToolBackend):
        return f"the {backend.name} backend cannot run the tool loop this attempt was recorded with"
    if event.tool_schema_hash != TOOL_SCHEMA_HASH:
        return (f"the tools this attempt was recorded with (schema {event.tool_schema_hash[:12]}) are not the "
                f"ones this process has ({TOOL_SCHEMA_HASH[:12]})")
    try:
        toolbox = Toolbox(request.workdir)
    except WorkspaceError as exc:
        return f"the run's workspace cannot be read: {exc}"
    limits = LoopLimits(**event.limits) if event.limits else LoopLimits()
    recorder = ToolRecorder(event.step_id, event.attempt, ctx.clock)

    def run(token: CancelToken, delta: Delta) -> Answer:
        answer = backend.run_tools(request, toolbox, delta, token, limits=limits, observer=recorder)
        recorder.flush()
        return Answer(answer.output, usage=dict(answer.usage), model=answer.model)

    return Call(run, "the model answered", recorder)


class CodeExecutor:
    """A code step: the function the run pinned, called with the step's context."""

    def prepare(self, ctx: EngineContext, state: RunState, event: StepStarted) -> Call | str:
        ref = state.spec(event.step_id).fn
        fn, problem = resolve_function(ref, ctx.registry, state.snapshot.name, event.step_id)
        if fn is None:
            return f"code step function {ref!r} cannot be found: {problem}"
        step_ctx = StepContext.of(state, event.step_id, event.attempt)
        pool = ctx.steps

        def run(token: CancelToken, delta: Delta) -> Answer:
            # A function cannot be interrupted: once its attempt is given up, its thread stops counting.
            with pool.uncounted_once(token.on_cancel) if isinstance(pool, StepThreads) else contextlib.nullcontext():
                output, fields = code_output(fn(step_ctx))
            return Answer(output, fields)

        return Call(run, "the code step returned")


class MapExecutor:
    """A map step: its inner agent or code step once per item without a result, ``max_parallel`` at once.

    Each item's end is told to the RunActor as it comes (MapItemResult, recorded
    at once); the attempt returns when every item has ended, and the RunActor
    then gathers the results from the log (``flows.mapping.gather``).
    """

    def prepare(self, ctx: EngineContext, state: RunState, event: StepStarted) -> Call | str:
        spec = state.spec(event.step_id)
        fn: Callable[..., Any] | None = None
        if spec.item_kind == StepKind.CODE:
            fn, problem = resolve_function(spec.fn, ctx.registry, state.snapshot.name, event.step_id)
            if fn is None:
                return f"code step function {spec.fn!r} cannot be found: {problem}"
        else:
            try:
                system = persona_text(spec.persona)
            except Exception as exc:  # noqa: BLE001 - fail closed: never call a model without its persona
                return f"persona {spec.persona!r}: {exc}"
        todo = mapping.to_run(state, event.step_id)
        limit = ctx.config.max_output_bytes
        backend, model = ctx.backend, state.launched.model if state.launched else ""
        # Agent items take the scheduler's agent slots like agent steps (shared fairly across runs).
        slots = ItemSlots() if fn is None and ctx.config.agent_slots else None

        def one(index: int, token: CancelToken, delta: Delta) -> tuple[str, str]:
            if fn is not None:
                # its own input (the item is the state's: an item edited in place changes nothing)
                item_input = detached(mapping.item_input(state, event.step_id, index))
                return code_output(fn(StepContext.of(state, event.step_id, event.attempt, item_input)))[0], ""
            prompt = mapping.item_prompt(state, event.step_id, index)
            request = AgentRequest(state.run_id, f"{event.step_id}[{index}]", event.attempt, spec.persona, system,
                                   prompt, model)
            return backend.run(request, delta, token).output, prompt

        def reporting(token: CancelToken, delta: Delta, report: Report) -> Answer:
            def item(index: int, token: CancelToken, delta: Delta, begin: Callable[[], None]) -> tuple[str, str]:
                if slots is not None:
                    report(ItemSlotWanted(event.step_id, event.attempt, index))
                    if not slots.wait(index, token):
                        raise Cancelled("the map was cancelled")
                begin()  # its time limit runs from here: a wait for an agent slot is not the item's time
                output, prompt = one(index, token, delta)
                if problem := too_big(output, "the item returned", limit):
                    raise OutputTooLarge(problem)  # that item fails: 1,024 items of a megabyte each were a GB
                return output, prompt

            run_items(todo, max(1, spec.max_parallel), token, delta, report, item, event.step_id, event.attempt,
                      spec.item_timeout_s, spec.item_retries, spec.item_retry_delay_s)
            return Answer("")

        def unused(token: CancelToken, delta: Delta) -> Answer:
            raise RuntimeError("a map attempt runs through `reporting`")

        return Call(unused, "the map's items returned", reporting=reporting, slots=slots)


def run_items(todo: list[int], max_parallel: int, token: CancelToken, delta: Delta, report: Report,
              one: Callable[[int, CancelToken, Delta, Callable[[], None]], tuple[str, str]], step_id: str,
              attempt: int, timeout_s: float = 0.0, retries: int = 0, retry_delay_s: float = 0.0) -> None:
    """Run ``one(index, token, delta, begin)`` for each of ``todo``, at most ``max_parallel`` at once, telling
    each end as it comes.

    Each item has a token of its own, cancelled with the map's ``token`` or once the item has run
    ``timeout_s`` (0: no limit) since it called ``begin()`` (after any wait for an agent slot): that item
    then fails with "timeout after N s", and the others go on. A failed item is tried again up to
    ``retries`` times, ``retry_delay_s`` after its failure; each failed try is told (its error says
    which try it was and that another follows), and only its last decides.
    An item's function cannot be interrupted; once given up, its thread stops counting toward
    ``max_parallel`` (``StepThreads.uncounted_once``), so the items behind it still start.

    Raises Cancelled once ``token`` is cancelled (items under way are not waited for).
    """
    # Daemon threads (not a ThreadPoolExecutor, whose workers the interpreter joins at exit): an item's
    # function still running after the map was cancelled or timed out must not hold the process open.
    pool = StepThreads(max(1, min(max_parallel, len(todo) or 1)), f"baton-map-{step_id}")
    waiting = list(reversed(todo))
    running: dict[Future[tuple[str, str]], _Item] = {}
    failures: dict[int, int] = {}  # tries of each item that failed so far
    later: list[tuple[float, int]] = []  # (when, index): failed items to try again

    def failed(item: _Item, error: str, took: float) -> None:
        n = failures[item.index] = failures.get(item.index, 0) + 1
        if n <= retries:
            later.append((time.monotonic() + retry_delay_s, item.index))
            error = f"{error} (try {n} of {retries + 1}; tried again in {retry_delay_s:g} s)"
        elif retries:
            error = f"{error} (try {n} of {retries + 1})"
        report(MapItemResult(step_id, attempt, item.index, error=error, failed=True, duration_s=took))

    def run(item: _Item) -> tuple[str, str]:
        with pool.uncounted_once(item.token.on_cancel):
            return one(item.index, item.token, delta, item.begin)

    try:
        while waiting or running or later:
            if token.cancelled:
                raise Cancelled("the map was cancelled")
            if later:
                now = time.monotonic()
                waiting.extend(index for due, index in later if due <= now)
                later[:] = [(due, index) for due, index in later if due > now]
            while waiting and len(running) < max_parallel:
                own = CancelToken()
                item = _Item(waiting.pop(), time.monotonic(), own, token.on_cancel(own.cancel))
                running[pool.submit(run, item)] = item
            patience = 0.5
            dues = [item.began + timeout_s for item in running.values() if item.began] if timeout_s else []
            dues += [due for due, _ in later]
            if dues:
                patience = max(0.0, min(patience, min(dues) - time.monotonic()))
            if not running:  # only items waiting for their next try: wait for the first one's time
                token.wait(patience)
                continue
            done, _ = wait(running, timeout=patience, return_when=FIRST_COMPLETED)
            for future in done:
                item = running.pop(future)
                item.unlink()
                took = time.monotonic() - (item.began or item.submitted)
                try:
                    output, prompt = future.result()
                except Cancelled:
                    raise
                except BaseException as exc:  # noqa: BLE001 - one item failing (sys.exit() too) is that item failing
                    failed(item, encodable(failure_text(exc)), took)
                else:
                    report(MapItemResult(step_id, attempt, item.index, output=encodable(output),
                                         prompt=encodable(prompt), duration_s=took))
            if timeout_s:
                now = time.monotonic()
                for future in [f for f, item in running.items() if item.began and now - item.began >= timeout_s]:
                    item = running.pop(future)  # its late answer, if any, is nobody's
                    item.unlink()
                    item.token.cancel()
                    failed(item, f"timeout after {timeout_s:g} s", now - item.began)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass(slots=True)
class _Item:
    """A map item under way: its index, when it was handed to a thread, its own token, what unlinks that
    token from the map's, and when its call began (0: not yet; set from the item's thread)."""

    index: int
    submitted: float
    token: CancelToken
    unlink: Callable[[], None]
    began: float = 0.0

    def begin(self) -> None:
        self.began = time.monotonic()


class SubflowExecutor:
    """A subflow step: launch the child run (once: an attempt after a restart finds it launched), follow it
    through the store until it ends, and answer its outcome. Cancelling the parent's step (the run's cancel,
    its timeout) cancels the child; a process stopping does not (the next start follows the child again):
    which of the two it was, the parent's log says within ``SETTLE_S``."""

    SETTLE_S = 2.0

    def prepare(self, ctx: EngineContext, state: RunState, event: StepStarted) -> Call | str:
        runs = ctx.children
        if runs is None:
            return "this engine cannot launch child runs"
        child_id = event.child_run_id
        try:
            launch = children.child_launch(state, event.step_id, child_id, ctx.registry, ctx.clock.now())
        except BatonError as exc:  # an unknown flow, a band it lacks, an input no event can hold
            return f"subflow {state.spec(event.step_id).flow!r}: {exc}"
        store, parent, step_id, attempt = ctx.store, state.run_id, event.step_id, event.attempt
        # The step waits for its child, whose steps need threads of the same pool: it stops counting.
        waiting = ctx.steps.blocking if isinstance(ctx.steps, StepThreads) else contextlib.nullcontext

        def ended(s: RunState) -> bool:
            st = s.steps.get(step_id)
            return st is None or st.status != StepStatus.RUNNING or st.attempt != attempt

        def run(token: CancelToken, delta: Delta) -> Answer:
            runs.launch_child(launch)
            with waiting():
                child = follow(store, child_id, lambda s: s.terminal or token.cancelled)
            if not child.terminal:  # the attempt was stopped: cancel the child if the parent's log ends it
                try:
                    with waiting():
                        follow(store, parent, ended, timeout=self.SETTLE_S)
                except Exception:  # noqa: BLE001 - not ended there (the process is stopping), or the store went
                    raise Cancelled("the subflow's step was stopped; its child goes on") from None
                with contextlib.suppress(BatonError):  # it ended meanwhile
                    runs.cancel(child_id, reason=f"parent run {parent} cancelled", by=f"run {parent}")
                raise Cancelled("the subflow's step was stopped")
            output, fields, problem = children.outcome(child)
            if problem:
                raise AgentError(problem)
            return Answer(output, fields)

        return Call(run, "the child run reported")


class TaskExecutor:
    """A task (DESIGN §12): its attempts start from TaskStarted, not StepStarted, and record as they go
    (``actors.run_tasks`` runs them; ``actors.task_attempt`` is the attempt)."""

    def prepare(self, ctx: EngineContext, state: RunState, event: StepStarted) -> Call | str:
        return "a task starts with TaskStarted (actors.run_tasks), never with StepStarted"


EXECUTORS: Mapping[str, StepExecutor] = {StepKind.AGENT: AgentExecutor(), StepKind.CODE: CodeExecutor(),
                                         StepKind.TASK: TaskExecutor(), StepKind.MAP: MapExecutor(),
                                         StepKind.SUBFLOW: SubflowExecutor()}
"""The executor of every kind of step that runs (flows.kinds has each kind's pure rules)."""


class Attempt(msgspec.Struct):
    """A running attempt as its RunActor tracks it."""

    step_id: str
    attempt: int
    kind: StepKind
    token: CancelToken
    started: float  # monotonic, for durations
    last_activity: float  # the engine clock's time of the last sign of life (the stall watch reads it)
    timer: Any = None
    stall_timer: Any = None
    deltas: int = 0
    release: Callable[[], None] | None = None  # hands the agent slot back the moment the call ends
    stall_reported: int = -1  # ``deltas`` when the current stall was reported (-1: none): one anomaly per episode
    slots: ItemSlots | None = None  # a map of agents: where its items get their slots

    @property
    def stall_known(self) -> bool:
        """Whether the silence under way was already reported (no sign of life since)."""
        return self.stall_reported == self.deltas

    def touch(self, now: float) -> None:
        """Note activity (a token arrived)."""
        self.last_activity = now
        self.deltas += 1

    def cancel_timers(self) -> None:
        """Disarm the timeout and the stall watch."""
        for timer in (self.timer, self.stall_timer):
            if timer is not None:
                timer.cancel()


class StepActor:
    """Runs one attempt and tells its RunActor the StepResult.

    One per attempt, as in DESIGN §4, but it runs on a thread of the engine's
    step pool rather than on a thread of its own: starting an OS thread (and
    a pykka inbox and registry entry) per attempt cost 12-18% of the engine's
    CPU in bench/engine.py. Like an actor it shares nothing and only tells;
    it is never told anything: cancelling goes through the attempt's token.
    The pool grows to ``EngineConfig.step_threads``, so parallel steps run in
    parallel.
    """

    def __init__(
        self,
        run_ref: pykka.ActorRef[Any],
        attempt: Attempt,
        call: Call,
        *,
        run_id: str,
        bus: FrameBus | None = None,
        clock: Clock | None = None,
        max_output_bytes: int = 0,
        redact: Redactor | None = None,
        deliver: Callable[[Any], None] | None = None,
    ) -> None:
        """``max_output_bytes`` (0 = none) fails an attempt whose output is larger;
        ``redact`` cleans what this actor logs (the RunActor cleans what it records);
        ``deliver`` tells the result (the RunActor's ``deliver``, which handles it on this
        thread when no other is handling the run's messages; default ``run_ref.tell``)."""
        self.run_ref = run_ref
        self.deliver = deliver or run_ref.tell
        self.attempt = attempt
        self.call = call
        self.run_id = run_id
        self.bus = bus
        self.clock = clock
        self.max_output_bytes = max_output_bytes
        self.redact = redact or Redactor()

    def start(self, pool: Executor) -> StepActor:
        """Run the attempt on ``pool``; returns self.

        On the engine's ``StepThreads``, the result is told as the thread's last act
        (``StepThreads.run_then``); any other executor runs ``run``.
        """
        run_then = getattr(pool, "run_then", None)
        if run_then is not None:
            run_then(self._work, self._tell)
        else:
            pool.submit(self.run)
        return self

    def run(self) -> None:
        """Call the backend or the function, then report (on the pool's thread)."""
        self._tell(self._work())

    def _work(self) -> StepResult:
        try:
            result = _encodable(self._run())
        except Exception as exc:  # baton's own work around the step failed: the attempt fails, rather than
            # never reporting (its thread would log it, and the run would wait for the attempt for ever)
            log.exception("step %s of run %s: its outcome could not be made", self.attempt.step_id, self.run_id)
            result = StepResult(self.attempt.step_id, self.attempt.attempt, failed=True,
                                error=encodable(f"baton could not record this attempt's outcome: {failure_text(exc)}"))
        if self.attempt.release is not None:
            self.attempt.release()  # the slot is free now, not once the RunActor gets to the result
        return result

    def _tell(self, result: StepResult) -> None:
        try:
            self.deliver(result)
        except pykka.ActorDeadError:
            log.info("run %s ended before step %s attempt %d reported", self.run_id,
                     self.attempt.step_id, self.attempt.attempt)

    def _run(self) -> StepResult:
        a = self.attempt
        t0 = time.monotonic()
        base: dict[str, Any] = dict(step_id=a.step_id, attempt=a.attempt)
        try:
            if self.call.reporting is not None:
                answer = self.call.reporting(a.token, self._delta, self._report)
            else:
                answer = self.call.run(a.token, self._delta)
            if problem := too_big(answer.output, self.call.what, self.max_output_bytes):
                return StepResult(**base, failed=True, error=problem, duration_s=time.monotonic() - t0)
            return StepResult(**base, output=answer.output, fields=answer.fields, usage=dict(answer.usage),
                              model=answer.model, duration_s=time.monotonic() - t0)
        except Cancelled as exc:
            return StepResult(**base, cancelled=True, error=str(exc) or "cancelled", duration_s=time.monotonic() - t0)
        except AgentError as exc:
            return StepResult(**base, failed=True, error=str(exc), usage=dict(exc.usage),
                              duration_s=time.monotonic() - t0)
        except BaseException as exc:  # noqa: BLE001 - a code step raising is that step failing, recorded as such
            # (SystemExit too: a function calling sys.exit() on a step thread left its attempt running for ever)
            error, frames = failure_text(exc), last_frames(exc)
            # Not exc_info: the traceback's text could carry a secret; the frames say where it broke.
            log.info("step %s of run %s raised %s at %s", a.step_id, self.run_id, self.redact(error),
                     " < ".join(self.redact.all(reversed(frames))) or "?")
            return StepResult(**base, failed=True, error=error, frames=frames, duration_s=time.monotonic() - t0)

    def _report(self, message: Any) -> None:
        """Tell the RunActor how the attempt is getting on (a map's item ended)."""
        try:
            self.run_ref.tell(message)
        except pykka.ActorDeadError:
            pass  # the run ended meanwhile: nothing waits for it

    def _delta(self, text: str) -> None:
        """A piece of the answer: a sign of life for the stall watch, and a frame."""
        self.attempt.touch(self.clock.now() if self.clock is not None else time.time())
        if self.bus is not None and text:
            self.bus.publish({"type": "step_delta", "run_id": self.run_id, "step_id": self.attempt.step_id,
                              "attempt": self.attempt.attempt, "text": text})


def too_big(output: str, what: str, limit: int) -> str:
    """Why ``output`` cannot be recorded (over ``limit`` bytes, ``max_output_bytes``; 0: no limit), or ""."""
    if not limit or len(output) * 4 <= limit:
        return ""  # cheap: no text of n characters is more than 4n bytes of UTF-8
    size = len(output.encode("utf-8", "surrogatepass"))
    if size <= limit:
        return ""
    return (f"output too large: {what} {_size(size)}, over the limit of {_size(limit)} "
            "(BATON_MAX_OUTPUT_BYTES / --max-output-bytes); return less (a summary, or where the "
            "whole result was written), or raise the limit")


def _encodable(result: StepResult) -> StepResult:
    """``result`` with its text as the store can encode it (``flows.text.encodable``): a model's output
    holding a surrogate pair its stream split, a function's holding bytes that were not UTF-8."""
    if encodable(result.output) is result.output and encodable(result.error) is result.error and not result.frames:
        return result  # (an agent's fields come from its output, a code step's output is their JSON)
    return encodable_fields(result)


def failure_text(exc: BaseException) -> str:
    """``"ValueError: broken on purpose"``: how a step's exception is recorded. An exception whose message
    cannot be read (its ``__str__`` raised) says so, rather than raising out of the step's thread, which
    left the attempt running for ever."""
    try:
        message = str(exc)
    except Exception as inner:  # noqa: BLE001 - whatever it raised, the step has failed all the same
        message = f"(its message could not be read: {type(inner).__name__})"
    return f"{type(exc).__name__}: {message}"


def last_frames(exc: BaseException, limit: int = FRAMES_KEPT) -> tuple[str, ...]:
    """The innermost ``limit`` frames of ``exc``'s traceback, outermost first, as "file:line in func".

    baton's own frame (the call of the step's function) is left out; paths are
    relative to the working directory, else to the import root they came from.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    return tuple(f"{_relative(f.filename)}:{f.lineno} in {f.name}" for f in frames[-limit:])


def _relative(path: str) -> str:
    full = os.path.abspath(path)
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        cwd = ""
    if cwd and full.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(full, cwd)
    roots = [r for r in (os.path.abspath(p) for p in sys.path if p) if full.startswith(r.rstrip(os.sep) + os.sep)]
    return os.path.relpath(full, max(roots, key=len)) if roots else path


def _size(n: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
