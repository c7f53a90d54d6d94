"""Agent backends: what a flow step calls to get text from a model.

This package holds the contract every backend honours and the persona
system prompts; the backends themselves follow.
"""

from __future__ import annotations

from actors.agents.base import (
    AgentError,
    AgentRequest,
    AgentResult,
    Backend,
    BackendConfigError,
    Cancelled,
    CancelToken,
    DeltaCallback,
)
from actors.agents.personas import UnknownPersona, persona_names, persona_text

__all__ = [
    "AgentError",
    "AgentRequest",
    "AgentResult",
    "Backend",
    "BackendConfigError",
    "CancelToken",
    "Cancelled",
    "DeltaCallback",
    "UnknownPersona",
    "persona_names",
    "persona_text",
]
