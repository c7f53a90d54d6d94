"""Errors the engine raises besides the pure core's (flows.decide, flows.launch)."""

from __future__ import annotations


class RunOwnedElsewhere(RuntimeError):
    """Another live process owns the run (its lease); send the command there."""

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(f"run {run_id} is being driven by another process ({owner}); send the command there")
        self.run_id = run_id
        self.owner = owner


class RunBusy(RuntimeError):
    """The run's actor is being stopped or handed over at this moment; retry shortly."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is being handed over at this moment; try again in a second")
        self.run_id = run_id


class LaunchInProgress(RuntimeError):
    """A launch of this run id is already under way in this process (a repeated Idempotency-Key)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is being launched right now")
        self.run_id = run_id


class NodeInUse(RuntimeError):
    """Another live process already runs under this node name (BATON_NODE)."""

    def __init__(self, node: str, owner: str) -> None:
        super().__init__(f"node name {node!r} is in use by another live process ({owner}); "
                         f"give each process its own BATON_NODE")
        self.node = node
        self.owner = owner


class EngineUnavailable(RuntimeError):
    """The engine's orchestrator is not running (it failed and is being restarted, or the engine stopped)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the engine is not available: {detail}; try again in a few seconds")
        self.detail = detail
