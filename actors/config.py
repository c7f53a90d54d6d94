"""What the engine is configured with; built once by the outside layer."""

from __future__ import annotations

import dataclasses
import os
import socket

# The agent backends' names and the cli backend's default templates live here, not in actors.agents,
# so that reading the settings (api.settings) does not import the backends and their HTTP client.
BACKENDS: tuple[str, ...] = ("offline", "openai", "cli")
"""The backend names ``actors.agents.make_backend`` knows."""
DEFAULT_COMMAND = "qwen --approval-mode plan -p {prompt}"
"""The cli backend's template of an agent step (a read-only review: plan mode)."""
DEFAULT_TASK_COMMAND = "qwen --approval-mode auto-edit -p {prompt}"
"""A task implementor's template: it edits the worktree (its commands still go through baton's allow-list)."""


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Capacity, timing and identity of one engine (one process).

    ``agent_slots`` is how many model calls may run at once (0 = no limit);
    ``max_active_runs`` how many runs may be in progress (0 = no limit).
    """

    max_active_runs: int = 8
    agent_slots: int = 4
    stall_s: float = 60.0
    max_step_errors: int = 5
    backend: str = "offline"
    model: str = ""
    node: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    ask_timeout_s: float = 30.0
    step_threads: int = 256  # attempts running at once, at most (parallel code steps need threads)
    recover: bool = True  # take over unfinished runs at start (a CLI command drives only its own run)
    lease_ttl_s: float = 30.0  # a process that stops renewing loses its runs after this long
    # A node of a cluster when the store is PostgreSQL and it recovers runs (DESIGN §16, actors.cluster):
    # one queue, max_active_runs and agent_slots counted across the nodes. Off: each node on its own.
    cluster: bool = False
    slot_pool: str = ""  # what agent_slots are counted per across the cluster: the model server ("" = backend)
    max_output_bytes: int = 1024 * 1024  # a step output larger than this fails the step (BATON_MAX_OUTPUT_BYTES)
    # Removed from every error, anomaly and log line before it is recorded (flows.redact); never printed.
    known_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    worktrees: str = ""  # task runs' worktrees go to <worktrees>/<run>/ (BATON_WORKTREES; "" = no task runs)
    # A task's implementor on the cli backend, run in its worktree (BATON_CLI_TASK_COMMAND; "" = the default).
    cli_task_command: str = ""
    task_run_timeout_s: float = 300.0  # the `run` tool and each check of a task (BATON_RUN_TIMEOUT_S)
