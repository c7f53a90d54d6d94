"""The tool loop of an agent step with a workspace (DESIGN §11).

The model answers with tool calls; baton runs them, sends the results back,
and asks again, until the model answers in text or a limit is hit:

- ``max_turns`` (default 20) model turns that may use tools and
  ``max_tool_calls`` (default 50) executed calls, per step. When a limit is
  reached the model is told to answer now (a user message, and
  ``tool_choice: "none"``) and gets one closing turn; if it still calls
  tools, the step fails with :class:`ToolLimitExceeded` naming the limit.
  Calls of one turn beyond ``max_tool_calls`` are answered ``not_run``.
- Parallel calls of one turn run in the order the model gave them, and every
  one is answered (the API requires an answer per call id).
- Every call and every result goes to the :class:`LoopObserver` *before* the
  next model turn: the engine appends ``ToolCalled`` / ``ToolResult`` there,
  so a crash never loses a call the model already saw answered.
- Messages from a person (§12 ``message``) wait in a queue the caller owns
  and are delivered as user messages before the next turn.

The loop knows nothing of HTTP: one model turn is a :data:`TurnFn`. The
``openai`` backend provides the real one (``actors.agents.chat_turn`` is the
reference implementation of the seam); tests and benchmarks may pass others.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from actors.agents.base import (
    AgentError,
    AgentRequest,
    AgentResult,
    Cancelled,
    CancelToken,
    DeltaCallback,
)
from actors.agents.toolcalls import ModelTurn, ToolCall
from actors.workspace.results import Outcome, ToolResult, failure

CLOSING_MESSAGE = (
    "Tool limit reached ({limit} = {value}). Do not call any more tools: "
    "answer now, in text, with what you have found."
)


class Limit(str, Enum):
    """The per-step limits of the tool loop."""

    MAX_TURNS = "max_turns"
    MAX_TOOL_CALLS = "max_tool_calls"


@dataclass(frozen=True)
class LoopLimits:
    """How far one step's tool loop may go."""

    max_turns: int = 20
    max_tool_calls: int = 50

    def __post_init__(self) -> None:
        """Refuse limits that would end the loop before it starts."""
        for limit in Limit:
            value = getattr(self, limit.value)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{limit.value} must be a whole number >= 1, got {value!r}")

    def value(self, limit: Limit) -> int:
        """The value of ``limit``."""
        return int(getattr(self, limit.value))


@dataclass(frozen=True)
class Sampling:
    """Sampling settings sent with every turn (and recorded in ``StepStarted``); None = server default."""

    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def body(self) -> dict[str, Any]:
        """The request-body fields of the settings that are set."""
        return {k: v for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens),
                                  ("seed", self.seed)) if v is not None}


@dataclass(frozen=True)
class TurnRequest:
    """Everything one model turn sends."""

    turn: int
    """1-based; the closing turn is ``max_turns + 1`` at most."""
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str = "auto"
    """``"none"`` on the closing turn: the model must answer in text."""
    sampling: Sampling = Sampling()
    call_id_prefix: str = "call"
    """For calls the server sends without an id: unique within the step."""


TurnFn = Callable[[TurnRequest, DeltaCallback, CancelToken], ModelTurn]
"""One streaming model turn: send ``request``, stream text to the callback, return the turn.

Raises :class:`~actors.agents.base.Cancelled` when the token fires and
:class:`~actors.agents.base.AgentError` for every other failure.
"""


class ToolRunner(Protocol):
    """What runs a call (a :class:`~actors.workspace.tools.Toolbox`)."""

    schemas: list[dict[str, Any]]

    def call(self, name: str, arguments: str) -> ToolResult:
        """Validate and run one call; problems come back as results."""
        ...


@dataclass(frozen=True)
class CallRecord:
    """A call as the loop saw it (the ``ToolCalled`` event's content)."""

    turn: int
    seq: int
    """1-based among the step's calls, not-run ones included."""
    call_id: str
    tool: str
    arguments: str


@dataclass(frozen=True)
class TurnRecord:
    """One model turn's facts (usage per turn, §11)."""

    turn: int
    usage: dict[str, Any]
    finish_reason: str
    tool_calls: int
    model: str


@dataclass(frozen=True)
class PersonMessage:
    """A message a person sent to the running step (§12)."""

    text: str
    by: str = ""


