"""The functions of code steps, found the way a run pinned them (``module:qualname``).

One home for the rule, shared by the RunActor (which calls the function) and
the orchestrator (which must not take over a run whose code steps this
process cannot call: it would fail them with "No module named ...").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from flows.catalog import FlowRegistry
from flows.kinds import kind_rules
from flows.model import function_ref
from flows.state import RunState


def resolve_function(ref: str, registry: FlowRegistry, flow: str,
                     step_id: str) -> tuple[Callable[..., Any] | None, str]:
    """The code step's function the run pinned, or None and why it cannot be had.

    The pinned reference comes first, so a run keeps calling the function
    it was launched with. A function that cannot be imported by name (a
    closure, say) is taken from the registered flow only if it is the very
    definition the run pinned.
    """
    module, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if callable(obj):
            return obj, ""
        problem = f"{ref} is not callable"
    except Exception as exc:  # reported to the caller, not swallowed
        problem = f"cannot import {ref}: {type(exc).__name__}: {exc}"
    if flow in registry:
        fn = registry.get(flow).function(step_id)
        if fn is not None and function_ref(fn) == ref:
            return fn, ""
    return None, problem


def missing_module(state: RunState, registry: FlowRegistry) -> str:
    """The module of a code step still to run that this process cannot call ("" when none).

    Only steps that have not ended count: a run whose code steps are all
    behind it can be driven anywhere.
    """
    if state.launched is None or state.terminal:
        return ""
    for spec in state.snapshot.steps:
        if not kind_rules(spec.kind).runs_function or not spec.fn or state.steps[spec.id].terminal:
            continue
        fn, _ = resolve_function(spec.fn, registry, state.snapshot.name, spec.id)
        if fn is None:
            return spec.fn.partition(":")[0]
    return ""
