"""StepThreads: parallel up to its cap, threads reused, daemons, work not started can be dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from actors.step_threads import StepThreads


def test_runs_in_parallel_up_to_its_cap_on_daemon_threads_and_reuses_them():
    pool = StepThreads(3)
    gate = threading.Event()
    started = threading.Semaphore(0)
    seen: set[threading.Thread] = set()

    def work() -> bool:
        seen.add(threading.current_thread())
        started.release()
        return gate.wait(5)

    futures = [pool.submit(work) for _ in range(5)]
    for _ in range(3):
        assert started.acquire(timeout=5)  # three run at once ...
    assert not started.acquire(timeout=0.2)  # ... and no more
    gate.set()
    assert [f.result(5) for f in futures] == [True] * 5
    assert len(seen) == 3 and all(t.daemon for t in seen)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(work)


def test_shutdown_drops_work_not_started_and_does_not_wait_for_a_busy_thread():
    pool = StepThreads(1)
    release = threading.Event()
    busy = pool.submit(release.wait, 30)
    queued = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled() and not busy.done()
    release.set()
    assert busy.result(5) is True


def test_a_prestarted_thread_takes_the_first_work_and_no_other_is_started():
    pool = StepThreads(3)
    pool.prestart()
    pool.prestart()  # one is enough: a second call starts nothing
    ready = set(threading.enumerate())
    assert pool.submit(threading.current_thread).result(5) in ready
    assert set(threading.enumerate()) - ready == set()
    pool.shutdown()


def test_run_then_counts_its_thread_idle_before_the_last_act():
    """The last act (a step telling its RunActor) wakes whoever waits; the thread is then free already:
    work handed over from there goes to it, and no second thread is started for it."""
    pool = StepThreads(2)
    ran_on: list[threading.Thread] = []
    after: Future[threading.Thread] = Future()

    def then(result: str) -> None:
        ran_on.append(threading.current_thread())
        pool.run_then(threading.current_thread, after.set_result)

    pool.run_then(lambda: "done", then)
    assert after.result(5) is ran_on[0]
    pool.shutdown()


def test_run_then_goes_on_serving_after_its_work_or_last_act_raised():
    pool = StepThreads(1)

    def boom(*_: object) -> None:
        raise RuntimeError("broken on purpose")

    pool.run_then(boom, lambda result: None)
    pool.run_then(lambda: "x", boom)
    assert pool.submit(lambda: "still serving").result(5) == "still serving"
    pool.shutdown()


def test_threads_beyond_keep_idle_end_once_their_work_is_done_and_the_rest_go_on_serving():
    pool = StepThreads(100, "kept", keep_idle=1)
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(3)]
    gate.set()
    assert [f.result(5) for f in futures] == [True] * 3

    def kept() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("kept-")]

    deadline = time.monotonic() + 5
    while len(kept()) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(kept()) == 1
    assert pool.submit(threading.current_thread).result(5) in kept()
    pool.shutdown()


def test_at_its_cap_a_pool_keeping_few_idle_still_serves_the_work_queued_behind_its_busy_threads():
    pool = StepThreads(2, "capped", keep_idle=1)
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(2)]
    queued = [pool.submit(lambda i=i: i) for i in range(4)]  # no thread free: they wait in the queue
    gate.set()
    assert [f.result(5) for f in futures] == [True, True]
    assert [f.result(5) for f in queued] == [0, 1, 2, 3]
    pool.shutdown()


def test_work_started_in_a_last_act_runs_next_on_that_thread_and_more_of_it_runs_in_parallel():
    """A step's result handled on its own thread starts the run's next attempt there (no other thread
    woken for it); a second attempt started by the same result still gets a thread of its own."""
    pool = StepThreads(4)
    ran: dict[str, threading.Thread] = {}
    both = threading.Barrier(2, timeout=5)  # the two started attempts must be under way at once
    finished = threading.Semaphore(0)

    def attempt(name: str) -> Callable[[], str]:
        def work() -> str:
            ran[name] = threading.current_thread()
            if name != "first":
                both.wait()
            return name
        return work

    def last_act(result: str) -> None:
        if result == "first":  # the first attempt's result starts two more, as a fan-out's head does
            pool.run_then(attempt("a"), last_act)
            pool.run_then(attempt("b"), last_act)
        else:
            finished.release()

    pool.run_then(attempt("first"), last_act)
    assert finished.acquire(timeout=5) and finished.acquire(timeout=5), f"the attempts did not end: {ran}"
    assert ran["a"] is ran["first"]  # kept by the thread that started it
    assert ran["b"] is not ran["first"]  # and the other ran beside it (the barrier saw both)
    pool.shutdown()


def test_a_thread_keeping_work_says_so_only_inside_its_last_act():
    pool = StepThreads(2)
    seen: list[tuple[bool, bool]] = []
    done = threading.Event()

    def last_act(result: str) -> None:
        if result == "first":
            before = pool.keeps_work()
            pool.run_then(lambda: "second", last_act)
            seen.append((before, pool.keeps_work()))
        else:
            done.set()

    pool.run_then(lambda: "first", last_act)
    assert done.wait(5)
    assert seen == [(False, True)]
    assert not pool.keeps_work()  # not on a thread of the pool
    pool.shutdown()


def test_run_then_if_idle_takes_a_waiting_thread_or_nothing():
    """An actor's drain goes to a step thread only when one waits for work: else False, and nothing is queued
    (it must not wait behind steps). Work started in its last act is kept for that thread."""
    pool = StepThreads(1)
    assert pool.run_then_if_idle(lambda: "x", lambda _: None) is False  # no thread started yet: none waits
    pool.prestart()
    ran: list[tuple[str, threading.Thread]] = []
    done = threading.Event()

    def last_act(result: str) -> None:
        ran.append((result, threading.current_thread()))
        if result == "drain":
            pool.run_then(lambda: "attempt", last_act)
        else:
            done.set()

    assert pool.run_then_if_idle(lambda: "drain", last_act) is True
    assert done.wait(5)
    assert [r for r, _ in ran] == ["drain", "attempt"] and ran[0][1] is ran[1][1]
    started, release = threading.Event(), threading.Event()
    busy = pool.submit(lambda: started.set() or release.wait(5))  # the one thread busy: nothing waits for work
    assert started.wait(5)
    assert pool.run_then_if_idle(lambda: "y", last_act) is False
    release.set()
    assert busy.result(5) is True and [r for r, _ in ran] == ["drain", "attempt"]
    pool.shutdown()


def test_a_thread_inside_its_last_act_is_not_taken_for_one_waiting_for_work():
    """Counted idle inside a ``then``, a thread may start a step there that blocks (a subflow waiting for its
    child run): a drain handed to it would wait behind that step, the child's actor among them."""
    pool = StepThreads(2)
    pool.prestart()
    inside, release = threading.Event(), threading.Event()
    pool.run_then(lambda: None, lambda _: (inside.set(), release.wait(5)))
    assert inside.wait(5)
    assert pool.run_then_if_idle(lambda: None, lambda _: None) is False  # the only thread is in its last act
    release.set()
    ran = threading.Event()
    deadline = time.monotonic() + 5
    while not pool.run_then_if_idle(lambda: None, lambda _: ran.set()):  # waiting for work again: taken
        assert time.monotonic() < deadline, "the thread never waited for work again"
        time.sleep(0.005)
    assert ran.wait(5)
    pool.shutdown()


