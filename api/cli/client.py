"""The ``baton`` command line as a client of a running ``baton serve`` (its HTTP API).

Every request the CLI sends goes through ``Client``, so what a request must
carry, the bearer token (``BATON_TOKEN``, else the admin token file ``baton
serve`` wrote), is added in one place: ``Client._headers``. Who acts is the
token's name: the server records it, never a name the CLI would claim.

Finding a live server of the same store is ``api.cli.discovery``'s. This
module imports httpx and nothing of the store or the engine: a command sent
to a server needs no more (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from api.cli.errors import ServerError as ServerError  # its home is light (context catches it); used here as before

if TYPE_CHECKING:
    from eventstore import RecordedEvent
    from flows.launch import LaunchParams
    from flows.state import RunState

CONNECT_S = 3.0  # a server that does not accept a connection by then is not there
ANSWER_S = 60.0  # a command waits for its engine (30 s ask timeout, and a hand-over) and a little more


class Client:
    """Calls of the HTTP API (DESIGN §7) the CLI makes, answers as plain values.

    Raises ServerError: exit 2 for a 4xx (what was typed is wrong), 1 for a
    5xx or a server that cannot be reached.
    """

    def __init__(self, url: str, *, token: str = "", token_hint: str = "", timeout: float = ANSWER_S) -> None:
        """A client of the server at ``url`` sending ``token``; ``token_hint`` says where a token is found
        (for the error when the server refuses this one)."""
        self.url = url.rstrip("/")
        self.token = token
        self.token_hint = token_hint or "set BATON_TOKEN to a token (baton tokens create NAME --role ...)"
        self._http = httpx.Client(base_url=self.url, headers=self._headers(),
                                  timeout=httpx.Timeout(timeout, connect=CONNECT_S))

    def _headers(self) -> dict[str, str]:
        """What every request carries (the one place to add credentials)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- commands --------------------------------------------------------------------------

    def launch(self, params: LaunchParams) -> dict[str, Any]:
        """POST /api/runs: ``{run_id, position, created}``.

        Who launches is the server's to say (from this client's identity),
        not ``params.launched_by``.
        """
        body: dict[str, Any] = {"flow": params.flow, "question": params.question, "band": params.band,
                                "model": params.model, "project_id": params.project_id, "fast": params.fast}
        if params.inputs:
            body["inputs"] = dict(params.inputs)
        headers = {"Idempotency-Key": params.idempotency_key} if params.idempotency_key else None
        return self._call("POST", "/api/runs", json=body, headers=headers)

    def decide(self, run_id: str, step_id: str, decision: str, *, comment: str) -> int:
        """POST .../approve or .../reject (``decision`` is "approve" or "reject"): the position recorded."""
        answer = self._call("POST", f"/api/runs/{run_id}/steps/{step_id}/{decision}", json={"comment": comment})
        return int(answer["position"])

    def cancel(self, run_id: str, *, reason: str) -> int:
        """POST /api/runs/{id}/cancel: the position of RunCancelled."""
        return int(self._call("POST", f"/api/runs/{run_id}/cancel", json={"reason": reason})["position"])

    def fork(self, run_id: str, step_id: str, *, inputs: dict[str, Any], retry: bool = False) -> dict[str, Any]:
        """POST /api/runs/{id}/fork (or .../steps/{step}/retry): ``{run_id, position, parent_run_id, from_step}``."""
        if retry:
            return dict(self._call("POST", f"/api/runs/{run_id}/steps/{step_id}/retry", json={}))
        return dict(self._call("POST", f"/api/runs/{run_id}/fork", json={"from_step": step_id, "inputs": inputs}))

    def task_word(self, run_id: str, task: str, action: str, *, text: str) -> int:
        """POST /api/runs/{id}/steps/{task}/{action} (message, abort, retry, skip; DESIGN §12): the position of
        the word's first event."""
        return int(self._call("POST", f"/api/runs/{run_id}/steps/{task}/{action}", json={"text": text})["position"])

    def land(self, run_id: str, *, target: str) -> dict[str, Any]:
        """POST /api/runs/{id}/land: ``{run_id, landed, target, commit, reason, position}``."""
        return dict(self._call("POST", f"/api/runs/{run_id}/land", json={"target": target}))

    def create_token(self, name: str, role: str) -> dict[str, Any]:
        """POST /api/tokens: ``{name, role, token, position}`` (the token shown this once)."""
        return self._call("POST", "/api/tokens", json={"name": name, "role": role})

    def add_project(self, project_id: str, path: str) -> dict[str, Any]:
        """POST /api/projects: the project as registered (``path`` is read on the server's disk)."""
        return self._call("POST", "/api/projects", json={"project_id": project_id, "path": path})

    def projects(self) -> list[dict[str, Any]]:
        """GET /api/projects: the registered projects."""
        return self._call("GET", "/api/projects")

    def remove_project(self, project_id: str, reason: str = "") -> int:
        """DELETE /api/projects/{project_id}: the position of ProjectRemoved."""
        params = {"reason": reason} if reason else None
        return int(self._call("DELETE", f"/api/projects/{quote(project_id, safe='')}", params=params)["position"])

    def tokens(self) -> list[dict[str, Any]]:
        """GET /api/tokens: the valid tokens (name, role, issued_by, issued_at)."""
        return self._call("GET", "/api/tokens")

    def revoke_token(self, name: str) -> int:
        """DELETE /api/tokens/{name}: the position of TokenRevoked."""
        return int(self._call("DELETE", f"/api/tokens/{quote(name, safe='')}")["position"])

    def whoami(self) -> dict[str, Any]:
        """GET /api/session: who this client's token acts as (``{name, role, via}``)."""
        return self._call("GET", "/api/session")

    # -- queries ---------------------------------------------------------------------------

    def runs(self, *, status: str | None = None, flow: str | None = None, project_id: str | None = None,
             limit: int = 50, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """GET /api/runs: a page of runs, newest first, and the cursor of the next one."""
        params = {k: v for k, v in (("status", status), ("flow", flow), ("project_id", project_id),
                                    ("limit", str(limit)), ("cursor", cursor)) if v}
        page = self._call("GET", "/api/runs", params=params)
        return page["runs"], page.get("next_cursor")

    def run(self, run_id: str) -> dict[str, Any] | None:
        """GET /api/runs/{id}: the run, its steps and its report; None for an unknown run."""
        try:
            return self._call("GET", f"/api/runs/{run_id}")
        except ServerError as exc:
            if exc.status == 404:
                return None
            raise

    def plan(self) -> dict[str, Any]:
        """GET /api/plan: the scheduler's plan."""
        return self._call("GET", "/api/plan")

    def nodes(self) -> list[dict[str, Any]]:
        """GET /api/nodes: the nodes sharing the store."""
        return self._call("GET", "/api/nodes")

    def flows(self) -> list[dict[str, Any]]:
        """GET /api/flows: the server's catalogue."""
        return self._call("GET", "/api/flows")

    def health(self) -> dict[str, Any]:
        """GET /api/health."""
        return self._call("GET", "/api/health")

    def state(self, run_id: str, state: RunState | None = None) -> RunState:
        """The run folded from its events as the server has them (GET /api/runs/{id}/events).

        Given the ``state`` folded so far, only the events after its version
        are fetched and folded on.
        """
        from actors.runlog import decode, fold_records  # following a run only
        from flows.state import evolve

        if state is None or state.version == 0:
            return fold_records([_recorded(v) for v in self._call("GET", f"/api/runs/{run_id}/events")], run_id)[0]
        views = self._call("GET", f"/api/runs/{run_id}/events", params={"after_version": str(state.version)})
        for view in views:
            state = evolve(state, decode(_recorded(view)), view["position"])
        return state

    def frames(self, run_id: str, after: int) -> Iterator[dict[str, Any]]:
        """The run's frames after position ``after`` (GET /api/stream, SSE), durable and ephemeral, as they come.

        Ends when the server ends the stream; heartbeats are skipped.
        """
        headers = {"Last-Event-ID": str(after)}
        try:
            with self._http.stream("GET", "/api/stream", params={"run_id": run_id}, headers=headers,
                                   timeout=httpx.Timeout(None, connect=CONNECT_S)) as response:
                if response.status_code >= 400:
                    response.read()
                    if response.status_code == 401:
                        raise ServerError(2, f"the baton server at {self.url} needs a valid token: "
                                             f"{self.token_hint}", status=401)
                    raise _refusal(response)
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    elif not line and data:
                        yield json.loads("\n".join(data))
                        data = []
        except httpx.HTTPError as exc:
            raise ServerError(1, f"lost the baton server at {self.url}: {_reason(exc)}") from None

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServerError(1, f"no answer from the baton server at {self.url}: {_reason(exc)}") from None
        if response.status_code == 401:
            raise ServerError(2, f"the baton server at {self.url} needs a valid token: {self.token_hint}",
                              status=401)
        if response.status_code >= 400:
            raise _refusal(response)
        return response.json()


def _refusal(response: httpx.Response) -> ServerError:
    try:
        problem = response.json()
        detail = problem.get("detail") or problem.get("title") or response.reason_phrase
    except ValueError:
        problem, detail = {}, f"{response.status_code} {response.reason_phrase}"
    code = 2 if 400 <= response.status_code < 500 else 1
    return ServerError(code, str(detail), status=response.status_code, problem=problem)


def _reason(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _recorded(view: dict[str, Any]) -> RecordedEvent:
    from eventstore import RecordedEvent

    return RecordedEvent(position=view["position"], stream_id=view["stream_id"], version=view["version"],
                         type=view["type"], data=view["data"], metadata=view.get("metadata") or {},
                         recorded_at=view.get("recorded_at") or 0.0, hash=view.get("hash") or "",
                         id=view.get("event_id") or "")
