"""Where a ``baton`` command is carried out: in this process, or through a running server.

``Local`` opens the store and, for a command that changes a run, starts an
engine that drives that run only (``recover=False``). ``Remote`` sends the
command to a ``baton serve`` (``api.cli.client``), whose engine then drives
the run. Both answer in the same values (the read model's rows, the plan's
dict, the run's state folded from its events), so every command prints the
same output, and ``--json`` the same JSON, whichever carries it out.

Which one a command gets is decided once, in ``api.cli.main``: ``--local``
forces this process; ``--server URL`` / ``BATON_URL`` names a server; else a
live server of the same store is used when one answers (its ``server-<url>``
lease), and this process when none does.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from actors.cluster import nodes_of
from actors.engine import Launched
from actors.runlog import follow, live_nodes, read_with_owner, run_ids_starting, unended_runs
from actors.workspace.projects import ProjectBook
from api.cli.client import Client, ServerError
from api.cli.errors import RunIdError
from api.cli.progress import ProgressView
from api.runtime import Runtime
from api.settings import Settings, os_user
from api.tokens import Issued, TokenBook
from eventstore import SqlStore
from eventstore.leases import Leases
from flows import decide, errors
from flows.auth import Principal, Role, check_identity
from flows.kinds import kind_rules
from flows.launch import LaunchParams
from flows.projects import Project
from flows.state import RunState
from flows.status import RunStatus, StepStatus
from flows.text import check_text

ID_LENGTH = 26  # a ULID


class Target(Protocol):
    """What a command needs of the place it is carried out."""

    def resolve(self, given: str) -> str:
        """The full id of the one run whose id starts with ``given``; UnknownRun or RunIdError."""

    def launch(self, params: LaunchParams) -> Launched:
        """Launch a run (the server checks it; locally, ``check`` did)."""

    def actor(self, claimed: str) -> str:
        """Who a command is recorded as: here the login name (or ``--by``); through a server the token's
        name (a ``--by`` naming someone else is refused, IdentityMismatch)."""

    def decide(self, run_id: str, step_id: str, decision: str, *, by: str, comment: str) -> int:
        """Approve or reject (``decision``: "approve" | "reject") as ``by`` (from ``actor``); the position."""

    def cancel(self, run_id: str, *, reason: str, by: str) -> int:
        """Cancel a run as ``by`` (from ``actor``); the position of RunCancelled."""

    def task_word(self, run_id: str, task: str, action: str, *, text: str, by: str) -> int:
        """A person's word on one task of a task run (message, abort, retry, skip) as ``by``; the position of
        its first event (DESIGN §12)."""

    def fork(self, run_id: str, step_id: str, *, inputs: dict[str, Any], by: str, retry: bool) -> Launched:
        """Fork a run from a step (``retry``: retry that step) as ``by``; the new run (DESIGN §15)."""

    def create_token(self, name: str, role: str, *, by: str) -> Issued:
        """Make a token (shown once) as ``by``."""

    def tokens(self) -> list[dict[str, Any]]:
        """The valid tokens: name, role, issued_by, issued_at."""

    def revoke_token(self, name: str, *, by: str) -> int:
        """Revoke a token as ``by``; the position of TokenRevoked."""

    def add_project(self, project_id: str, path: str, *, by: str) -> dict[str, Any]:
        """Register the git work tree at ``path`` (absolute) as ``project_id``: the project's view."""

    def projects(self) -> list[dict[str, Any]]:
        """The registered projects: project_id, root, registered_by, registered_at."""

    def follow(self, run_id: str, view: ProgressView | None) -> RunState:
        """Wait while the run moves, until it ends or waits for a person; its state then."""

    def runs(self, *, status: str | None, flow: str | None, project_id: str | None, limit: int) -> list[dict[str, Any]]:
        """Runs, newest first (read model rows)."""

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run, its steps and its report; None for an unknown run."""

    def waiting(self, run_id: str) -> list[str]:
        """The steps of a run waiting for a person (paused)."""

    def projection_errors(self, run_id: str) -> list[dict[str, Any]]:
        """Events of the run the read tables could not apply (their position, type and error)."""

    def plan(self) -> dict[str, Any]:
        """The scheduler's plan."""

    def nodes(self) -> list[dict[str, Any]]:
        """The nodes sharing the store (``actors.cluster.nodes_of``)."""

    def flows(self) -> list[dict[str, Any]]:
        """The catalogue (``Flow.describe()`` of each flow)."""

    def close(self) -> None:
        """Stop whatever the target started."""


