"""Actors without a thread of their own: a mailbox drained by whichever thread finds it idle.

A pykka ``ThreadingActor`` owns a thread that waits on its inbox. A RunActor
does not need one: its messages come in bursts (a step's result, then
nothing until the next), and every hand-off between its thread and a step's
thread is a wake-up (a futex call and a context switch each way). So, as
Akka's dispatchers and Tokio's workers do, a ``DispatchedActor``'s messages
are handled by one thread at a time, taken from a pool when a message finds
the mailbox idle, and given back once the mailbox is empty. A step's thread
that reports its result to an idle mailbox handles it itself (``deliver``):
the run's next decision, its commit and the start of the next attempt happen
on the thread that just finished a step, which then runs that attempt itself
(``StepThreads.run_then`` keeps it for that thread, as Tokio's LIFO slot; a
second attempt started at once goes to another thread). A message told to an idle
mailbox (a launch, an approval) is handled by a step thread waiting for work when
one is (``work_threads``), which then runs the attempt it started the same way;
else by the actor's own pool (``threads``). A run's messages are
still handled one at a time and in the order each sender put them; while a
step runs, the run holds no thread, and a cancel or an approval is handled at
once on another.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

import pykka
from pykka._envelope import Envelope  # what pykka's ActorRef.tell puts in an inbox

log = logging.getLogger(__name__)


class Mailbox:
    """An actor's inbox with no thread waiting on it: ``busy`` while a thread is handling its messages (or is
    about to). ``put`` (pykka's ``tell``) asks ``schedule`` for a thread when it finds it idle."""

    __slots__ = ("_items", "_lock", "busy", "schedule")

    def __init__(self) -> None:
        self._items: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        self.busy = True  # the actor's start is its first drain
        self.schedule: Callable[[], None] | None = None

    def put(self, envelope: Envelope[Any]) -> None:
        if self.claim(envelope):
            assert self.schedule is not None
            self.schedule()

    def claim(self, envelope: Envelope[Any]) -> bool:
        """Queue ``envelope``; True when no thread is handling the messages, and the caller must (now)."""
        with self._lock:
            self._items.append(envelope)
            if self.busy:
                return False
            self.busy = True
            return True

    def take(self) -> Envelope[Any] | None:
        """The next message to handle; None when there is none, and the mailbox is idle again."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self.busy = False
            return None

    def empty(self) -> bool:
        return not self._items

    def get(self) -> Envelope[Any]:
        """(pykka's teardown, after the actor stopped: answers what is left)."""
        return self._items.popleft()


def _nothing() -> None:
    return None


class DispatchedActor(pykka.ThreadingActor):
    """A pykka actor whose messages are handled on ``threads()`` (an Executor), or on the thread that ``deliver``s
    one to an idle mailbox; a thread of its own only when the executor is shut down."""

    actor_inbox: Mailbox

    @staticmethod
    def _create_actor_inbox() -> Any:
        return Mailbox()

    def threads(self) -> Any:
        """The executor that drains the mailbox (None: a new daemon thread each time)."""
        return None

    def work_threads(self) -> Any:
        """The StepThreads its messages start work on (None: none): an idle thread of theirs drains the
        mailbox when one waits, then runs the work the drain started (``StepThreads.run_then_if_idle``)."""
        return None

    def hand_over(self) -> bool:
        """Whether the thread draining should leave what is left to another (checked after each message
        while more are queued): True when it has work of its own waiting, such as the attempt the
        message started, which must not wait for the rest of the mailbox."""
        return False

    def _start_actor_loop(self) -> None:
        self.actor_inbox.schedule = self._schedule_drain
        self._run_soon(self._first_drain)

    def _first_drain(self) -> None:
        self._actor_loop_setup()  # on_start; a failure stops the actor
        self._drain()

    def _schedule_drain(self) -> None:
        self._run_soon(self._drain)

    def _run_soon(self, fn: Callable[[], None]) -> None:
        run_then_if_idle = getattr(self.work_threads(), "run_then_if_idle", None)  # (another Executor: none)
        if run_then_if_idle is not None and run_then_if_idle(_nothing, lambda _: fn()):
            return  # a launch's first attempt, an approval's next step: run next on the thread that drained
        threads = self.threads()
        if threads is not None:
            try:
                threads.submit(fn)
                return
            except RuntimeError:  # the executor is shut down (the engine stopped): a thread of its own
                pass
        threading.Thread(target=fn, name=f"{type(self).__name__}-drain", daemon=True).start()

    def deliver(self, message: Any) -> None:
        """Tell this actor ``message``, handling it (and what follows it) on this thread when no other thread is
        handling its messages. ActorDeadError once it has stopped, as ``tell``."""
        if self.actor_stopped.is_set():
            raise pykka.ActorDeadError(f"{self.actor_ref} not found")
        if self.actor_inbox.claim(Envelope(message)):
            self._drain()

    def _drain(self) -> None:
        """Handle the messages queued, as pykka's loop does, until none is left or the actor stops."""
        inbox = self.actor_inbox
        while not self.actor_stopped.is_set():
            envelope = inbox.take()
            if envelope is None:
                return
            self._handle_envelope(envelope)
            if not inbox.empty() and self.hand_over():
                self._schedule_drain()  # the mailbox stays busy: the next thread goes on where this one stops
                return
        self._actor_loop_teardown()  # stopped: the mailbox stays busy, so no thread is asked for again

    def _handle_envelope(self, envelope: Envelope[Any]) -> None:
        """One message, with pykka's handling of its outcome (``Actor._actor_loop_running``)."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                log.info("Exception returned from %s to caller:", self, exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:
            log.debug("%r in %s. Stopping all actors.", sys.exc_info()[1], self)
            self._stop()
            pykka.ActorRegistry.stop_all()