class LoopObserver:
    """Told of everything the loop does, synchronously, in order; subclass what you need.

    An exception raised here (say, the store refused an append) stops the
    loop and fails the step: a call that could not be recorded must not be
    answered.
    """

    def tool_called(self, call: CallRecord) -> None:
        """A call is about to run (or to be answered ``not_run``)."""

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        """The call's result, before anything is sent back to the model."""

    def turn_finished(self, turn: TurnRecord) -> None:
        """A model turn ended (its usage)."""

    def message_delivered(self, message: PersonMessage, turn: int) -> None:
        """A person's message goes to the model with turn ``turn``."""

    def before_turn(self, turn: int) -> None:
        """Turn ``turn`` is about to be requested: what was reported must be durable when this returns.

        The flush point for an observer that batches (one append per turn
        for all of its calls and results, instead of one per call).
        """


class ToolLimitExceeded(AgentError):
    """The model kept calling tools after it was told a limit was reached."""

    def __init__(self, limit: Limit, value: int, tools: Sequence[str]) -> None:
        """Name the limit, its value and what the model still tried to call."""
        self.limit = limit
        self.value = value
        self.tools = list(tools)
        super().__init__(
            f"the model kept calling tools ({', '.join(tools)}) after the limit {limit.value}={value} "
            f"was reached and it was told to answer; raise {limit.value} for this step or use a model "
            "that follows tool_choice"
        )


@dataclass
class LoopResult:
    """How the loop ended: the final text and what it took."""

    output: str
    model: str = ""
    turns: list[TurnRecord] = field(default_factory=list)
    tool_calls: int = 0
    """Calls executed (not_run ones excluded)."""
    errors: int = 0
    malformed: int = 0
    limit_reached: Limit | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    """The whole conversation as sent, final answer included."""

    @property
    def usage(self) -> dict[str, int]:
        """Token counts summed over the turns (the keys the server reported)."""
        total: dict[str, int] = {}
        for turn in self.turns:
            for key, value in turn.usage.items():
                if isinstance(value, int):
                    total[key] = total.get(key, 0) + value
        return total


def run_tool_loop(
    *,
    system: str,
    prompt: str,
    model: str,
    tools: ToolRunner,
    turn: TurnFn,
    on_delta: DeltaCallback,
    cancel: CancelToken,
    limits: LoopLimits = LoopLimits(),
    sampling: Sampling = Sampling(),
    observer: LoopObserver | None = None,
    inbox: queue.SimpleQueue[PersonMessage] | None = None,
    call_id_prefix: str = "call",
) -> LoopResult:
    """Run turns until the model answers in text; see the module docstring for the rules.

    Raises :class:`Cancelled` when ``cancel`` fires (checked before every
    turn and every call), :class:`ToolLimitExceeded`, and whatever ``turn``
    or ``observer`` raise.
    """
    watch = observer or LoopObserver()
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    result = LoopResult(output="", model=model, messages=messages)
    closing: Limit | None = None
    seq = 0
    number = 0
    while True:
        number += 1
        _deliver(inbox, messages, watch, number)
        if cancel.cancelled:
            raise Cancelled(f"cancelled before model turn {number}")
        watch.before_turn(number)
        # A copy: the request is a value, and the conversation grows after it was sent.
        request = TurnRequest(turn=number, model=model, messages=list(messages), tools=tools.schemas,
                              tool_choice="none" if closing else "auto", sampling=sampling,
                              call_id_prefix=f"{call_id_prefix}-t{number}")
        answer = turn(request, on_delta, cancel)
        record = TurnRecord(turn=number, usage=dict(answer.usage), finish_reason=answer.finish_reason,
                            tool_calls=len(answer.calls), model=answer.model)
        result.turns.append(record)
        result.model = answer.model or result.model
        watch.turn_finished(record)
        if not answer.calls:
            messages.append({"role": "assistant", "content": answer.text})
            result.output = answer.text
            return result
        if closing is not None:
            raise ToolLimitExceeded(closing, limits.value(closing), [c.name for c in answer.calls])
        messages.append(_assistant_message(answer))
        for call in answer.calls:
            if cancel.cancelled:
                raise Cancelled(f"cancelled during the tool calls of turn {number}")
            seq += 1
            made = CallRecord(turn=number, seq=seq, call_id=call.id, tool=call.name, arguments=call.arguments)
            watch.tool_called(made)
            if result.tool_calls >= limits.max_tool_calls:
                outcome = failure(Outcome.NOT_RUN, "not-run", f"not run: the limit {Limit.MAX_TOOL_CALLS.value}="
                                  f"{limits.max_tool_calls} was reached; answer with what you have")
            else:
                outcome = tools.call(call.name, call.arguments)
                result.tool_calls += 1
                result.errors += outcome.outcome is Outcome.ERROR
                result.malformed += outcome.outcome is Outcome.MALFORMED
            watch.tool_result(made, outcome)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.text})
        if result.tool_calls >= limits.max_tool_calls:
            closing = Limit.MAX_TOOL_CALLS
        elif number >= limits.max_turns:
            closing = Limit.MAX_TURNS
        if closing is not None:
            result.limit_reached = closing
            messages.append({"role": "user", "content": CLOSING_MESSAGE.format(
                limit=closing.value, value=limits.value(closing))})


