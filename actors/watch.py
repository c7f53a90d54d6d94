"""The recorded state of the runs this engine drives, for ``Engine.wait``: no second fold of the log.

A RunActor publishes its run's state after each commit (its fold of what it
appended, which is the stream's fold: it is the stream's only writer) and
says when it stops. A wait on a run driven here waits on that, instead of
following the store (reading, decoding and folding every event of the run a
second time on the waiting thread: 38% of a sequential run's CPU, measured
in docs/PERFORMANCE.md). A run not driven here, or whose actor stops before
the wait is over (the run ended, was fenced, the engine stopped), is
followed in the store as before (``actors.runlog.follow``).

Only a state the actor has committed is published (never one with events
staged and not yet appended), so a wait sees nothing a crash could take back.

The final state of a run that ended here is kept once its actor stops (the
last ``ENDED_KEPT`` of them, their steps' outputs ``ENDED_BYTES`` at most in
all): a wait that comes after the end (launch many runs, then wait for each)
takes it instead of reading and folding the run's whole stream, which was 18%
of the CPU of 50 concurrent W1 chains (docs/PERFORMANCE.md). A run that has
ended never changes again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from actors.errors import RunNotSettled
from flows.state import RunState

# The final states of the runs that ended here last, kept for waits that come after the end: at most
# this many, and this many characters of step outputs in all (a run's outputs may be megabytes).
ENDED_KEPT = 1024
ENDED_BYTES = 32 * 1024 * 1024


class _Waiter:
    __slots__ = ("event", "gone", "state", "statuses")

    def __init__(self, statuses: frozenset[str] | None) -> None:
        self.statuses = statuses  # wake only for these statuses (None: on every publication)
        self.event = threading.Event()
        self.state: RunState | None = None  # the latest state published for it, not yet taken
        # The actor stopped. What it published before is still taken first: a run's last commit and its
        # actor's stop come moments apart, often before the waiter's thread wakes for the commit.
        self.gone = False


class RunWatch:
    """The latest committed state of each run an actor of this engine drives, and who waits on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, tuple[object, RunState]] = {}  # run -> (the publishing actor, its state)
        self._waiters: dict[str, list[_Waiter]] = {}
        self._ended: dict[str, tuple[RunState, int]] = {}  # run -> (its final state, its outputs' size), oldest first
        self._ended_bytes = 0

    def publish(self, run_id: str, owner: object, state: RunState) -> None:
        """A RunActor's state after a commit (or after loading its run)."""
        with self._lock:
            self._states[run_id] = (owner, state)
            if run_id in self._ended:
                self._ended_bytes -= self._ended.pop(run_id)[1]
            for waiter in self._waiters.get(run_id, ()):
                if waiter.statuses is None or state.status in waiter.statuses:
                    waiter.state = state
                    waiter.event.set()

    def position(self, run_id: str) -> int:
        """The position of the run's last commit as its actor here published it; 0 when none drives it
        (nor drove it to its end lately)."""
        with self._lock:
            held = self._states.get(run_id)
            ended = self._ended.get(run_id)
        state = held[1] if held is not None else ended[0] if ended is not None else None
        return state.position if state is not None else 0

    def gone(self, run_id: str, owner: object) -> None:
        """The actor stopped: its waiters go back to the store (a later actor's entry is left alone)."""
        with self._lock:
            held = self._states.get(run_id)
            if held is None or held[0] is not owner:
                return
            del self._states[run_id]
            if held[1].terminal:
                self._keep_ended(run_id, held[1])
            for waiter in self._waiters.pop(run_id, ()):
                waiter.gone = True
                waiter.event.set()

    def _keep_ended(self, run_id: str, state: RunState) -> None:
        """Keep a run's final state, forgetting the oldest kept past the bounds (``_lock`` held)."""
        size = sum(len(st.output) for st in state.steps.values())
        if size > ENDED_BYTES:
            return
        self._ended[run_id] = (state, size)
        self._ended_bytes += size
        while len(self._ended) > ENDED_KEPT or self._ended_bytes > ENDED_BYTES:
            self._ended_bytes -= self._ended.pop(next(iter(self._ended)))[1]

    def wait(self, run_id: str, until: Callable[[RunState], bool], statuses: frozenset[str] | None,
             deadline: float, timeout: float) -> RunState | None:
        """The run's state once ``until`` holds (``statuses``: the statuses ``until`` accepts, when it is
        a set of them); None when no actor here drives the run, or it stopped: follow the store then.
        A run that ended here lately answers with its final state when ``until`` holds for it.

        ``until`` is called on this thread, never under the lock nor on the actor's thread. Raises
        RunNotSettled at ``deadline`` (``time.monotonic()``; ``timeout``: what the wait was given).
        """
        with self._lock:
            held = self._states.get(run_id)
            if held is None:
                kept = self._ended.get(run_id)
                ended = kept[0] if kept is not None else None
            else:
                state = held[1]
                waiter = _Waiter(statuses)
                self._waiters.setdefault(run_id, []).append(waiter)
        if held is None:  # (``until`` is called outside the lock)
            return ended if ended is not None and until(ended) else None
        try:
            while not until(state):
                with self._lock:
                    waiter.event.clear()
                    latest, waiter.state = waiter.state, None
                if latest is not None:  # asked first, even when the actor has stopped since
                    state = latest
                    continue
                if waiter.gone:
                    return None
                left = deadline - time.monotonic()
                if left <= 0 or not waiter.event.wait(left):
                    raise RunNotSettled(run_id, state, timeout)
            return state
        finally:
            with self._lock:
                waiters = self._waiters.get(run_id)
                if waiters is not None and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiters[run_id]
