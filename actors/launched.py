"""The answer to a launch, in a module of its own: a ``baton launch`` sent to a server builds one without
importing the engine (docs/PERFORMANCE.md, "CLI start-up")."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Launched:
    """The answer to a launch: the run, the position of its RunLaunched, and
    whether this call created it (False: the idempotency key named an earlier run)."""

    run_id: str
    position: int
    created: bool = True
