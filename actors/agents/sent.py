"""What an agent step sends, decided once and recorded in its ``StepStarted`` (DESIGN §11).

``decide`` (pure) starts a step with its resolved prompt; this shell fills in
the rest of what the backend will be sent, before the event is appended:
the persona's system prompt (read from its file), the sampling settings
(the step's temperature, else the persona's, :data:`flows.personas.TEMPERATURES`),
and for a step that reads the run's workspace on the ``openai`` backend the
tools offered, their schema's sha256 and the loop's limits. The executor then
sends exactly what was recorded, so the log says what the model got.
"""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from actors.agents.personas import persona_text
from actors.agents.toolloop import LoopLimits
from actors.workspace.tools import TOOL_SCHEMA_HASH, ToolName
from flows.events import StepStarted
from flows.kinds import StepKind
from flows.personas import TEMPERATURES
from flows.state import RunState

TOOL_BACKENDS = frozenset({"openai"})
"""Backends that run the tool loop; the others get the prompt alone (``cli`` runs in the root)."""

_DEFAULTS = LoopLimits()


def uses_tools(state: RunState, event: StepStarted) -> bool:
    """Whether this attempt runs the tool loop: a tools step, a run with a workspace, a backend that can."""
    launched = state.launched
    if event.kind != StepKind.AGENT or launched is None or launched.workspace is None:
        return False
    return state.spec(event.step_id).tools and event.backend in TOOL_BACKENDS


def what_is_sent(state: RunState, event: StepStarted) -> StepStarted:
    """``event`` with the system prompt, sampling settings and tools it will be sent with.

    A persona whose text cannot be read leaves ``system`` empty: the
    executor refuses to call the model without it (fail closed).
    """
    if event.kind != StepKind.AGENT or event.system:
        return event
    spec = state.spec(event.step_id)
    try:
        system = persona_text(event.persona)
    except (KeyError, OSError, ValueError):  # the executor fails the attempt, naming the persona
        system = ""
    sampling: dict[str, Any] = {}
    temperature = spec.temperature if spec.temperature is not None else TEMPERATURES.get(event.persona)
    if temperature is not None:
        sampling["temperature"] = float(temperature)
    changes: dict[str, Any] = {"system": system, "sampling": sampling}
    if uses_tools(state, event):
        changes.update(tools=[t.value for t in ToolName], tool_schema_hash=TOOL_SCHEMA_HASH,
                       limits={"max_turns": spec.max_turns or _DEFAULTS.max_turns,
                               "max_tool_calls": spec.max_tool_calls or _DEFAULTS.max_tool_calls})
    return replace(event, **changes)
