"""Errors the engine raises besides the pure core's (flows.decide, flows.launch)."""

from __future__ import annotations


class RunOwnedElsewhere(RuntimeError):
    """Another live process owns the run (its lease); send the command there."""

    def __init__(self, run_id: str, owner: str) -> None:
        super().__init__(f"run {run_id} is being driven by another process ({owner}); send the command there")
        self.run_id = run_id
        self.owner = owner
