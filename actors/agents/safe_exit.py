"""Safe Exit for the tool loop: the agent's ``blocked`` call stops the loop, after it was recorded.

The tool loop stops when its observer raises (DESIGN §11: "a call that
could not be recorded must not be answered"). :class:`SafeExitObserver`
wraps the engine's observer and raises :class:`SafeExit` right **after**
the ``blocked`` call's result was handed on, so the call and its result are
in the log before the loop ends; the step then records ``TaskBlocked``
instead of failing. No change to the loop itself is needed.
"""

from __future__ import annotations

from actors.agents.base import AgentError
from actors.agents.toolloop import CallRecord, LoopObserver, PersonMessage, TurnRecord
from actors.workspace.results import ToolResult
from actors.workspace.task_tools import TaskSignals


class SafeExit(AgentError):
    """The agent took the Safe Exit: the task stops as ``blocked`` with ``reason``."""

    def __init__(self, reason: str) -> None:
        """Keep the agent's reason (shown to the person who answers)."""
        self.reason = reason
        super().__init__(f"the agent stopped: {reason}")


class SafeExitObserver(LoopObserver):
    """Forwards everything to ``inner``; raises :class:`SafeExit` once ``signals.blocked`` is set."""

    def __init__(self, inner: LoopObserver, signals: TaskSignals) -> None:
        """``signals`` is the task toolbox's (:attr:`TaskToolbox.signals`)."""
        self.inner = inner
        self.signals = signals

    def tool_called(self, call: CallRecord) -> None:
        """Forwarded."""
        self.inner.tool_called(call)

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        """Forwarded; then stop the loop if this call was the Safe Exit."""
        self.inner.tool_result(call, result)
        if self.signals.blocked is not None:
            raise SafeExit(self.signals.blocked)

    def turn_finished(self, turn: TurnRecord) -> None:
        """Forwarded."""
        self.inner.turn_finished(turn)

    def message_delivered(self, message: PersonMessage, turn: int) -> None:
        """Forwarded."""
        self.inner.message_delivered(message, turn)

    def before_turn(self, turn: int) -> None:
        """Forwarded."""
        self.inner.before_turn(turn)