def _project_row(project: Project) -> dict[str, Any]:
    return {"project_id": project.project_id, "root": project.root, "registered_by": project.registered_by,
            "registered_at": project.registered_at}


def pick(candidates: list[str], given: str) -> str:
    """The one run ``given`` names among ``candidates`` (runs whose id starts with it)."""
    if given in candidates or len(candidates) == 1:
        return given if given in candidates else candidates[0]
    if not candidates:
        raise errors.UnknownRun(given)
    shown = ", ".join(candidates[:5]) + (", ..." if len(candidates) > 5 else "")
    raise RunIdError(f"run id {given!r} is the start of more than one run ({shown}); give more of it")


def resolve_in(store: SqlStore, given: str) -> str:
    """The run ``given`` names in ``store``: a full id, or the start of exactly one.

    A RUN no run id can hold (bytes that are not UTF-8) is refused (UnstorableText) before the store sees it.
    """
    check_text("RUN", given)
    if not given:
        raise errors.UnknownRun(given)
    for candidate in dict.fromkeys((given, given.upper())):
        found = run_ids_starting(store, candidate, limit=6)
        if found:
            return pick(found, candidate)
    raise errors.UnknownRun(given)


def settled(state: RunState) -> bool:
    """Where following a run stops: ended, or paused with nothing but a person to wait for
    (``flows.decide.settled``; a sibling step waiting for a slot is something)."""
    return decide.settled(state, time.time())


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

    def create_token(self, name: str, role: str, *, by: str) -> Issued:
        return TokenBook(self.rt.store, time.time).create(name, role, by=by)

    def tokens(self) -> list[dict[str, Any]]:
        return [{"name": t.name, "role": t.role.value, "issued_by": t.issued_by, "issued_at": t.issued_at}
                for t in TokenBook(self.rt.store, time.time).tokens()]

    def revoke_token(self, name: str, *, by: str) -> int:
        return TokenBook(self.rt.store, time.time).revoke(name, by=by)

    def add_project(self, project_id: str, path: str, *, by: str) -> dict[str, Any]:
        return _project_row(ProjectBook(self.rt.store, time.time).add(project_id, path, by=by))

    def projects(self) -> list[dict[str, Any]]:
        return [_project_row(p) for p in ProjectBook(self.rt.store, time.time).projects()]

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


# -- through a server ----------------------------------------------------------------------------


