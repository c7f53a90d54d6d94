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

``Local`` lives in ``api.cli.local``: it needs the runtime (the store, the
engine, the projector), which a command sent to a server never imports; this
module imports only what ``Remote`` needs (docs/PERFORMANCE.md, "CLI
start-up").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from actors.launched import Launched
from api.cli.errors import RunIdError, ServerError
from flows import errors
from flows.auth import Principal, Role, check_identity
from flows.status import StepStatus
from flows.text import check_text

if TYPE_CHECKING:
    from api.cli.client import Client
    from api.cli.progress import ProgressView
    from api.tokens import Issued
    from eventstore import SqlStore
    from flows.launch import LaunchParams
    from flows.state import RunState

ID_LENGTH = 26  # a ULID
RECONNECT_S = 60.0  # Settings.reconnect_s's default


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

    def remove_project(self, project_id: str, *, by: str, reason: str) -> int:
        """Unregister ``project_id`` as ``by``; the position of ProjectRemoved."""

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
    from actors.runlog import run_ids_starting

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
    from flows import decide

    return decide.settled(state, time.time())


# -- through a server ----------------------------------------------------------------------------


class Remote:
    """A command sent to a running ``baton serve`` (its HTTP API), which carries it out.

    ``store`` (when this process can open the same store) resolves id
    prefixes in one query; without it they are looked up in the server's
    runs list.
    """

    def __init__(self, client: Client, store: SqlStore | None = None, *,
                 opener: Callable[[], SqlStore | None] | None = None, reconnect_s: float = RECONNECT_S) -> None:
        """``opener`` opens the store when a prefix needs it (None: no store here): a command that names no
        run, or a run by its full id the server knows, never imports SQLAlchemy. ``reconnect_s``: how long
        following a run waits for a server that went away."""
        self.client = client
        self.reconnect_s = reconnect_s
        self._store = store
        self._opener = opener

    @property
    def store(self) -> SqlStore | None:
        """The store of this process, opened at its first need (None when there is none here)."""
        if self._store is None and self._opener is not None:
            opener, self._opener = self._opener, None
            self._store = opener()
        return self._store

    def resolve(self, given: str) -> str:
        check_text("RUN", given)
        known = len(given) == ID_LENGTH and self._store is None and self.client.run(given) is not None
        if known:  # a full id the server knows: the store need not be opened to say so
            return given
        if self.store is not None:
            return resolve_in(self.store, given)
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
        from api.tokens import Issued

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

    def remove_project(self, project_id: str, *, by: str, reason: str) -> int:
        return self.client.remove_project(project_id, reason)

    def follow(self, run_id: str, view: ProgressView | None) -> RunState:
        """Fold the run's events from the server, then fold on at each durable frame of its stream.

        The server going away (stopped, restarted, killed, the network) does
        not end the command: it tries again, less and less often, for
        ``reconnect_s`` seconds, saying so once on stderr, and then goes on
        from the last event it folded (what the server recorded meanwhile is
        read first). A refusal (4xx, 5xx) ends it at once.
        """
        state: RunState | None = None
        away: _Away | None = None  # since the server last moved the run on, it went away (or ended the stream)
        while True:
            try:
                state = self.client.state(run_id, state)
                if away is not None:
                    away.back()
                if view is not None:
                    view.update(state)
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
                    away = None
                    if view is not None:
                        view.update(state)
                    if settled(state):
                        return state
            except ServerError as exc:
                if exc.status:  # the server answered: a refusal, not an outage
                    raise
                reason = str(exc)
            else:  # the server ended the stream (it is stopping): gone or back, the next call tells
                reason = f"the baton server at {self.client.url} ended the stream of run {run_id}"
            away = away or _Away(self.client.url, run_id, self.reconnect_s)
            away.wait(reason)

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
        if self._store is not None:
            self._store.close()


class _Away:
    """A server that went away while a command followed a run: tries again with a growing pause, at most
    ``budget`` seconds in all; says so once on stderr, and once when it is back."""

    def __init__(self, url: str, run_id: str, budget: float) -> None:
        self.url, self.run_id, self.budget = url, run_id, budget
        self.deadline = time.monotonic() + budget
        self.pause = 0.1
        self.said = self.told_back = False

    def wait(self, reason: str) -> None:
        """Sleep before the next try; ServerError once the budget is spent."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ServerError(1, f"{reason}; waited {self.budget:g} s for it to come back. Run {self.run_id} goes "
                                 f"on there once it is back: baton show {self.run_id}")
        if not self.said:
            self.said = True
            sys.stderr.write(f"baton: {reason}; trying again for {self.budget:g} s (Ctrl-C stops following; "
                             f"the run goes on there)\n")
            sys.stderr.flush()
        time.sleep(min(self.pause, left))
        self.pause = min(self.pause * 2, 2.0)

    def back(self) -> None:
        """The server answers again: say so, once, if its loss was said."""
        if self.said and not self.told_back:
            self.told_back = True
            sys.stderr.write(f"baton: the baton server at {self.url} is back; following run {self.run_id}\n")
            sys.stderr.flush()