def test_work_queued_while_the_only_thread_is_inside_its_last_act_gets_a_thread_of_its_own():
    """A restarted subflow run: the parent's drain, in a step thread's last act, starts the step that waits
    for the child, while the child's attempt is queued from another thread. Counted idle, the first thread
    would have been left to take it, after a step that never ends without it."""
    pool = StepThreads(4)
    pool.prestart()
    inside, release = threading.Event(), threading.Event()
    pool.run_then(lambda: None, lambda _: (inside.set(), release.wait(10)))  # the parent, waiting on the child
    assert inside.wait(5)
    child = pool.submit(lambda: "the child's attempt")
    try:
        assert child.result(5) == "the child's attempt"
    finally:
        release.set()
        pool.shutdown()


def test_a_thread_blocking_on_work_queued_behind_it_frees_its_place_and_that_work_runs():
    """A pool full of work that waits on more work of the same pool (a subflow step on its child's
    steps) waits forever, unless the waiting work says it blocks: then the work behind it gets a
    thread, and the cap holds again once it stops blocking."""
    pool = StepThreads(1)
    child_ran = threading.Event()

    def parent(blocks: bool) -> bool:
        pool.submit(child_ran.set)  # queued behind this work, on a pool at its cap
        if not blocks:
            return child_ran.wait(0.3)
        with pool.blocking():
            return child_ran.wait(5)

    assert pool.submit(parent, False).result(5) is False  # without it: the child never got a thread
    assert child_ran.wait(5)  # (it runs once the parent's thread is free)
    child_ran.clear()
    assert pool.submit(parent, True).result(5) is True
    _assert_one_at_a_time(pool)  # no thread blocks now
    pool.shutdown()


def test_blocking_outside_the_pool_changes_nothing():
    pool = StepThreads(1)
    with pool.blocking():  # this thread is not the pool's: the cap stays one
        _assert_one_at_a_time(pool)
    pool.shutdown()


def test_work_given_up_stops_counting_until_it_returns():
    """A code step's function cannot be interrupted: once its token is cancelled (a timeout), the thread
    stuck in it stops counting and the work queued behind it runs; once it returns, the cap holds again."""
    from actors.agents import CancelToken

    pool = StepThreads(1)
    token, stuck, inside = CancelToken(), threading.Event(), threading.Event()

    def hung() -> str:
        with pool.uncounted_once(token.on_cancel):
            inside.set()
            stuck.wait(5)
        return "returned"

    first = pool.submit(hung)
    assert inside.wait(5)
    behind = pool.submit(lambda: "ran")
    assert not behind.done() and not _done_within(behind, 0.2)  # at the cap: it waits
    token.cancel()
    assert behind.result(5) == "ran" and not first.done()  # given up: the queued work got a thread
    stuck.set()
    assert first.result(5) == "returned"
    _assert_one_at_a_time(pool)  # counted again
    pool.shutdown()


def test_work_that_returns_before_its_token_is_cancelled_stays_counted():
    from actors.agents import CancelToken

    pool = StepThreads(1)
    token = CancelToken()

    def quick() -> str:
        with pool.uncounted_once(token.on_cancel):
            return "done"

    assert pool.submit(quick).result(5) == "done"
    token.cancel()
    _assert_one_at_a_time(pool)
    pool.shutdown()


def _done_within(future: Future, seconds: float) -> bool:
    try:
        future.result(seconds)
    except TimeoutError:
        return False
    return True


def _assert_one_at_a_time(pool: StepThreads) -> None:
    """Two pieces of work submitted now run one after the other: a pool of one still counts one."""
    gate, started = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        started.release()
        gate.wait(5)

    held = [pool.submit(hold) for _ in range(2)]
    try:
        assert started.acquire(timeout=5) and not started.acquire(timeout=0.2)
    finally:
        gate.set()
        for f in held:
            f.result(5)