class Remote:
    """A command sent to a running ``baton serve`` (its HTTP API), which carries it out.

    ``store`` (when this process can open the same store) resolves id
    prefixes in one query; without it they are looked up in the server's
    runs list.
    """

    def __init__(self, client: Client, store: SqlStore | None = None) -> None:
        self.client = client
        self.store = store

    def resolve(self, given: str) -> str:
        check_text("RUN", given)
        if self.store is not None:
            return resolve_in(self.store, given)
        if len(given) == ID_LENGTH and self.client.run(given) is not None:
            return given
        found: list[str] = []
        cursor: str | None = None
        while True:  # the runs list, page by page: a prefix without the store behind it
            rows, cursor = self.client.runs(limit=500, cursor=cursor)
            found += [r["run_id"] for r in rows if r["run_id"].startswith((given, given.upper()))]
            if not cursor or len(found) > 5:
                break
        return pick(sorted(set(found)), given)

    def launch(self, params: LaunchParams) -> Launched:
        try:
            answer = self.client.launch(params)
        except ServerError as exc:
            if exc.problem.get("field") == "flow" and exc.status == 422:  # the server lacks this flow's module
                raise ServerError(exc.code, f"{exc} (asked the baton server at {self.client.url}: start it with the "
                                            f"flows module in --flows / BATON_FLOWS, or launch in this process "
                                            f"with --local)", status=exc.status, problem=exc.problem) from None
            raise
        return Launched(answer["run_id"], answer["position"], answer.get("created", True))

    def actor(self, claimed: str) -> str:
        who = self.client.whoami()
        check_identity("--by", claimed, Principal(name=who["name"], role=Role(who["role"])))
        return str(who["name"])

    def decide(self, run_id: str, step_id: str, decision: str, *, by: str, comment: str) -> int:
        return self.client.decide(run_id, step_id, decision, comment=comment)  # the server records its principal

    def cancel(self, run_id: str, *, reason: str, by: str) -> int:
        return self.client.cancel(run_id, reason=reason)

    def task_word(self, run_id: str, task: str, action: str, *, text: str, by: str) -> int:
        return self.client.task_word(run_id, task, action, text=text)  # the server records its principal

    def fork(self, run_id: str, step_id: str, *, inputs: dict[str, Any], by: str, retry: bool) -> Launched:
        answer = self.client.fork(run_id, step_id, inputs=inputs, retry=retry)  # the server records its principal
        return Launched(answer["run_id"], answer["position"])

    def create_token(self, name: str, role: str, *, by: str) -> Issued:
        answer = self.client.create_token(name, role)
        return Issued(answer["name"], Role(answer["role"]), answer["token"], answer["position"])

    def tokens(self) -> list[dict[str, Any]]:
        return self.client.tokens()

    def revoke_token(self, name: str, *, by: str) -> int:
        return self.client.revoke_token(name)

    def add_project(self, project_id: str, path: str, *, by: str) -> dict[str, Any]:
        return self.client.add_project(project_id, path)

    def projects(self) -> list[dict[str, Any]]:
        return self.client.projects()

    def follow(self, run_id: str, view: ProgressView | None) -> RunState:
        """Fold the run's events from the server, then fold on at each durable frame of its stream."""
        state = self.client.state(run_id)
        if view is not None:
            view.update(state)
        for _ in range(3):  # the stream ends when the server stops: follow it again, then give up
            if settled(state):
                return state
            for frame in self.client.frames(run_id, after=state.position):
                if frame.get("type") == "step_delta":
                    if view is not None:
                        view.on_delta(frame)
                    continue
                if frame.get("id") is None or frame["id"] <= state.position:
                    continue
                state = self.client.state(run_id, state)
                if view is not None:
                    view.update(state)
                if settled(state):
                    return state
        raise ServerError(1, f"the baton server at {self.client.url} stopped streaming run {run_id}; it goes on "
                             f"there: baton show {run_id}")

    def runs(self, *, status: str | None, flow: str | None, project_id: str | None, limit: int) -> list[dict[str, Any]]:
        return self.client.runs(status=status, flow=flow, project_id=project_id, limit=limit)[0]

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self.client.run(run_id)

    def waiting(self, run_id: str) -> list[str]:
        shown = self.client.run(run_id) or {}
        return [str(s["step_id"]) for s in shown.get("steps", []) if s.get("status") == StepStatus.PAUSED]

    def projection_errors(self, run_id: str) -> list[dict[str, Any]]:
        return []  # the server answers 404 with state "unreadable" for such a run

    def plan(self) -> dict[str, Any]:
        return self.client.plan()

    def nodes(self) -> list[dict[str, Any]]:
        return self.client.nodes()

    def flows(self) -> list[dict[str, Any]]:
        return self.client.flows()

    def close(self) -> None:
        self.client.close()
        if self.store is not None:
            self.store.close()


