"""What a code step's function receives as ``ctx`` (DESIGN §9), built from the run's state.

A value, not a view: it is taken when the attempt starts, from the state the
StepStarted was decided on, so the function sees exactly what the log says
the step could see. That state never changes (the fold makes a new one for
each event), so :meth:`StepContext.of` keeps it and makes ``outputs``,
``fields`` and ``statuses`` from it when the function first reads them: the
same dicts, without three passes over every step for each step started
whose function reads none of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flows.state import RunState
from flows.status import StepStatus


def _statuses(state: RunState) -> dict[str, StepStatus | str]:
    return {sid: st.status for sid, st in state.steps.items()}


_TAKEN: dict[str, Callable[[RunState], Any]] = {"outputs": RunState.outputs, "fields": RunState.fields,
                                                "statuses": _statuses}
"""The fields :meth:`StepContext.of` makes from its state on first read."""

_STATE = "_state"  # where a context made by `of` keeps its state (in its __dict__: not a field)


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
        """The context of ``attempt`` of ``step_id``, from the state it was started on.

        ``outputs``, ``fields`` and ``statuses`` are made from ``state`` when first read
        (``RunState.outputs()``, ``RunState.fields()``, every step's status): plain dicts, as
        the constructor's would be.
        """
        launched = state.launched
        assert launched is not None, "a step starts only in a launched run"
        ctx = object.__new__(cls)
        ctx.__dict__.update(input=launched.input, run_id=state.run_id, step_id=step_id, attempt=attempt,
                            band=launched.band, _state=state)
        return ctx

    if not TYPE_CHECKING:  # for mypy every field is set: only a context made by `of` comes here
        def __getattr__(self, name: str) -> Any:
            """A field ``of`` left to its first read, made from the state (once: kept in ``__dict__``)."""
            taken = _TAKEN.get(name)
            state = self.__dict__.get(_STATE)
            if taken is None or state is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return self.__dict__.setdefault(name, taken(state))
