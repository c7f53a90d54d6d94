"""baton's pure core: flows, events, state folds and decisions. No I/O, no threads.

The names below (``from flows import Flow, agent, code, approval``) are
imported at their first use (PEP 562), not with the package: importing one
module of the core (``flows.status``, ``flows.state``) then costs that module
and what it imports, not the whole flow model (a ``baton`` command sent to a
server reads statuses and folds runs; docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.context import StepContext
    from flows.kinds import StepKind
    from flows.model import (
        BANDS,
        Flow,
        FlowDefinitionError,
        FlowSnapshot,
        Step,
        StepSpec,
        TriggerRule,
        agent,
        approval,
        code,
        map,
        subflow,
    )

_HOMES = {"StepContext": "flows.context", "StepKind": "flows.kinds"}

__all__ = [
    "BANDS",
    "Flow",
    "FlowDefinitionError",
    "FlowSnapshot",
    "Step",
    "StepContext",
    "StepKind",
    "StepSpec",
    "TriggerRule",
    "agent",
    "approval",
    "code",
    "map",
    "subflow",
]


def __getattr__(name: str) -> Any:
    """A name of the core's API, imported from its module at its first use."""
    if name in __all__:
        value = getattr(importlib.import_module(_HOMES.get(name, "flows.model")), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flows' has no attribute {name!r}")
