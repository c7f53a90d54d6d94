"""The threads step attempts run on: daemon threads, started on demand, reused.

Why not ``concurrent.futures.ThreadPoolExecutor``: its workers are joined
when the interpreter exits. A step's function cannot be interrupted (a code
step sleeping past its timeout keeps its thread until it returns), so with
that pool a ``baton launch`` whose step had timed out, or a ``baton serve``
told to stop, waited for the function instead of exiting. A daemon thread
still running at exit is simply dropped: its attempt was already recorded
as failed (timeout) or cancelled, or is recovered by the next start.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

log = logging.getLogger(__name__)

_Work = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class StepThreads(Executor):
    """An executor of at most ``max_threads`` daemon threads, started as work arrives.

    ``keep_idle``: at most that many threads wait for work; one more, its work
    done and no queued work left for it, ends (None: every thread started is kept).
    """

    def __init__(self, max_threads: int, name: str = "baton-step", *, keep_idle: int | None = None) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}")
        self._max = max_threads
        self._keep = max_threads if keep_idle is None else keep_idle
        self._name = name
        self._numbers = itertools.count(1)
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        # Under _lock: threads waiting for work (or about to), and work queued that no thread took yet.
        self._idle = 0
        self._queued = 0
        self._in_then = 0  # of the idle: threads inside a ``then`` (counted idle, not waiting for work)
        self._blocked = 0  # threads inside ``blocking``, or given up inside ``uncounted_once``: not counted
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._shut = False
        self._local = threading.local()  # .slot: while a thread's ``then`` runs, the work it keeps (run_then)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a thread; its Future. RuntimeError after shutdown."""
        future: Future[Any] = Future()
        self._put((future, fn, args, kwargs))
        return future

    def run_then(self, work: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run ``work()`` on a thread, then ``then(its result)`` as that thread's last act before it waits
        for more work (no Future). RuntimeError after shutdown.

        A step's ``then`` tells its RunActor the result, which may wake another thread: the
        thread's own bookkeeping (being counted idle again) is done before, so that one
        does not wake only to wait for the GIL this thread still holds.
        What ``work`` or ``then`` raises is logged (``then`` is not called after ``work`` raised).

        Called from inside a ``then`` of this pool (a step's result handled on its thread, which
        started the run's next attempt), the first such work is kept for that thread to run next,
        as Tokio's LIFO slot: it wakes no other thread, and the thread was going to wait anyway.
        """
        slot = getattr(self._local, "slot", None)
        if slot is not None and not slot:
            with self._lock:
                if not self._shut:
                    self._idle -= 1  # this thread, counted idle for its last act, has work again
                    slot.append((None, work, (then,), {}))
                    return
        self._put((None, work, (then,), {}))

    def run_then_if_idle(self, work: Callable[[], Any], then: Callable[[Any], None]) -> bool:
        """``run_then``, when a thread of this pool waits for work now (one not already promised to work
        queued before; a thread inside a ``then``, counted idle, is not waiting: its ``then`` may start a
        step that blocks, such as a subflow's waiting for its child, whose actor would then wait behind
        it); else False, and nothing is queued.

        An actor's mailbox drained this way (``actors.mailbox``) starts its attempt in ``then``: the
        attempt is kept for this thread (``run_then``), instead of waking another after the drain.
        """
        return self._put((None, work, (then,), {}), only_to_a_waiting_thread=True)

    def keeps_work(self) -> bool:
        """Whether this thread, inside a ``then``, keeps work to run next (``run_then``)."""
        return bool(getattr(self._local, "slot", None))

    def _put(self, item: _Work, *, only_to_a_waiting_thread: bool = False) -> bool:
        """Queue ``item``, starting a thread when none waits for it; with ``only_to_a_waiting_thread``,
        only when one waits (else False, nothing queued). RuntimeError after shutdown."""
        with self._lock:
            # A thread inside a ``then`` is counted idle but does not wait: what it starts there may block,
            # as a subflow step waiting for the child run whose attempt this may be.
            waiting = self._idle - self._in_then
            if only_to_a_waiting_thread and (self._shut or waiting <= self._queued):
                return False
            if self._shut:
                raise RuntimeError("cannot start a step after the engine stopped")
            self._work.put(item)
            self._queued += 1
            if self._queued > waiting and len(self._threads) - self._blocked < self._max:
                self._start_thread()
        return True

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """While this pool's thread calling it waits on something outside the pool (a subflow step on its
        child run), that thread does not count toward ``max_threads``, and work already queued gets a
        thread at once (as Java's ``ForkJoinPool.managedBlock`` or Tokio's ``block_in_place``).

        Without it, ``max_threads`` subflow steps waiting for their children filled the pool, and the
        children's own steps, queued behind them, never ran: every one of those runs waited forever.
        Called from a thread of another pool, it changes nothing.
        """
        if threading.current_thread() not in self._threads:
            yield
            return
        with self._lock:
            self._uncount()
        try:
            yield
        finally:
            with self._lock:
                self._blocked -= 1

    def uncounted_once(self, on_cancel: Callable[[Callable[[], None]], Callable[[], None]]) -> _UncountedOnce:
        """A context: what this pool's thread runs inside it stops counting toward ``max_threads`` once
        ``on_cancel`` fires (a ``CancelToken.on_cancel``: its callback runs when the token is cancelled; it
        returns what unregisters it), until it returns.

        For a code step's function, which cannot be interrupted: once its attempt timed out or was
        cancelled, it is recorded as ended, and the work queued behind it gets a thread even if the
        function never returns. Without it, ``max_threads`` functions hung past their timeouts (a call
        to a server that went away, with no timeout of its own) stopped every step of every run until
        the process restarted. Called from a thread of another pool, it changes nothing.
        """
        return _UncountedOnce(self, on_cancel)

    def _uncount(self) -> None:
        """One more thread does not count toward ``max_threads``; start one for queued work that no thread
        waits for, when that makes room. ``_lock`` held."""
        self._blocked += 1
        if not self._shut and self._queued > self._idle - self._in_then and len(self._threads) - self._blocked < self._max:
            self._start_thread()

    def prestart(self) -> None:
        """Start one thread now, idle, if none is: the first attempt then starts no thread.

        Starting a thread waits for it to run (a hand-off and back): in a fresh
        process, an approval's next step paid 0.3-1.3 ms for it on its way to
        the run's end (docs/PERFORMANCE.md).
        """
        with self._lock:
            if not self._shut and not self._threads:
                self._start_thread()  # it waits for work: the next submit hands it over

    def _then(self, work: Callable[[], Any], then: Callable[[Any], None]) -> tuple[bool, _Work | None]:
        """Run ``work``, count this thread idle, then ``then(result)``. Returns whether the thread goes on
        (False: it ends, ``_idle_again``) and the work ``then`` kept for it to run next (``run_then``)."""
        try:
            result, done = work(), True
        except BaseException:  # as an unread Future would hold it; the thread goes on serving
            log.exception("a step thread's work raised")
            result, done = None, False
        going_on = self._idle_again(in_then=done)
        kept: list[_Work] = []
        if done:
            self._local.slot = kept if going_on else None  # a thread about to end keeps nothing
            try:
                then(result)
            except BaseException:  # a thread counted idle must go on serving
                log.exception("a step thread's last act failed")
            finally:
                self._local.slot = None
                if going_on:
                    with self._lock:
                        self._in_then -= 1
        return going_on, kept[0] if kept else None

    def _idle_again(self, in_then: bool = False) -> bool:
        """Count this thread idle again (``in_then``: about to run a ``then``); False when it ends instead
        (shut down, or enough are idle for the work queued)."""
        with self._lock:
            if self._shut or (self._idle >= self._keep and self._queued <= self._idle):
                return False
            self._idle += 1
            self._in_then += in_then
            return True

    def _took(self) -> None:
        with self._lock:
            self._idle -= 1
            self._queued -= 1

    def _start_thread(self) -> None:
        """Start a thread, counted idle (it waits for work first); ``_lock`` held."""
        thread = threading.Thread(target=self._serve, name=f"{self._name}-{next(self._numbers)}", daemon=True)
        self._threads.add(thread)
        self._idle += 1
        thread.start()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Start nothing more; with ``cancel_futures``, drop work not started yet.

        ``wait`` joins threads that are between tasks or finishing one; a thread
        still inside a step's function is not waited for (it is a daemon).
        """
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item[0] is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _serve(self) -> None:
        try:
            kept: _Work | None = None
            while True:
                item: _Work | None
                if kept is not None:
                    item, kept = kept, None
                else:
                    item = self._work.get()
                    if item is None:
                        return
                    self._took()
                future, fn, args, kwargs = item
                del item
                if future is None:  # run_then: counted idle before the last act
                    going_on, kept = self._then(fn, args[0])
                    if not going_on:
                        return
                    del fn, args, kwargs
                    continue
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # handed to whoever holds the Future, as the stdlib pool does
                        future.set_exception(exc)
                del future, fn, args, kwargs  # drop references to finished work before waiting for more
                if not self._idle_again():
                    return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())


class _UncountedOnce:
    """``StepThreads.uncounted_once``'s context (a class rather than a generator: it wraps every code
    step). Giving up and returning are each taken under the pool's lock, so a cancel racing the
    function's return cannot leave the pool's count off."""

    __slots__ = ("_pool", "_on_cancel", "_unregister", "_uncounted", "_returned")

    def __init__(self, pool: StepThreads, on_cancel: Callable[[Callable[[], None]], Callable[[], None]]) -> None:
        self._pool = pool
        self._on_cancel = on_cancel
        self._unregister: Callable[[], None] | None = None
        self._uncounted = self._returned = False

    def __enter__(self) -> None:
        if threading.current_thread() in self._pool._threads:
            self._unregister = self._on_cancel(self._give_up)

    def _give_up(self) -> None:
        pool = self._pool
        with pool._lock:
            if not self._uncounted and not self._returned:
                self._uncounted = True
                pool._uncount()

    def __exit__(self, *exc: object) -> None:
        if self._unregister is None:
            return
        self._unregister()
        pool = self._pool
        with pool._lock:
            self._returned = True
            if self._uncounted:
                pool._blocked -= 1
