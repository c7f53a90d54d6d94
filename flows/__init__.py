"""baton's pure core: flows, events, state folds and decisions. No I/O, no threads."""

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
