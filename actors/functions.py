"""The functions of code steps, found the way a run pinned them (``module:qualname``), among registered flows.

One home for the rule, shared by the RunActor (which calls the function) and
the orchestrator (which must not take over a run whose code steps this
process cannot call: it would fail them with "No module named ...").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.catalog import FlowRegistry
from flows.kinds import kind_rules
from flows.model import function_ref
from flows.state import RunState


def resolve_function(ref: str, registry: FlowRegistry, flow: str,
                     step_id: str) -> tuple[Callable[..., Any] | None, str]:
    """The code step's function the run pinned, or None and why it cannot be had (:func:`find_function`),
    kept by the registry until a flow is registered: a run's steps ask again at each attempt."""
    found = registry.resolved  # the dict of the registry as it is now: a registration starts another
    key = (flow, step_id, ref)
    got: tuple[Callable[..., Any] | None, str] | None = found.get(key)
    if got is None:
        got = found[key] = find_function(ref, registry, flow, step_id)
    return got


def find_function(ref: str, registry: FlowRegistry, flow: str,
                  step_id: str) -> tuple[Callable[..., Any] | None, str]:
    """The code step's function the run pinned, or None and why it cannot be had.

    Only functions of the flows registered at start are candidates (the
    built-in catalogue and BATON_FLOWS / --flows): the pinned ``module:qualname``
    is looked up among their code steps, never imported. The reference comes
    from the log, and whoever can write the log must not be able to make baton
    import a module and call a function of their choosing. The run's own flow
    is looked at first; a function it no longer has may still be found in
    another registered flow under the same reference.
    """
    if flow in registry:
        fn = registry.get(flow).function(step_id)
        if fn is not None and function_ref(fn) == ref:
            return fn, ""
    for candidate in registry:
        for step in candidate.steps:
            fn = getattr(step, "fn", None)
            if callable(fn) and function_ref(fn) == ref:
                return fn, ""
    return None, (f"{ref} is not a code step of any flow registered at start (the built-in catalogue and "
                  f"BATON_FLOWS / --flows); baton calls only those, never a function named by the log alone")


def missing_module(state: RunState, registry: FlowRegistry) -> str:
    """The module of a code step still to run that this process cannot call ("" when none).

    Only steps that have not ended count: a run whose code steps are all
    behind it can be driven anywhere. A run of a flow registered here is
    driven here whatever its snapshot names: a code step whose function is
    not one of the registered flows' fails, saying so (``resolve_function``);
    a run of a flow this process does not have is left to one that does.
    """
    if state.launched is None or state.terminal or state.snapshot.name in registry:
        return ""
    for spec in state.snapshot.steps:
        if not kind_rules(spec.kind).runs_function or not spec.fn or state.steps[spec.id].terminal:
            continue
        fn, _ = resolve_function(spec.fn, registry, state.snapshot.name, spec.id)
        if fn is None:
            return spec.fn.partition(":")[0]
    return ""
