"""What a code step's function receives as ``ctx`` (DESIGN §9), built from the run's state.

A value, not a view: it is taken when the attempt starts, from the state the
StepStarted was decided on, so the function sees exactly what the log says
the step could see. That state never changes (the fold makes a new one for
each event), so :meth:`StepContext.of` keeps it and makes ``input``,
``outputs``, ``fields`` and ``statuses`` from it when the function first reads
them: the same dicts, without three passes over every step for each step
started whose function reads none of them.

``input`` and ``fields`` are the function's own (:func:`detached`): a function
that edits them in place (``ctx.input["question"] = ...``) changes neither the
run's state nor what a later step, condition or prompt sees, which is what a
restart, rebuilding the state from the log, would give them anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from flows.state import RunState
from flows.status import StepStatus

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def detached(value: Any) -> Any:
    """A copy of ``value`` (a run's input, a step's fields, a map's item) that user code may change in
    place: what the log holds, decoded again. Every such value came from, or went into, an event, so
    it is JSON; a copy costs a few µs for a question and its options, and is made only when read."""
    return _decode(_encode(value))


def _input(state: RunState) -> dict[str, Any]:
    assert state.launched is not None, "a step starts only in a launched run"
    result: dict[str, Any] = detached(state.launched.input)
    return result


def _fields(state: RunState) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = detached(state.fields())
    return result


def _statuses(state: RunState) -> dict[str, StepStatus | str]:
    return {sid: st.status for sid, st in state.steps.items()}


_TAKEN: dict[str, Callable[[RunState], Any]] = {"input": _input, "outputs": RunState.outputs, "fields": _fields,
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
    def of(cls, state: RunState, step_id: str, attempt: int, input: dict[str, Any] | None = None) -> StepContext:
        """The context of ``attempt`` of ``step_id``, from the state it was started on.

        ``input``, ``outputs``, ``fields`` and ``statuses`` are made from ``state`` when first
        read (the run's input and ``RunState.fields()`` :func:`detached`, ``RunState.outputs()``,
        every step's status): plain dicts, as the constructor's would be. A map's item passes its
        own ``input`` (the function's to keep: the caller detaches it).
        """
        launched = state.launched
        assert launched is not None, "a step starts only in a launched run"
        ctx = object.__new__(cls)
        ctx.__dict__.update(run_id=state.run_id, step_id=step_id, attempt=attempt, band=launched.band,
                            _state=state)
        if input is not None:
            ctx.__dict__["input"] = input
        return ctx

    if not TYPE_CHECKING:  # for mypy every field is set: only a context made by `of` comes here
        def __getattr__(self, name: str) -> Any:
            """A field ``of`` left to its first read, made from the state (once: kept in ``__dict__``)."""
            taken = _TAKEN.get(name)
            state = self.__dict__.get(_STATE)
            if taken is None or state is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return self.__dict__.setdefault(name, taken(state))
