"""Who may call what, from where (DESIGN §13), through Starlette's TestClient on a real runtime.

Tokens of each role are made in the store (as ``baton tokens create`` does);
every refusal is a problem+json and appends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from api.tokens import TokenBook
from tests.api.access import BASE_URL, authed_client, bearer, issue_tokens

PROBLEM = "application/problem+json"
ROLE_ORDER = ("viewer", "operator", "approver", "admin")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("access") / "baton.db"
    settings = Settings(db=f"sqlite:///{db}", flows=("tests.api.api_flows",), cors_origins=("https://console.example",))
    with Runtime(settings).start() as rt:
        yield rt


@pytest.fixture(scope="module")
def tokens(runtime) -> dict[str, str]:
    return issue_tokens(runtime.store, "acc-")


@pytest.fixture(scope="module")
def client(runtime) -> Iterator[TestClient]:
    """No credential of its own: each request says who it is."""
    with authed_client(create_app(runtime), None) as c:
        yield c


def problem_of(r: Any, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"].endswith("/" + slug) and body["status"] == status and body["detail"], body
    return body


def launch(client: TestClient, token: str, flow: str = "api-gate", **headers: str) -> str:
    r = client.post("/api/runs", json={"flow": flow, "question": "Ship it?"}, headers={**bearer(token), **headers})
    assert r.status_code == 201, r.text
    return r.json()["run_id"]


def quiet(runtime: Runtime) -> int:
    """The head once no run moves (each ended or waits for a person): what a refusal must leave as it is."""
    settled = {"paused", "completed", "failed", "rejected", "cancelled"}
    runtime.projector.wait_for(runtime.store.head())
    for status in ("queued", "running"):
        for run in runtime.read_model.list_runs(status=status, limit=500)[0]:
            runtime.engine.wait(run["run_id"], settled, timeout=10)
    return runtime.store.head()


def paused(runtime: Runtime, run_id: str) -> None:
    runtime.engine.wait(run_id, {"paused"}, timeout=10)
    runtime.projector.wait_for(runtime.store.head())


# -- 401 and 403 ---------------------------------------------------------------------------------


# One request per route (a run id that does not exist is fine: access is decided before the route runs).
REQUESTS = [
    ("GET", "/api/runs", None, "viewer"),
    ("GET", "/api/runs/01NOSUCHRUN0000000000000000", None, "viewer"),
    ("GET", "/api/runs/01NOSUCHRUN0000000000000000/events", None, "viewer"),
    ("GET", "/api/runs/01NOSUCHRUN0000000000000000/report", None, "viewer"),
    ("GET", "/api/flows", None, "viewer"),
    ("GET", "/api/plan", None, "viewer"),
    ("GET", "/api/openapi.json", None, "viewer"),
    ("GET", "/api/session", None, "viewer"),
    ("POST", "/api/runs", {"flow": "no-such-flow", "question": "q"}, "operator"),  # 422 once let in
    ("POST", "/api/runs/01NOSUCHRUN0000000000000000/cancel", {}, "operator"),
    ("POST", "/api/runs/01NOSUCHRUN0000000000000000/steps/gate/approve", {}, "approver"),
    ("POST", "/api/runs/01NOSUCHRUN0000000000000000/steps/gate/reject", {}, "approver"),
    ("GET", "/api/tokens", None, "admin"),
    ("POST", "/api/tokens", {"name": "made-in-a-test", "role": "viewer"}, "admin"),
    ("DELETE", "/api/tokens/nobody-has-this-name", None, "admin"),
    ("GET", "/api/projects", None, "viewer"),
    ("POST", "/api/projects", {"project_id": "nope", "path": "/no/such/dir"}, "admin"),  # 422 once let in
]


@pytest.mark.parametrize("method,path,body,needed", REQUESTS, ids=[f"{m} {p}" for m, p, _, _ in REQUESTS])
def test_each_route_is_401_without_a_token_and_403_naming_its_role_below_it(client, runtime, tokens, method,
                                                                             path, body, needed):
    head = quiet(runtime)
    kwargs = {"json": body} if body is not None else {}
    r = client.request(method, path, **kwargs)
    problem_of(r, 401, "unauthenticated")
    assert r.headers["www-authenticate"] == 'Bearer realm="baton"'
    for bad in ("baton_" + "x" * 43, "not-even-a-token", tokens["viewer"] + "x"):
        problem_of(client.request(method, path, headers=bearer(bad), **kwargs), 401, "unauthenticated")
    problem_of(client.request(method, path, headers={"Authorization": "Basic " + tokens["admin"]}, **kwargs), 401,
               "unauthenticated")
    for role in ROLE_ORDER[:ROLE_ORDER.index(needed)]:
        problem = problem_of(client.request(method, path, headers=bearer(tokens[role]), **kwargs), 403,
                             "forbidden")
        assert problem["role"] == needed and f"needs the {needed} role; 'acc-{role}' has {role}" in problem["detail"]
    assert runtime.store.head() == head  # no refusal appended anything
    for role in ROLE_ORDER[ROLE_ORDER.index(needed):]:
        answer = client.request(method, path, headers=bearer(tokens[role]), **kwargs)
        assert answer.status_code not in (401, 403), (role, answer.text)
        if path == "/api/tokens" and method == "POST":
            TokenBook(runtime.store, time.time).revoke("made-in-a-test", by="test")  # made once per role


def test_health_and_the_console_need_no_token_and_an_unknown_api_path_does(client):
    assert client.get("/api/health").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    problem_of(client.get("/api/nothing-here"), 401, "unauthenticated")  # no token: not even a 404
    problem_of(client.delete("/api/runs"), 401, "unauthenticated")


def test_a_revoked_token_is_refused_at_once_through_the_server_and_soon_from_the_store(client, runtime, tokens):
    book = TokenBook(runtime.store, time.time)
    through_api, from_store = book.create("acc-short-1", "viewer", by="test"), book.create("acc-short-2", "viewer",
                                                                                         by="test")
    # Made a moment ago by another process (the book, as `baton tokens create` writes it): valid at once.
    assert client.get("/api/runs", headers=bearer(through_api.token)).status_code == 200
    assert client.get("/api/runs", headers=bearer(from_store.token)).status_code == 200
    r = client.delete("/api/tokens/acc-short-1", headers=bearer(tokens["admin"]))
    assert r.status_code == 200 and r.json()["name"] == "acc-short-1"
    problem_of(client.get("/api/runs", headers=bearer(through_api.token)), 401, "unauthenticated")
    book.revoke("acc-short-2", by="test")  # the server learns it from the auth stream, through its frame hub
    deadline = time.monotonic() + 5
    with runtime.store.subscribe(after=runtime.store.head()) as pause:  # waits of up to 0.1 s on the store
        while client.get("/api/runs", headers=bearer(from_store.token)).status_code == 200:
            assert time.monotonic() < deadline, "a token revoked in the store was still accepted after 5 s"
            pause.next_event(timeout=0.1)
    listed = client.get("/api/tokens", headers=bearer(tokens["admin"])).json()
    assert {"acc-short-1", "acc-short-2"}.isdisjoint(t["name"] for t in listed)
    assert all(set(t) == {"name", "role", "issued_by", "issued_at"} for t in listed)  # never a token or a hash


def test_an_auth_event_the_server_could_not_read_fails_closed_until_it_can(runtime, tokens, monkeypatch):
    """The store away when the hub saw a TokenRevoked go by: no request is let in on the old list."""
    from eventstore import RecordedEvent, StoreUnavailableError

    app = create_app(runtime)
    with authed_client(app, tokens["viewer"]) as c:
        assert c.get("/api/runs").status_code == 200
        index = app.state.tokens

        def away(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailableError("the database went away")

        monkeypatch.setattr(index._book, "registry", away)
        seen = RecordedEvent(position=1, stream_id="auth", version=1, type="TokenRevoked", data={}, metadata={},
                             recorded_at=0.0, hash="")
        with pytest.raises(StoreUnavailableError):
            index.observe([seen])  # (the hub logs it and goes on)
        assert index.stale
        problem_of(c.get("/api/runs"), 503, "store-unavailable")
        assert c.get("/api/health").status_code == 200  # public: answers whatever the token index
        monkeypatch.undo()
        assert c.get("/api/runs").status_code == 200 and not index.stale


def test_tokens_through_the_api_are_shown_once_and_only_their_hash_is_recorded(client, runtime, tokens):
    r = client.post("/api/tokens", json={"name": "acc-api-made", "role": "operator"}, headers=bearer(tokens["admin"]))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["token"].startswith("baton_") and made["role"] == "operator"
    recorded = runtime.store.read_stream("auth")
    assert all(made["token"] not in str(rec.data) + str(rec.metadata) for rec in recorded)
    issued = next(rec for rec in recorded if rec.data["name"] == "acc-api-made")
    assert issued.data["by"] == "acc-admin" and issued.metadata["actor"] == "acc-admin"
    assert launch(client, made["token"], "api-chain")
    problem_of(client.post("/api/tokens", json={"name": "acc-api-made", "role": "viewer"},
                           headers=bearer(tokens["admin"])), 409, "token-exists")
    problem = problem_of(client.post("/api/tokens", json={"name": "x y", "role": "viewer"},
                                     headers=bearer(tokens["admin"])), 422, "invalid-token-name")
    assert problem["field"] == "name"
    problem = problem_of(client.post("/api/tokens", json={"name": "xy", "role": "root"},
                                     headers=bearer(tokens["admin"])), 422, "unknown-role")
    assert problem["known"] == list(ROLE_ORDER)
    problem_of(client.delete("/api/tokens/acc-nobody", headers=bearer(tokens["admin"])), 404, "unknown-token")


# -- identity and four eyes ----------------------------------------------------------------------


def test_four_eyes_the_launcher_cannot_decide_another_approver_can(client, runtime, tokens):
    run_id = launch(client, tokens["approver"], "api-four-eyes")  # an approver may launch too
    paused(runtime, run_id)
    head = quiet(runtime)
    for verb in ("approve", "reject"):
        problem = problem_of(client.post(f"/api/runs/{run_id}/steps/gate/{verb}", json={},
                                         headers=bearer(tokens["approver"])), 403, "four-eyes")
        assert "needs four eyes" in problem["detail"] and "'acc-approver' launched it" in problem["detail"]
    assert runtime.store.head() == head
    r = client.post(f"/api/runs/{run_id}/steps/gate/approve", json={"comment": "second pair"},
                    headers=bearer(tokens["admin"]))
    assert r.status_code == 200, r.text
    resumed = [e for e in runtime.store.read_stream(f"run-{run_id}") if e.type == "StepResumed"]
    assert resumed[0].data["by"] == "acc-admin"


def test_the_canceller_is_the_principal(client, runtime, tokens):
    run_id = launch(client, tokens["operator"])
    paused(runtime, run_id)
    problem_of(client.post(f"/api/runs/{run_id}/cancel", json={"by": "someone-else"},
                           headers=bearer(tokens["operator"])), 403, "identity-mismatch")
    r = client.post(f"/api/runs/{run_id}/cancel", json={"reason": "enough"}, headers=bearer(tokens["operator"]))
    assert r.status_code == 200, r.text
    ended = runtime.store.read_stream(f"run-{run_id}")[-1]
    assert ended.type == "RunCancelled" and ended.data["by"] == "acc-operator"
    assert ended.metadata["actor"] == "acc-operator"


# -- Host, Origin, body type ---------------------------------------------------------------------


def test_a_host_that_is_not_this_server_is_refused_everywhere(client, tokens):
    """DNS rebinding: a page of evil.example whose name now points here sends that Host."""
    for path in ("/api/runs", "/api/health", "/"):
        problem = problem_of(client.get(path, headers={"Host": "evil.example", **bearer(tokens["viewer"])}), 400,
                             "host-not-allowed")
        assert "BATON_ALLOWED_HOSTS" in problem["detail"]
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765", "10.1.2.3:80", "LOCALHOST"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_adds_names(tmp_path):
    rt = Runtime(Settings(db=f"sqlite:///{tmp_path / 'h.db'}", allowed_hosts=("baton.internal",))).start(
        engine=False)
    try:
        with TestClient(create_app(rt), base_url="http://baton.internal:8765") as c:
            assert c.get("/api/health").status_code == 200
            problem_of(c.get("/api/health", headers={"Host": "other.internal"}), 400, "host-not-allowed")
    finally:
        rt.stop()


def test_a_foreign_origin_cannot_change_anything_and_gets_no_cors(client, runtime, tokens):
    head = quiet(runtime)
    body = {"flow": "api-chain", "question": "from elsewhere"}
    for origin in ("http://evil.example", "null", "http://localhost:9999"):
        problem_of(client.post("/api/runs", json=body, headers={"Origin": origin, **bearer(tokens["admin"])}), 403,
                   "foreign-origin")
    assert runtime.store.head() == head
    assert launch(client, tokens["operator"], "api-chain", Origin=BASE_URL)  # this server's own page
    read = client.get("/api/runs", headers={"Origin": "http://evil.example", **bearer(tokens["viewer"])})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_a_configured_origin_may_call_with_a_token(client, tokens):
    preflight = client.options("/api/runs", headers={"Origin": "https://console.example",
                                                     "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://console.example"
    r = client.post("/api/runs", json={"flow": "api-chain", "question": "cors"},
                    headers={"Origin": "https://console.example", **bearer(tokens["operator"])})
    assert r.status_code == 201 and r.headers["access-control-allow-origin"] == "https://console.example"


def test_a_body_that_is_not_json_is_415_and_launches_nothing(client, runtime, tokens):
    """Before: a text/plain POST from a foreign page (no preflight needed) launched a run."""
    head = quiet(runtime)
    body = b'{"flow": "api-gate", "question": "csrf"}'  # waits for a person: still open when cancelled
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "multipart/form-data; boundary=x"}, {}):
        problem = problem_of(client.post("/api/runs", content=body, headers={**headers, **bearer(tokens["admin"])}),
                             415, "unsupported-media-type")
        assert "application/json" in problem["detail"]
    assert runtime.store.head() == head
    r = client.post("/api/runs", content=body, headers={"Content-Type": "application/json; charset=utf-8",
                                                         **bearer(tokens["operator"])})
    assert r.status_code == 201
    run_id = r.json()["run_id"]
    paused(runtime, run_id)
    assert client.post(f"/api/runs/{run_id}/cancel", headers=bearer(tokens["operator"])).status_code == 200  # no body


def test_positions_and_versions_past_64_bits_are_422_not_500(client, tokens):
    """Found by the schema fuzz: after_version=2**63 reached SQLite, which cannot bind it (500)."""
    run_id = launch(client, tokens["operator"], "api-chain")
    viewer = bearer(tokens["viewer"])
    for path, field in ((f"/api/runs/{run_id}/events?after_version={2**63}", "after_version"),
                        (f"/api/runs?min_position={2**64}", "min_position"),
                        (f"/api/stream?after={2**63}", "after")):
        problem = problem_of(client.get(path, headers=viewer), 422, "invalid-parameter")
        assert problem["field"] == field
    problem = problem_of(client.get("/api/stream", headers={"Last-Event-ID": str(2**63), **viewer}), 422,
                         "invalid-parameter")
    assert problem["field"] == "Last-Event-ID"


# -- the console's session -----------------------------------------------------------------------


def test_login_gives_an_httponly_strict_cookie_and_state_changes_need_its_csrf_token(runtime, tokens):
    with authed_client(create_app(runtime), None) as c:
        problem_of(c.post("/api/login", json={"token": "baton_" + "x" * 43}), 401, "unauthenticated")
        r = c.post("/api/login", json={"token": tokens["operator"]})
        assert r.status_code == 204
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("baton_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Secure" not in cookie and "Path=/" in cookie and "Max-Age=28800" in cookie
        who = c.get("/api/session").json()
        assert (who["name"], who["role"], who["via"]) == ("acc-operator", "operator", "session")
        csrf = who["csrf_token"]
        assert csrf and r.headers["x-csrf-token"] == csrf
        body = {"flow": "api-chain", "question": "with the cookie"}
        head = quiet(runtime)
        problem_of(c.post("/api/runs", json=body), 403, "csrf")
        problem_of(c.post("/api/runs", json=body, headers={"X-CSRF-Token": csrf[:-1]}), 403, "csrf")
        assert runtime.store.head() == head
        launched = c.post("/api/runs", json=body, headers={"X-CSRF-Token": csrf})
        assert launched.status_code == 201
        events = runtime.store.read_stream(f"run-{launched.json()['run_id']}")
        assert events[0].data["launched_by"] == "acc-operator"
        problem_of(c.post(f"/api/runs/{launched.json()['run_id']}/steps/x/approve", json={},
                          headers={"X-CSRF-Token": csrf}), 403, "forbidden")  # a session has its token's role
        problem_of(c.post("/api/logout"), 403, "csrf")
        assert c.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        problem_of(c.get("/api/session"), 401, "unauthenticated")
        assert c.post("/api/logout").status_code == 204  # an ended session: just cleared


def test_a_session_ends_with_its_ttl_and_with_its_token(runtime):
    book = TokenBook(runtime.store, time.time)
    issued = book.create("acc-session", "viewer", by="test")
    app = create_app(runtime)
    clock = [time.time()]
    with authed_client(app, None) as c:
        app.state.sessions._now = lambda: clock[0]
        assert c.post("/api/login", json={"token": issued.token}).status_code == 204
        assert c.get("/api/runs").status_code == 200
        clock[0] += app.state.sessions.ttl_s + 1
        problem_of(c.get("/api/runs"), 401, "unauthenticated")
        assert len(app.state.sessions) == 0  # forgotten, not only refused
        clock[0] = time.time()
        assert c.post("/api/login", json={"token": issued.token}).status_code == 204
        assert c.get("/api/runs").status_code == 200
        book.revoke("acc-session", by="test")
        app.state.tokens.refresh()  # (the hub would do it within its poll interval)
        problem_of(c.get("/api/runs"), 401, "unauthenticated")


def test_the_cookie_is_secure_over_https(runtime, tokens):
    with TestClient(create_app(runtime), base_url="https://localhost") as c:
        r = c.post("/api/login", json={"token": tokens["viewer"]})
        assert r.status_code == 204 and "Secure" in r.headers["set-cookie"]


def test_a_bearer_request_needs_no_csrf_and_says_who_it_is(client, tokens):
    who = client.get("/api/session", headers=bearer(tokens["approver"])).json()
    assert who == {"name": "acc-approver", "role": "approver", "via": "token", "csrf_token": None}


# -- streams -------------------------------------------------------------------------------------


def test_the_sse_stream_needs_a_viewer(client, tokens):
    problem_of(client.get("/api/stream"), 401, "unauthenticated")
    with client.stream("GET", "/api/stream", headers=bearer(tokens["viewer"])) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


def test_the_websocket_needs_a_principal_and_this_servers_origin(client, runtime, tokens):
    url = "ws://localhost/api/ws?after=0"
    for headers, status in (({}, 401), ({"Authorization": "Bearer baton_" + "x" * 43}, 401),
                            ({"Origin": "http://evil.example", **bearer(tokens["viewer"])}, 403),
                            ({"Origin": "null", **bearer(tokens["viewer"])}, 403)):
        with pytest.raises(WebSocketDenialResponse) as refused:  # an HTTP answer instead of the upgrade
            with client.websocket_connect(url, headers=headers):
                pass
        assert refused.value.status_code == status, headers
        assert refused.value.headers["content-type"] == PROBLEM
    launch(client, tokens["operator"], "api-chain")
    with client.websocket_connect(url, headers=bearer(tokens["viewer"])) as ws:
        assert ws.receive_json()["id"] >= 1  # replayed from the start: the server answers frames
    r = client.post("/api/login", json={"token": tokens["viewer"]})
    assert r.status_code == 204
    try:
        with client.websocket_connect(url, headers={"Origin": BASE_URL}) as ws:  # the console: cookie + own origin
            assert ws.receive_json()["id"] >= 1
    finally:
        client.cookies.clear()


# -- without auth ---------------------------------------------------------------------------------


def test_insecure_no_auth_serves_everyone_as_anonymous_but_still_checks_host_and_body(tmp_path):
    rt = Runtime(Settings(db=f"sqlite:///{tmp_path / 'open.db'}", flows=("tests.api.api_flows",),
                          insecure_no_auth=True)).start()
    try:
        with authed_client(create_app(rt), None) as c:
            assert c.get("/api/session").json() == {"name": "anonymous", "role": "admin", "via": "none",
                                                    "csrf_token": None}
            r = c.post("/api/runs", json={"flow": "api-chain", "question": "open"})
            assert r.status_code == 201
            assert rt.store.read_stream(f"run-{r.json()['run_id']}")[0].data["launched_by"] == "anonymous"
            problem_of(c.get("/api/runs", headers={"Host": "evil.example"}), 400, "host-not-allowed")
            problem_of(c.post("/api/runs", content=b"{}", headers={"Content-Type": "text/plain"}), 415,
                       "unsupported-media-type")
            problem_of(c.post("/api/runs", json={}, headers={"Origin": "null"}), 403, "foreign-origin")
    finally:
        rt.stop()