def _deliver(inbox: queue.SimpleQueue[PersonMessage] | None, messages: list[dict[str, Any]],
             watch: LoopObserver, number: int) -> None:
    """Move every waiting person's message into the conversation, in arrival order."""
    if inbox is None:
        return
    while True:
        try:
            message = inbox.get_nowait()
        except queue.Empty:
            return
        watch.message_delivered(message, number)
        who = f" from {message.by}" if message.by else ""
        messages.append({"role": "user", "content": f"Message{who}: {message.text}"})


def _assistant_message(answer: ModelTurn) -> dict[str, Any]:
    """The assistant turn with its calls, as it is sent back to the server."""
    return {"role": "assistant", "content": answer.text,
            "tool_calls": [{"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": _echoable(c)}} for c in answer.calls]}


def _echoable(call: ToolCall) -> str:
    """The arguments to echo back: the model's text when it is JSON, else ``{}``.

    Some servers parse the echoed arguments while applying the chat template
    and answer 400 to text that is not JSON; the model still learns what was
    wrong from the tool's error result, and the log keeps the raw text.
    """
    try:
        json.loads(call.arguments or "{}")
    except ValueError:
        return "{}"
    return call.arguments or "{}"


@runtime_checkable
class ToolBackend(Protocol):
    """A backend that can run the tool loop (the ``openai`` one)."""

    name: str

    def run_tools(self, request: AgentRequest, tools: ToolRunner, on_delta: DeltaCallback, cancel: CancelToken, *,
                  limits: LoopLimits, observer: LoopObserver) -> AgentResult:
        """Run :func:`run_tool_loop` for ``request`` with ``tools``; usage per turn and totals in the result."""
        ...


class TurnTally(LoopObserver):
    """Forwards everything to ``inner`` and keeps each turn's record (the usage of a loop that fails)."""

    def __init__(self, inner: LoopObserver) -> None:
        """Observe for ``inner``."""
        self.inner = inner
        self.turns: list[TurnRecord] = []

    def tool_called(self, call: CallRecord) -> None:
        """Forwarded."""
        self.inner.tool_called(call)

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        """Forwarded."""
        self.inner.tool_result(call, result)

    def turn_finished(self, turn: TurnRecord) -> None:
        """Kept, then forwarded."""
        self.turns.append(turn)
        self.inner.turn_finished(turn)

    def message_delivered(self, message: PersonMessage, turn: int) -> None:
        """Forwarded."""
        self.inner.message_delivered(message, turn)

    def before_turn(self, turn: int) -> None:
        """Forwarded."""
        self.inner.before_turn(turn)


def loop_usage(result: LoopResult) -> dict[str, Any]:
    """What a step records as its usage after a tool loop: totals, then the loop's facts and each turn's usage."""
    return {**result.usage, "turns": [{"turn": t.turn, "tool_calls": t.tool_calls, "finish_reason": t.finish_reason,
                                       **{k: v for k, v in t.usage.items() if isinstance(v, int)}}
                                      for t in result.turns],
            "tool_calls": result.tool_calls, "tool_errors": result.errors, "malformed_calls": result.malformed,
            **({"limit_reached": result.limit_reached.value} if result.limit_reached else {})}
