"""A ``baton`` command carried out in this process: ``Local``, the target of ``api.cli.targets`` that opens
the store and starts what the command needs of the runtime (docs/PERFORMANCE.md, "CLI start-up": a command
sent to a server never imports this module).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.launched import Launched
from actors.runlog import follow, live_nodes, read_with_owner, unended_runs
from api.cli.progress import ProgressView
from api.cli.targets import resolve_in, settled
from api.runtime import Runtime
from api.settings import Settings, os_user
from eventstore import SqlStore
from flows.kinds import kind_rules
from flows.launch import LaunchParams
from flows.state import RunState
from flows.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from actors.workspace.projects import ProjectBook
    from api.tokens import Issued, TokenBook
    from flows.projects import Project


def _project_row(project: Project) -> dict[str, Any]:
    return {"project_id": project.project_id, "root": project.root, "registered_by": project.registered_by,
            "registered_at": project.registered_at}


# -- in this process -----------------------------------------------------------------------------


class Local:
    """A command carried out in this process, on the store.

    ``engine`` / ``projector`` say which parts the command needs; they start
    at its first need, after ``check`` (a refusal appends nothing).
    """

    def __init__(self, settings: Settings, *, store: SqlStore | None = None, engine: bool = False,
                 projector: bool = False) -> None:
        # The command's engine goes by its own host:pid, never BATON_NODE: that name is the lease of a
        # long-lived `baton serve`, which a short command sharing it would either be refused or impersonate.
        self.rt = Runtime(settings.replace(node=""), store=store)
        self._engine, self._projector = engine, projector
        self._started = False

    def check(self, verify: Callable[[Runtime], Any]) -> None:
        """Run ``verify(runtime)`` before anything starts."""
        verify(self.rt)

    def start(self) -> Runtime:
        """Start the parts the command needs (once); the runtime."""
        if not self._started:
            self._started = True
            if self._engine or self._projector:
                self.rt.start(engine=self._engine, projector=self._projector, recover=False)
            if self._projector:
                caught_up(self.rt)
        return self.rt

    def resolve(self, given: str) -> str:
        return resolve_in(self.rt.store, given)

    def launch(self, params: LaunchParams) -> Launched:
        engine = self.start().engine
        assert engine is not None
        return engine.launch(params)

    def actor(self, claimed: str) -> str:
        return claimed or os_user()

    def _tokens(self) -> TokenBook:
        from api.tokens import TokenBook

        return TokenBook(self.rt.store, time.time)

    def _projects(self) -> ProjectBook:
        from actors.workspace.projects import ProjectBook  # git and the workspace: project commands only

        return ProjectBook(self.rt.store, time.time)

    def create_token(self, name: str, role: str, *, by: str) -> Issued:
        return self._tokens().create(name, role, by=by)

    def tokens(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "role": t.role.value, "issued_by": t.issued_by, "issued_at": t.issued_at}
                for t in self._tokens().tokens()]

    def revoke_token(self, name: str, *, by: str) -> int:
        return self._tokens().revoke(name, by=by)

    def add_project(self, project_id: str, path: str, *, by: str) -> dict[str, Any]:
        return _project_row(self._projects().add(project_id, path, by=by))

    def projects(self) -> list[dict[str, Any]]:
        return [_project_row(p) for p in self._projects().projects()]

    def remove_project(self, project_id: str, *, by: str, reason: str) -> int:
        return self._projects().remove(project_id, by=by, reason=reason)

    def decide(self, run_id: str, step_id: str, decision: str, *, by: str, comment: str) -> int:
        engine = self.start().engine
        assert engine is not None
        call = engine.approve if decision == "approve" else engine.reject
        return call(run_id, step_id, by=by, comment=comment)

    def cancel(self, run_id: str, *, reason: str, by: str) -> int:
        engine = self.start().engine
        assert engine is not None
        return engine.cancel(run_id, reason=reason, by=by)

    def task_word(self, run_id: str, task: str, action: str, *, text: str, by: str) -> int:
        engine = self.start().engine
        assert engine is not None
        return engine.task_command(run_id, task, action, text=text, by=by)

    def fork(self, run_id: str, step_id: str, *, inputs: dict[str, Any], by: str, retry: bool) -> Launched:
        engine = self.start().engine
        assert engine is not None
        return engine.fork(run_id, step_id, inputs=inputs, by=by, retry=retry)

    def follow(self, run_id: str, view: ProgressView | None) -> RunState:
        rt = self.start()
        unsubscribe = rt.bus.subscribe(view.on_delta) if view is not None else None
        try:
            return follow(rt.store, run_id, settled, view.update if view else None)
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def runs(self, *, status: str | None, flow: str | None, project_id: str | None, limit: int) -> list[dict[str, Any]]:
        read_model = self.start().read_model
        assert read_model is not None
        return read_model.list_runs(project_id=project_id, status=status, flow=flow, limit=limit)[0]

    def run(self, run_id: str) -> dict[str, Any] | None:
        read_model = self.start().read_model
        assert read_model is not None
        return read_model.get_run(run_id)

    def waiting(self, run_id: str) -> list[str]:
        state = read_with_owner(self.start().store, run_id)[0]
        return [sid for sid, step in state.steps.items() if step.status == StepStatus.PAUSED]

    def projection_errors(self, run_id: str) -> list[dict[str, Any]]:
        read_model = self.start().read_model
        assert read_model is not None
        return read_model.projection_errors(run_id)

    def plan(self) -> dict[str, Any]:
        return plan_from_log(self.start())

    def nodes(self) -> list[dict[str, Any]]:
        from actors.cluster import nodes_of  # psycopg, for the cluster's queue: `baton nodes` only

        return nodes_of(self.rt.store)

    def flows(self) -> list[dict[str, Any]]:
        return [flow.describe() for flow in self.rt.registry]

    def close(self) -> None:
        self.rt.stop()


CATCH_UP_S = 60.0  # how long runs/show wait for the read tables to reach the head (a rebuild may be under way)
STUCK_S = 10.0  # ... or for a projector that keeps failing without moving


def caught_up(rt: Runtime, timeout: float = CATCH_UP_S, stuck: float = STUCK_S) -> None:
    """Wait for the read tables to reflect everything recorded so far (read-your-writes).

    Never for good: up to ``timeout``, and no longer than ``stuck`` once the
    projector fails without moving (its database away). Then a warning says
    what was waited for and how far the tables got, and the command answers
    from them as they are.
    """
    head = rt.store.head()
    projector = rt.projector
    assert rt.read_model is not None and projector is not None
    began = time.monotonic()
    deadline = began + timeout
    moved, last = began, projector.position
    while not projector.wait_for(head, timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
        now = time.monotonic()
        if projector.position != last:
            moved, last = now, projector.position
        if now >= deadline or (projector.last_error and now - moved >= stuck):
            error = f"; its last error: {projector.last_error}" if projector.last_error else ""
            print(f"baton: warning: waited {now - began:.0f} s for the read tables to reach the store's head "
                  f"(position {head}); they are at {projector.position}, so results may be stale{error}",
                  file=sys.stderr)
            return


def plan_from_log(rt: Runtime) -> dict[str, Any]:
    """The plan as the log shows it, for when no server runs (no engine holds the live one).

    Same shape as the engine's plan: runs in progress (with the node that
    drives each, or none when its process is gone), and waiting runs with
    their reason: ``capacity`` (queued until a process admits them) or
    ``approval``. Slots in use are the agent steps the log shows running.
    """
    from eventstore.leases import Leases

    store, settings = rt.store, rt.settings
    live = live_nodes(Leases(store.database).held())
    in_progress: list[dict[str, Any]] = []
    waiting: list[tuple[str, str, str, str]] = []
    slots = 0
    for run_id in unended_runs(store):
        state, _, last_node = read_with_owner(store, run_id)
        if state.launched is None or state.terminal:
            continue
        running = [sid for sid in state.running() if kind_rules(state.spec(sid).kind).needs_agent_slot]
        slots += len(running)
        node = last_node if last_node in live else ""
        if state.status == RunStatus.QUEUED:
            waiting.append((run_id, state.launched.flow, "capacity", "queued until a process with room admits it"))
        elif state.status == RunStatus.PAUSED and not state.running():
            waiting.append((run_id, state.launched.flow, "approval", "waiting for a person to approve or reject"))
        else:
            in_progress.append({"run_id": run_id, "flow": state.launched.flow, "since": state.started_at,
                                "slots_held": len(running), "steps_waiting_for_slot": 0,
                                "node": node or "none (its process is gone: baton serve takes it up)"})
    return {
        "max_active_runs": settings.max_active_runs,
        "agent_slots": settings.agent_slots,
        "slots_in_use": slots,
        "in_progress": in_progress,
        "planned_queued": [{"run_id": r, "flow": f, "position": i, "reason": reason, "detail": detail,
                            "steps_waiting_for_slot": 0} for i, (r, f, reason, detail) in enumerate(waiting, 1)],
        "new_queued": [],
    }
