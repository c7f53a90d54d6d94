"""Commands handed between processes through the store (see ``flows.commands``).

``Inbox`` runs in every engine: one thread follows the store from the head
at start and carries out each ``CommandRequested`` appended to this node's
inbox stream, then appends its ``CommandAnswered``. It is woken by the
store's own subscription (LISTEN/NOTIFY on PostgreSQL, the shared head
watcher on SQLite): no loop of its own polls the database.

``Inbox.send`` is the other side: append a request to the inbox of the node
driving a run and wait for the answer, up to a deadline. While it waits it
checks, once a second without news, that the node still holds its lease: a
node that died meanwhile will never answer, and the caller then takes the
run over itself, as it would have had the node been gone from the start.

A command is carried out at most once: the answer is appended after the
command took effect, and a request nobody answered in time is not retried
elsewhere while its node lives (the requester reports the timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from actors.errors import (
    FlowsModuleMissing,
    NodeDidNotAnswer,
    RunBusy,
    RunOwnedElsewhere,
    TaskCommandRefused,
)
from actors.ids import new_ulid
from actors.runlog import node_lease
from eventstore import (
    CorruptEventError,
    EventStore,
    NewEvent,
    RecordedEvent,
    StoreClosedError,
)
from eventstore.leases import Leases
from flows import errors
from flows.auth import FourEyesRefused
from flows.codec import INITIAL_SCHEMA_VERSION
from flows.commands import (
    CommandAnswered,
    CommandKind,
    CommandRequested,
    Refusal,
    inbox_of,
)
from flows.tasks.lifecycle import TaskTransitionError

log = logging.getLogger(__name__)

REQUESTED, ANSWERED = "CommandRequested", "CommandAnswered"
READY_S = 1.0  # at most this long, the engine's start waits for its inbox to follow the store (Inbox.start)
_RESUBSCRIBE_S = 1.0  # pause before following again after the store failed


def new_command(kind: CommandKind, run_id: str, *, step_id: str = "", by: str = "", comment: str = "",
                at: float = 0.0) -> CommandRequested:
    """A command with a fresh id."""
    return CommandRequested(command_id=new_ulid(), kind=kind, run_id=run_id, step_id=step_id, by=by,
                            comment=comment, at=at)


def answer_for(command: CommandRequested, outcome: int | BaseException, at: float) -> CommandAnswered:
    """The answer to ``command``: the position it appended, or the refusal its error stands for."""
    if isinstance(outcome, int):
        return CommandAnswered(command_id=command.command_id, run_id=command.run_id, position=outcome, at=at)
    refusal, state, owner, module = Refusal.FAILED, "", "", ""
    match outcome:
        case errors.UnknownRun():
            refusal = Refusal.UNKNOWN_RUN
        case errors.UnknownStep():
            refusal = Refusal.UNKNOWN_STEP
        case errors.NotWaiting():
            refusal, state = Refusal.NOT_WAITING, outcome.status
        case errors.RunFinished():
            refusal, state = Refusal.RUN_FINISHED, outcome.status
        case RunOwnedElsewhere():
            refusal, owner = Refusal.OWNED_ELSEWHERE, outcome.node or outcome.owner
        case RunBusy():
            refusal = Refusal.BUSY
        case FlowsModuleMissing():
            refusal, module = Refusal.FLOWS_MODULE_MISSING, outcome.module
        case FourEyesRefused():
            refusal = Refusal.FOUR_EYES
        case TaskCommandRefused():
            refusal = Refusal.TASK_REFUSED
        case TaskTransitionError():
            refusal = Refusal.TASK_NOT_READY
    message = str(outcome) if refusal is not Refusal.FAILED else f"{type(outcome).__name__}: {outcome}"
    return CommandAnswered(command_id=command.command_id, run_id=command.run_id, refusal=refusal, message=message,
                           state=state, owner=owner, module=module, at=at)


def outcome_of(command: CommandRequested, answer: CommandAnswered) -> int:
    """The position the command appended; raises the error its refusal stands for.

    The errors are the ones the command would have raised had it been
    carried out here, so every face (HTTP, CLI) reports them the same way.
    """
    run_id, step_id = command.run_id, command.step_id
    match answer.refusal:
        case None:
            return answer.position
        case Refusal.UNKNOWN_RUN:
            raise errors.UnknownRun(run_id)
        case Refusal.UNKNOWN_STEP:
            raise errors.UnknownStep(run_id, step_id)
        case Refusal.NOT_WAITING:
            raise errors.NotWaiting(run_id, step_id, answer.state)
        case Refusal.RUN_FINISHED:
            raise errors.RunFinished(run_id, answer.state)
        case Refusal.OWNED_ELSEWHERE:
            raise RunOwnedElsewhere(run_id, answer.owner, node=answer.owner)
        case Refusal.BUSY:
            raise RunBusy(run_id)
        case Refusal.FLOWS_MODULE_MISSING:
            raise FlowsModuleMissing(run_id, answer.module)
        case Refusal.FOUR_EYES:
            raise FourEyesRefused(run_id, step_id, command.by)
        case Refusal.TASK_REFUSED:
            raise TaskCommandRefused(answer.message)
        case Refusal.TASK_NOT_READY:
            raise TaskTransitionError(answer.message)
    raise RuntimeError(f"run {run_id}: the process driving it could not carry out the command: {answer.message}")


class Inbox:
    """This node's inbox: follow it and carry out commands; and send commands to other nodes' inboxes.

    ``execute(command)`` carries a command out here (the engine's own
    command path, without handing it on) and returns the position of the
    event it appended, or raises the command's error.
    """

    def __init__(self, store: EventStore, leases: Leases, node: str,
                 execute: Callable[[CommandRequested], int], now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.leases = leases
        self.node = node
        self.stream = inbox_of(node)
        self._execute = execute
        self._now = now
        self._stopping = threading.Event()
        self._subscription: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Set once the inbox follows the store (LISTEN up, its first read done), or failed to: see start.
        self.ready = threading.Event()
        # Commands run off the following thread: one waits for the engine, the next is read meanwhile.
        self._workers = ThreadPoolExecutor(4, thread_name_prefix="baton-inbox")

    # -- following this node's inbox -----------------------------------------------------------

    def start(self) -> Inbox:
        """Follow the inbox from the store's head (older requests were for a previous process).

        The head is read on the following thread, retried while the store is
        away: an engine starts whether or not its database answers yet.
        ``ready`` is set once the store follows other processes' commits (on
        PostgreSQL its LISTEN connection is up) and the inbox's first read is
        done, or the first try failed: what the engine waits for before its
        first command, so that neither is opened under that command.
        """
        self._thread = threading.Thread(target=self._follow, name="baton-inbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following; commands being carried out finish (their requesters get their answers)."""
        self._stopping.set()
        with self._lock:
            if self._subscription is not None:
                self._subscription.close()
        if self._thread is not None:
            self._thread.join(10)
        self._workers.shutdown(wait=True)

    def _follow(self) -> None:
        after: int | None = None
        while not self._stopping.is_set():
            try:
                if after is None:
                    after = self.store.head()
                watching = getattr(self.store, "watching", None)
                if watching is not None and not self.ready.is_set():
                    watching(READY_S)  # first: its first wake-up makes every subscription read again
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._subscription = self.store.subscribe(after=after, stream_id=self.stream)
                first = self._subscription.next_event(timeout=0)  # the first read, done before ready
                self.ready.set()
                rec = first if first is not None else self._subscription.next_event()
                while rec is not None:
                    after = rec.position
                    if rec.stream_id == self.stream and rec.type == REQUESTED:
                        self._workers.submit(self._carry_out, rec)
                    rec = self._subscription.next_event()
            except StoreClosedError:
                self.ready.set()
                return  # the process is stopping
            except CorruptEventError as exc:  # one bad row anywhere must not stop the inbox
                log.error("inbox of %s skips position %d: %s", self.node, exc.position, exc)
                after = max(after or 0, exc.position)
            except Exception:  # the store is away: follow again from where we were
                self.ready.set()  # (the engine does not wait for it)
                if self._stopping.is_set():
                    return
                log.warning("inbox of %s: following the store failed; again in %g s", self.node, _RESUBSCRIBE_S,
                            exc_info=True)
                self._stopping.wait(_RESUBSCRIBE_S)
            finally:
                with self._lock:
                    if self._subscription is not None:
                        self._subscription.close()
                        self._subscription = None

    def _carry_out(self, rec: RecordedEvent) -> None:
        try:
            command = msgspec.convert(rec.data, CommandRequested)
        except msgspec.ValidationError as exc:
            log.error("inbox of %s: request at position %d does not decode: %s", self.node, rec.position, exc)
            return
        try:
            outcome: int | BaseException = self._execute(command)
        except Exception as exc:  # every refusal is answered: the requester waits for it
            outcome = exc
        answer = answer_for(command, outcome, self._now())
        try:
            self._append(answer, ANSWERED, command.by)
        except Exception:
            log.exception("inbox of %s: could not answer command %s for run %s", self.node, command.command_id,
                          command.run_id)

    # -- handing a command to another node -------------------------------------------------------

    def send(self, node: str, command: CommandRequested, timeout: float) -> CommandAnswered | None:
        """Hand ``command`` to ``node`` and wait for its answer.

        Returns None when the node lost its lease before answering (it is gone:
        the caller may take the run over). Raises NodeDidNotAnswer after
        ``timeout`` seconds with the node still alive.
        """
        deadline = time.monotonic() + timeout
        stream = inbox_of(node)
        subscription = self.store.subscribe(after=self.store.head())
        try:
            self._append(command, REQUESTED, command.by, stream=stream)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NodeDidNotAnswer(command.run_id, node, timeout)
                rec = subscription.next_event(timeout=min(left, 1.0))
                if rec is None:
                    if not self.leases.owner_of(node_lease(node)):
                        log.warning("node %s went away before answering command %s for run %s", node,
                                    command.command_id, command.run_id)
                        return None
                    continue
                if (rec.stream_id == stream and rec.type == ANSWERED
                        and rec.data.get("command_id") == command.command_id):
                    return msgspec.convert(rec.data, CommandAnswered)
        finally:
            subscription.close()

    def _append(self, value: msgspec.Struct, type_name: str, by: str, *, stream: str | None = None) -> int:
        data = msgspec.to_builtins(value)
        metadata = {"node": self.node, "actor": by or f"baton@{self.node}",
                    "correlation_id": data["run_id"], "causation_id": f"command:{data['command_id']}",
                    "schema_version": INITIAL_SCHEMA_VERSION}
        # Any version: requests from many processes and answers share the stream; order is the log's.
        recorded = self.store.append(stream or self.stream, [NewEvent(type_name, data, metadata)], None)
        return recorded[0].position
