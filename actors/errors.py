"""The actors' errors: one root, :class:`ActorsError`, under the core's ``flows.errors.BatonError``.

Errors the engine raises besides the pure core's (``flows.errors``) are all
``ActorsError``; the ones callers have caught by a builtin kind keep that base
too (``EngineTimeout`` and ``NodeDidNotAnswer`` are ``TimeoutError``). The
agents' and the workspace's errors are rooted here as well
(``actors.agents.AgentError``, ``actors.workspace.errors.WorkspaceError``).
"""

from __future__ import annotations

from flows.errors import BatonError
from flows.state import RunState


class ActorsError(BatonError):
    """The root of the errors the actors (the engine, its agents and workspaces) raise."""


class EngineTimeout(ActorsError, TimeoutError):
    """The engine did not answer within its ask timeout."""


class RunNotSettled(EngineTimeout):
    """A run followed (``Engine.wait``, ``actors.runlog.follow``) did not get where it was awaited in
    time; ``state`` is the last state seen."""

    def __init__(self, run_id: str, state: RunState, timeout: float) -> None:
        super().__init__(f"run {run_id} is still {state.status} after {timeout:g} s")
        self.run_id = run_id
        self.state = state


class RunOwnedElsewhere(ActorsError, RuntimeError):
    """Another live process owns the run (its lease); send the command there.

    ``node`` names that process's node when it is one a command can be handed
    to (its inbox, ``actors.inbox``); "" when the owner is only known as
    "another writer" (a lost append).
    """

    def __init__(self, run_id: str, owner: str, node: str = "") -> None:
        super().__init__(f"run {run_id} is being driven by another process ({owner}); send the command there")
        self.run_id = run_id
        self.owner = owner
        self.node = node


class RunBusy(ActorsError, RuntimeError):
    """The run's actor is being stopped or handed over at this moment; retry shortly."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is being handed over at this moment; try again in a second")
        self.run_id = run_id


class LaunchInProgress(ActorsError, RuntimeError):
    """A launch of this run id is already under way in this process (a repeated Idempotency-Key)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is being launched right now")
        self.run_id = run_id


class NodeInUse(ActorsError, RuntimeError):
    """Another live process already runs under this node name (BATON_NODE)."""

    def __init__(self, node: str, owner: str) -> None:
        super().__init__(f"node name {node!r} is in use by another live process ({owner}); "
                         f"give each process its own BATON_NODE")
        self.node = node
        self.owner = owner


class FlowsModuleMissing(ActorsError, RuntimeError):
    """A run's code steps need a module this process cannot import, and no live process drives the run.

    Taking the run over here would fail those steps with "No module named
    ...", so the command is refused and the run left as it is.
    """

    def __init__(self, run_id: str, module: str) -> None:
        super().__init__(f"run {run_id} needs flows module {module!r}, which this process cannot import; "
                         f"send the command to a process where {module!r} imports")
        self.run_id = run_id
        self.module = module


class NodeDidNotAnswer(ActorsError, TimeoutError):
    """The node driving a run holds its lease but did not answer a command handed to it in time."""

    def __init__(self, run_id: str, node: str, timeout: float) -> None:
        super().__init__(f"run {run_id} is driven by {node}, which did not answer the command within {timeout:g} s "
                         f"(is it overloaded or stuck?); the command may still take effect there")
        self.run_id = run_id
        self.node = node


class EngineUnavailable(ActorsError, RuntimeError):
    """The engine's orchestrator is not running (it failed and is being restarted, or the engine stopped)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the engine is not available: {detail}; try again in a few seconds")
        self.detail = detail


class TaskCommandRefused(ActorsError, ValueError):
    """A person's word on a task that does not apply now (the message says why); nothing was appended."""


class OutputTooLarge(ActorsError, ValueError):
    """A map item's output is over ``max_output_bytes`` (``BATON_MAX_OUTPUT_BYTES``): that item fails,
    naming both sizes."""
