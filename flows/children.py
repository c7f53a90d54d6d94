"""Subflow steps: a step that launches a child run of another flow and ends with its outcome (pure).

The child's run id is decided with the StepStarted that launches it:
``<parent>-<step>-<n>``, where n counts the step's real failures plus one. An
attempt lost in a restart does not count as a failure, so the attempt that
follows it finds the same child (already launched) and follows it instead of
launching another; a retry after a real failure launches a new child.

The child's RunLaunched names its parent and the step (``parent_run_id``,
``parent_step``): the link runs both ways, since the parent's StepStarted
names the child.
"""

from __future__ import annotations

from typing import Any

from msgspec.structs import replace

from flows import template
from flows.catalog import FlowRegistry
from flows.errors import BatonError
from flows.events import RunLaunched
from flows.launch import DEFAULT_BAND, LaunchParams, prepare
from flows.state import RunState
from flows.status import RunStatus

MAX_DEPTH = 10
"""Subflows nest at most this deep: a flow whose subflow steps lead back to itself (directly or through
others) is stopped there, as LangGraph's recursion limit stops a graph, instead of launching runs
without end (750 nested runs in 4 s, each holding a thread)."""


class NestedTooDeep(BatonError):
    """A subflow step of a run already ``MAX_DEPTH`` subflows down: its child is not launched."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"subflows nest at most {MAX_DEPTH} deep, and this run is a subflow {depth} levels down "
                         "(does a subflow lead back to its own flow?)")


def child_run_id(run_id: str, step_id: str, failures: int) -> str:
    """The child run a subflow step's next attempt launches (or follows)."""
    return f"{run_id}-{step_id}-{failures + 1}"


def child_launch(state: RunState, step_id: str, child_id: str, registry: FlowRegistry, now: float) -> RunLaunched:
    """The child's RunLaunched: its inputs rendered from the parent's state, the parent's band where the child
    flow has it (else small), model, backend, project and workspace pin. Raises UnknownFlow, LaunchError, UnstorableText,
    NestedTooDeep."""
    launched = state.launched
    assert launched is not None
    spec = state.spec(step_id)
    depth = launched.depth + 1
    if depth > MAX_DEPTH:
        raise NestedTooDeep(launched.depth)
    inputs: dict[str, Any] = {}
    for name, text in spec.inputs.items():
        inputs[name], _ = template.render(text, inputs=launched.input, outputs=state.outputs(), fields=state.fields())
    question = str(inputs.pop("question", "") or launched.input.get("question", ""))
    definition = registry.get(spec.flow)
    band = launched.band if launched.band in definition.bands else DEFAULT_BAND
    params = LaunchParams(spec.flow, question, band=band, model=launched.model, project_id=launched.project_id,
                          inputs=inputs, fast=launched.fast, launched_by=f"run {state.run_id}")
    # The child reads the commit its parent pinned, not whatever the project holds now.
    event = prepare(registry, params, run_id=child_id, now=now, backend=launched.backend,
                    workspace=launched.workspace)
    return replace(event, parent_run_id=state.run_id, parent_step=step_id, depth=depth)


def outcome(child: RunState) -> tuple[str, dict[str, Any], str]:
    """What a subflow step records once its child ended: (output, fields, "") or ("", {}, why it failed)."""
    if child.status == RunStatus.COMPLETED:
        return child.report, {"run_id": child.run_id, "status": str(child.status)}, ""
    why = f": {child.reason}" if child.reason else ""
    return "", {}, f"child run {child.run_id} {child.status}{why}"
