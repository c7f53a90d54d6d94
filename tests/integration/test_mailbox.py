"""DispatchedActor: messages handled one at a time, in each sender's order, on whichever thread finds the
mailbox idle; a stopped actor refuses more and answers what was queued behind its stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest

from actors.mailbox import DispatchedActor
from actors.step_threads import StepThreads


class Recorder(DispatchedActor):
    """Records (message, thread) and whether two threads were ever inside it at once."""

    last: Recorder

    def __init__(self, pool: StepThreads, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.pool = pool
        self.gate = gate
        self.handled: list[tuple[Any, threading.Thread]] = []
        self.inside = False
        self.overlapped = False
        self.failures: list[BaseException] = []
        Recorder.last = self

    def threads(self) -> Any:
        return self.pool

    def on_receive(self, message: Any) -> Any:
        if self.inside:
            self.overlapped = True
        self.inside = True
        try:
            if message == "wait" and self.gate is not None:
                assert self.gate.wait(5)
            if message == "boom":
                raise ValueError("boom")
            self.handled.append((message, threading.current_thread()))
            time.sleep(0)  # lets another thread run here, were two handling this actor at once
            return message
        finally:
            self.inside = False

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failures.append(exception_value)


def _until(what: str, predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _start(gate: threading.Event | None = None) -> tuple[Recorder, pykka.ActorRef[Any], StepThreads]:
    pool = StepThreads(8, "test-drain")
    ref = Recorder.start(pool, gate)
    actor = Recorder.last
    _until("the actor's start to end", lambda: not actor.actor_inbox.busy)
    return actor, ref, pool


def test_messages_are_handled_one_at_a_time_in_each_senders_order_whoever_handles_them():
    actor, ref, pool = _start()
    senders, each = 4, 300

    def send(sender: int) -> None:
        for i in range(each):  # half handed over on the sender's thread when it finds the actor idle
            (actor.deliver if i % 2 else ref.tell)((sender, i))

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    _until("every message handled", lambda: len(actor.handled) == senders * each)
    assert not actor.overlapped
    for sender in range(senders):
        assert [i for (s, i), _ in actor.handled if s == sender] == list(range(each))
    handlers = {thread.name for _, thread in actor.handled}
    assert any(name.startswith("test-drain") for name in handlers)  # told: handled on the pool
    ref.stop()
    pool.shutdown()


def test_delivered_to_an_idle_actor_a_message_is_handled_on_the_callers_thread_else_it_waits_its_turn():
    gate = threading.Event()
    actor, ref, pool = _start(gate)
    actor.deliver("here")
    assert actor.handled == [("here", threading.current_thread())]  # done when deliver returned

    ref.tell("wait")  # a pool thread handles it, held at the gate
    _until("the pool thread to be inside", lambda: actor.inside)
    actor.deliver("queued")  # returns at once: the pool thread is handling this actor's messages
    assert [m for m, _ in actor.handled] == ["here"]
    gate.set()
    _until("the queued message", lambda: len(actor.handled) == 3)
    assert [m for m, _ in actor.handled] == ["here", "wait", "queued"]
    assert actor.handled[2][1] is actor.handled[1][1] and actor.handled[2][1] is not threading.current_thread()
    ref.stop()
    pool.shutdown()


def test_a_stopped_actor_refuses_more_and_answers_what_was_queued_behind_its_stop():
    gate = threading.Event()
    actor, ref, pool = _start(gate)
    ref.tell("wait")
    _until("the pool thread to be inside", lambda: actor.inside)
    stopped = ref.stop(block=False)
    behind = ref.ask("late", block=False)
    gate.set()
    stopped.get(timeout=5)
    with pytest.raises(pykka.ActorDeadError):
        behind.get(timeout=5)
    with pytest.raises(pykka.ActorDeadError):
        actor.deliver("after")
    assert [m for m, _ in actor.handled] == ["wait"]
    pool.shutdown()


def test_a_message_that_raises_stops_the_actor_through_on_failure_and_an_ask_gets_the_error():
    actor, ref, pool = _start()
    assert ref.ask("fine", timeout=5) == "fine"
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=5)  # an asker gets the error; the actor goes on
    assert ref.is_alive()
    actor.deliver("boom")  # nobody to answer: the actor fails and stops
    assert [str(e) for e in actor.failures] == ["boom"] and not ref.is_alive()
    pool.shutdown()


def test_with_its_pool_shut_down_an_actor_still_gets_a_thread():
    pool = StepThreads(2, "test-drain")
    pool.shutdown()
    ref = Recorder.start(pool)
    assert ref.ask("late start", timeout=5) == "late start"
    ref.stop()


class Starter(Recorder):
    """Starts an attempt on its work threads for each message, as a RunActor does for a launch."""

    def __init__(self, pool: StepThreads, work: StepThreads) -> None:
        super().__init__(pool)
        self.work = work
        self.attempts: list[threading.Thread] = []
        self.ran = threading.Semaphore(0)

    def work_threads(self) -> Any:
        return self.work

    def on_receive(self, message: Any) -> Any:
        super().on_receive(message)
        self.work.run_then(lambda: self.attempts.append(threading.current_thread()), lambda _: self.ran.release())


def test_told_to_an_idle_actor_a_message_is_handled_on_a_waiting_work_thread_which_then_runs_its_attempt():
    """A launch's first attempt (or an approval's next step) runs on the thread that handled the message,
    not after a hand-off to another; with no work thread waiting, the actor's own pool handles it."""
    pool, work = StepThreads(4, "test-drain"), StepThreads(1, "test-work")
    ref = Starter.start(pool, work)
    actor = Recorder.last
    assert isinstance(actor, Starter)
    _until("the actor's start to end", lambda: not actor.actor_inbox.busy)
    ref.tell("launch")  # no work thread started yet: handled on the actor's pool
    assert actor.ran.acquire(timeout=5)
    assert actor.handled[0][1].name.startswith("test-drain") and actor.attempts[0].name.startswith("test-work")
    _until("the mailbox idle", lambda: not actor.actor_inbox.busy)
    ref.tell("approve")  # the work thread waits now: it handles the message, then the attempt
    assert actor.ran.acquire(timeout=5)
    assert actor.handled[1][1] is actor.attempts[1] and actor.attempts[1].name.startswith("test-work")
    ref.stop()
    pool.shutdown()
    work.shutdown()
