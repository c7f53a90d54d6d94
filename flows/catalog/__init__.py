"""The flow registry, and the built-in catalogue (one module per flow).

The registry is plain data: importing user modules (``--flows pkg.mod``)
happens in the outside layer, which then registers every Flow it found.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from flows.errors import BatonError
from flows.model import Flow

BUILTIN_MODULES: tuple[str, ...] = (
    # Analysis
    "investigate",
    "architectural_analysis",
    "gap_analysis",
    "incident_review",
    # Discovery
    "research",
    "parallel_research",
    "project_discovery",
    # Planning
    "implementation_plan",
    # Authoring
    "release_notes",
    # Review
    "code_review",
    "security_review",
    "security_escalation",
    "review_and_approve",
)


class UnknownFlow(BatonError, KeyError):
    """No flow of that name is registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown flow {self.name!r}; known flows: {', '.join(self.known) or '(none)'}"


class FlowRegistry:
    """Flows by name. Registering a second flow under a taken name is refused."""

    def __init__(self, flows: list[Flow] | None = None) -> None:
        self._flows: dict[str, Flow] = {}
        self.resolved: dict[tuple[str, str, str], Any] = {}
        """What was found by (flow, step, function reference) among these flows
        (``actors.functions.resolve_function``): a new dict at every registration, so
        nothing found before one is used after it."""
        for flow in flows or ():
            self.register(flow)

    def register(self, flow: Flow, *, replace: bool = False) -> Flow:
        """Add ``flow``; ValueError if the name is taken (unless ``replace``)."""
        if not replace and flow.name in self._flows and self._flows[flow.name] is not flow:
            raise ValueError(f"a flow named {flow.name!r} is already registered")
        self._flows[flow.name] = flow
        self.resolved = {}
        return flow

    def get(self, name: str) -> Flow:
        """The flow named ``name``; raises UnknownFlow."""
        try:
            return self._flows[name]
        except KeyError:
            raise UnknownFlow(name, sorted(self._flows)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._flows

    def __iter__(self) -> Iterator[Flow]:
        return iter(sorted(self._flows.values(), key=lambda f: (f.category, f.name)))

    def __len__(self) -> int:
        return len(self._flows)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._flows)


def flows_in(module: object) -> list[Flow]:
    """Every Flow defined at the top level of a module object."""
    return [v for v in vars(module).values() if isinstance(v, Flow)]


def builtin() -> FlowRegistry:
    """A registry holding the built-in catalogue."""
    registry = FlowRegistry()
    for name in BUILTIN_MODULES:
        for flow in flows_in(importlib.import_module(f"flows.catalog.{name}")):
            registry.register(flow)
    return registry
