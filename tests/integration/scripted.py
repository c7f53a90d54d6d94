"""A backend the test scripts: each step answers what the test says, when the test says.

Not a mock of anything: a real Backend implementation whose pace the test
controls, so scheduling and anomaly tests need no sleeps.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

from actors.agents import AgentRequest, AgentResult, Cancelled, CancelToken


class ScriptedBackend:
    """Steps listed in ``hold`` block until released; answers come from ``answers``."""

    name = "scripted"
    default_model = "scripted-1"

    def __init__(self, hold: set[str] | None = None) -> None:
        self.hold = set(hold or ())
        self._gates: dict[tuple[str, str], threading.Event] = defaultdict(threading.Event)
        self._answers: dict[str, deque[str]] = defaultdict(deque)
        self.calls: list[AgentRequest] = []
        self._cond = threading.Condition()

    def answer(self, step_id: str, *texts: str) -> None:
        """Successive answers of ``step_id`` (then the default answer)."""
        self._answers[step_id].extend(texts)

    def release(self, run_id: str, step_id: str) -> None:
        """Let a held step of a run answer."""
        with self._cond:
            gate = self._gates[(run_id, step_id)]
        gate.set()

    def running(self, run_id: str | None = None) -> list[tuple[str, str]]:
        """(run, step) of calls made so far."""
        with self._cond:
            return [(c.run_id, c.step_id) for c in self.calls if run_id is None or c.run_id == run_id]

    def wait_calls(self, count: int, run_id: str | None = None, timeout: float = 10.0) -> list[tuple[str, str]]:
        """Block until at least ``count`` calls (of ``run_id``) were made."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.running_unlocked(run_id)) >= count, timeout)
            calls = self.running_unlocked(run_id)
        assert ok, f"expected {count} calls, saw {calls}"
        return calls

    def running_unlocked(self, run_id: str | None) -> list[tuple[str, str]]:
        return [(c.run_id, c.step_id) for c in self.calls if run_id is None or c.run_id == run_id]

    def run(self, request: AgentRequest, on_delta, cancel: CancelToken) -> AgentResult:
        with self._cond:
            self.calls.append(request)
            gate = self._gates[(request.run_id, request.step_id)]
            self._cond.notify_all()
            queue = self._answers[request.step_id]
            text = queue.popleft() if queue else f"E1 (prompt:1, direct): {request.step_id} looked."
        if request.step_id in self.hold:
            unregister = cancel.on_cancel(gate.set)
            gate.wait(30)
            unregister()
            gate.clear()
        if cancel.cancelled:
            raise Cancelled("cancelled")
        on_delta(text)
        return AgentResult(text, {}, self.default_model)

    def close(self) -> None:
        pass
