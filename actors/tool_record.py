"""Recording a step's tool calls in its run's log before the model's next turn (DESIGN §11).

The tool loop runs on a step thread, and only the RunActor writes the run's
stream. :class:`ToolRecorder` is the loop's observer: it gathers a turn's
``ToolCalled`` / ``ToolResult`` events and, when the loop is about to ask
the model again (``before_turn``), tells the RunActor to append them
(:class:`~actors.messages.StepEvents`) and waits for the append. So every
call the model sees answered is in the log first, and one append carries a
whole turn's calls (a turn of 5 parallel calls costs one commit, not 10).

If the RunActor refuses (the attempt ended: cancelled, timed out, aborted
by the anomaly watch) or does not answer in time, the loop stops: a call
that could not be recorded is never answered.
"""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pykka

from actors import messages as m
from actors.agents.base import AgentError, Cancelled
from actors.agents.toolloop import CallRecord, LoopObserver
from actors.clock import Clock
from actors.workspace import results
from flows.events import Event, ToolCalled, ToolResult
from flows.text import encodable

RECORD_TIMEOUT_S = 30.0
"""How long a step waits for its RunActor to append a turn's calls before it fails."""


class AttemptEnded(Cancelled):
    """The RunActor no longer runs this attempt; its calls are not recorded and the loop stops."""


class ToolRecorder(LoopObserver):
    """Gathers a step attempt's tool events; appends them through the RunActor at each turn."""

    def __init__(self, step_id: str, attempt: int, clock: Clock, *, timeout_s: float = RECORD_TIMEOUT_S) -> None:
        """Record for attempt ``attempt`` of ``step_id``, stamping events with ``clock``."""
        self.step_id = step_id
        self.attempt = attempt
        self.clock = clock
        self.timeout_s = timeout_s
        self.run_ref: pykka.ActorRef[Any] | None = None
        self.pending: list[Event] = []
        self.appends = 0

    def attach(self, run_ref: pykka.ActorRef[Any]) -> None:
        """The RunActor to send the events to (known once the attempt's StepActor starts)."""
        self.run_ref = run_ref

    def tool_called(self, call: CallRecord) -> None:
        """Keep the call for the next append (its text as the store can encode it: ``flows.text.encodable``)."""
        self.pending.append(ToolCalled(step_id=self.step_id, attempt=self.attempt, call_id=encodable(call.call_id),
                                       tool=encodable(call.tool), arguments=encodable(call.arguments),
                                       turn=call.turn, seq=call.seq, at=self.clock.now()))

    def tool_result(self, call: CallRecord, result: results.ToolResult) -> None:
        """Keep the result for the next append (its text is already encodable: ``results.make_result``)."""
        self.pending.append(ToolResult(step_id=self.step_id, attempt=self.attempt, call_id=encodable(call.call_id),
                                       tool=encodable(call.tool), ok=result.ok, outcome=result.outcome.value,
                                       result=result.text, sha256=result.sha256, bytes=result.bytes,
                                       truncated=result.truncated, error=result.error, at=self.clock.now()))

    def before_turn(self, turn: int) -> None:
        """Make what the model is about to read durable."""
        self.flush()

    def flush(self) -> None:
        """Append what is pending through the RunActor and wait for it; raises when it cannot be recorded."""
        if not self.pending:
            return
        if self.run_ref is None:
            raise AgentError(f"step {self.step_id}: tool calls cannot be recorded (no run to record them in)")
        batch, self.pending = tuple(self.pending), []
        reply: Future[int] = Future()
        try:
            self.run_ref.tell(m.StepEvents(self.step_id, self.attempt, batch, reply))
        except pykka.ActorDeadError:
            raise AttemptEnded(f"step {self.step_id} attempt {self.attempt}: its run stopped") from None
        try:
            reply.result(timeout=self.timeout_s)
        except FutureTimeout:
            raise AgentError(f"step {self.step_id}: the run did not record its tool calls within "
                             f"{self.timeout_s:g} s; the calls were not answered") from None
        self.appends += 1
