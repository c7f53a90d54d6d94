"""StepThreads: parallel up to its cap, threads reused, daemons, work not started can be dropped."""

from __future__ import annotations

import threading

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
