"""What every actor of one engine shares: the store, the flows, the backend, time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol

from actors.agents import Backend
from actors.bus import FrameBus
from actors.clock import Clock
from actors.config import EngineConfig
from actors.runlog import KnownRuns
from actors.watch import RunWatch
from eventstore import EventStore
from eventstore.leases import Leases
from flows.catalog import FlowRegistry
from flows.events import RunLaunched


class ChildRuns(Protocol):
    """How a subflow step's attempt launches its child run and cancels it (the Engine, from a step thread)."""

    def launch_child(self, event: RunLaunched) -> None:
        """Launch the child unless its run exists already (an attempt after a restart follows it instead)."""

    def cancel(self, run_id: str, *, reason: str = "", by: str = "") -> int:
        """Cancel the child run."""

if TYPE_CHECKING:  # the attempt's module imports the workspace, which imports what imports this
    from actors.task_attempt import TaskEnv


@dataclasses.dataclass(frozen=True)
class EngineContext:
    """Handed to each actor at start; nothing in it changes while the engine runs."""

    store: EventStore
    registry: FlowRegistry
    backend: Backend
    bus: FrameBus
    clock: Clock
    config: EngineConfig
    leases: Leases
    steps: Executor  # the threads StepActors run on
    tasks: TaskEnv | None = None  # task runs' settings (DESIGN §12); None: this engine runs no task
    # (position, {run: launch position}, {run: ParkedRun}): the runs not ended as of ``position``, and
    # those parked at an approval, from the read tables (``actors.runlog.KnownRuns``); None (or no
    # function) and recovery reads the whole log (``Engine(open_runs=...)``).
    open_runs: Callable[[], KnownRuns | None] | None = None
    children: ChildRuns | None = None  # launches subflow steps' child runs (None: this engine has none)
    watch: RunWatch = dataclasses.field(default_factory=RunWatch)  # the runs' states as their actors committed them
    # the threads that handle RunActors' messages, kept between runs (None: a new thread for each drain)
    actor_threads: Executor | None = None
