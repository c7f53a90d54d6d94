"""What a code step's function receives as ``ctx`` (DESIGN §9), built from the run's state.

A value, not a view: it is taken when the attempt starts, from the state the
StepStarted was decided on, so the function sees exactly what the log says
the step could see.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from flows.state import RunState
from flows.status import StepStatus


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a code step's function receives as ``ctx``.

    ``input`` is the run's input (``$input``), ``outputs`` the text of every
    step with an output (``$step.output``: completed steps, and the approver's
    comment of a rejected approval), ``fields`` the frontmatter fields of every
    completed step (``$step.output.field``), ``statuses`` every step's status.
    """

    input: Mapping[str, Any]
    outputs: Mapping[str, str]
    fields: Mapping[str, Mapping[str, Any]]
    run_id: str
    step_id: str
    attempt: int
    band: str = "medium"
    statuses: Mapping[str, StepStatus | str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, state: RunState, step_id: str, attempt: int) -> StepContext:
        """The context of ``attempt`` of ``step_id``, from the state it was started on."""
        launched = state.launched
        assert launched is not None, "a step starts only in a launched run"
        return cls(launched.input, state.outputs(), state.fields(), state.run_id, step_id, attempt,
                   launched.band, {sid: st.status for sid, st in state.steps.items()})
