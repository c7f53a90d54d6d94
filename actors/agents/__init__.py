"""Agent backends: what a flow step calls to get text from a model.

Three backends share one contract (:class:`Backend`): ``openai`` streams from
any OpenAI-compatible server, ``cli`` runs a command such as
``qwen --approval-mode plan -p {prompt}``, and ``offline`` answers with
labelled deterministic text. :func:`make_backend` builds one from settings;
baton never falls back from one backend to another.
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
from actors.agents.cli import CliBackend
from actors.agents.offline import OfflineBackend
from actors.agents.openai_compat import OpenAIBackend
from actors.agents.personas import UnknownPersona, persona_names, persona_text
from actors.config import BACKENDS, DEFAULT_COMMAND, DEFAULT_TASK_COMMAND


def make_backend(
    name: str,
    *,
    openai_base_url: str = "http://localhost:11434/v1",
    openai_api_key: str = "",
    model: str = "",
    cli_command: str = DEFAULT_COMMAND,
    offline_delay_s: float = 0.0,
    openai_read_timeout_s: float = 120.0,
) -> Backend:
    """Build the backend called ``name`` from settings.

    Raises ``ValueError`` for an unknown name and :class:`BackendConfigError`
    (also a ``ValueError``) for a configuration the backend refuses, such as a
    qwen command without ``--approval-mode plan``.
    """
    if name == "offline":
        return OfflineBackend(delay_s=offline_delay_s)
    if name == "openai":
        return OpenAIBackend(
            openai_base_url, openai_api_key, model, read_timeout_s=openai_read_timeout_s
        )
    if name == "cli":
        return CliBackend(cli_command, model)
    raise ValueError(
        f"unknown agent backend {name!r} (BATON_AGENT): known backends are "
        f"{', '.join(BACKENDS)}"
    )


__all__ = [
    "BACKENDS",
    "DEFAULT_COMMAND",
    "DEFAULT_TASK_COMMAND",
    "AgentError",
    "AgentRequest",
    "AgentResult",
    "Backend",
    "BackendConfigError",
    "CancelToken",
    "Cancelled",
    "CliBackend",
    "DeltaCallback",
    "OfflineBackend",
    "OpenAIBackend",
    "UnknownPersona",
    "make_backend",
    "persona_names",
    "persona_text",
]
