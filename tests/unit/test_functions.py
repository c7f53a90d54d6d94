"""``actors.functions.resolve_function``: what it found is kept by the registry until a flow is registered."""

from __future__ import annotations

from typing import Any

from actors.functions import resolve_function
from flows import Flow, code
from flows.catalog import FlowRegistry
from flows.model import function_ref


def first(ctx: Any) -> str:
    return "first"


def second(ctx: Any) -> str:
    return "second"


def test_a_resolution_is_kept_until_a_flow_is_registered() -> None:
    registry = FlowRegistry([Flow("f", [code("a", fn=first)])])
    ref = function_ref(first)
    assert resolve_function(ref, registry, "f", "a") == (first, "")
    assert resolve_function(ref, registry, "f", "a") == (first, "") and len(registry.resolved) == 1
    missing, why = resolve_function(function_ref(second), registry, "f", "a")
    assert missing is None and "is not a code step of any flow registered" in why
    # registered now: found (a stale "not found" kept from before would refuse it)
    registry.register(Flow("g", [code("b", fn=second)]))
    assert registry.resolved == {}
    assert resolve_function(function_ref(second), registry, "f", "a") == (second, "")
    # a flow replaced: its steps' functions are looked up again
    registry.register(Flow("f", [code("a", fn=second)]), replace=True)
    assert resolve_function(ref, registry, "f", "a")[0] is None
