"""Projects over HTTP (DESIGN §11): admins register git repositories, launches name them and get them pinned."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from flows.events import stream_of
from flows.projects import PROJECTS_STREAM
from tests.api.access import authed_client, bearer, issue_tokens
from tests.integration.workspace_repo import git, make_repo


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[Runtime]:
    db = tmp_path_factory.mktemp("projects") / "baton.db"
    rt = Runtime(Settings(db=f"sqlite:///{db}", flows=("tests.api.api_flows",))).start()
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def tokens(runtime) -> dict[str, str]:
    return issue_tokens(runtime.store, "prj-")


@pytest.fixture(scope="module")
def client(runtime) -> Iterator[TestClient]:
    with authed_client(create_app(runtime), None) as c:
        yield c


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("repo"))


def test_an_admin_registers_a_repository_and_a_viewer_lists_it(client, tokens, repo):
    admin, viewer = bearer(tokens["admin"]), bearer(tokens["viewer"])
    r = client.post("/api/projects", json={"project_id": "demo", "path": str(repo.root)}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["project_id"] == "demo" and r.json()["registered_by"] == "prj-admin"
    again = client.post("/api/projects", json={"project_id": "demo", "path": str(repo.root)}, headers=admin)
    assert again.status_code == 200  # the same registration again changes nothing
    listed = client.get("/api/projects", headers=viewer).json()
    assert [p["project_id"] for p in listed] == ["demo"]
    refused = client.post("/api/projects", json={"project_id": "other", "path": str(repo.root)},
                          headers=bearer(tokens["operator"]))
    assert refused.status_code == 403 and refused.json()["role"] == "admin"


def test_a_path_that_is_no_repository_is_a_422_naming_it_and_appends_nothing(client, runtime, tokens, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    before = runtime.store.read_stream(PROJECTS_STREAM)
    r = client.post("/api/projects", json={"project_id": "plain", "path": str(plain)},
                    headers=bearer(tokens["admin"]))
    assert r.status_code == 422 and r.json()["field"] == "path"
    assert f"{plain} is not a git repository" in r.json()["detail"]
    assert runtime.store.read_stream(PROJECTS_STREAM) == before


def test_a_launch_with_a_project_pins_root_commit_branch_and_dirty_flag(client, runtime, tokens, repo):
    admin = bearer(tokens["admin"])
    client.post("/api/projects", json={"project_id": "demo", "path": str(repo.root)}, headers=admin)
    r = client.post("/api/runs", json={"flow": "api-gate", "question": "Ship it?", "project_id": "demo"},
                    headers=bearer(tokens["operator"]))
    assert r.status_code == 201, r.text
    launched = runtime.store.read_stream(stream_of(r.json()["run_id"]))[0]
    assert launched.type == "RunLaunched" and launched.data["project_id"] == "demo"
    pinned = launched.data["workspace"]
    assert pinned == {"project_id": "demo", "root": str(repo.root.resolve()), "commit": repo.head,
                      "branch": "main", "dirty": True}  # the demo repository has an untracked file


def test_a_launch_naming_an_unknown_project_is_a_422_naming_it_and_appends_nothing(client, runtime, tokens):
    head = runtime.store.head()
    r = client.post("/api/runs", json={"flow": "api-gate", "question": "Ship it?", "project_id": "nosuch"},
                    headers=bearer(tokens["operator"]))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"].endswith("/unknown-project") and body["field"] == "project_id"
    assert "unknown project 'nosuch'" in body["detail"]
    # Earlier runs may still move; this refusal launched nothing.
    assert not [r for r in runtime.store.read_all(after=head) if r.type == "RunLaunched"]


def test_a_launch_pins_the_commit_of_that_moment(client, runtime, tokens, tmp_path):
    repo = make_repo(tmp_path)
    admin = bearer(tokens["admin"])
    client.post("/api/projects", json={"project_id": "moving", "path": str(repo.root)}, headers=admin)
    git(repo.root, "checkout", "-q", "-b", "topic")
    git(repo.root, "add", "notes.txt")
    git(repo.root, "commit", "-q", "-m", "notes")
    new_head = git(repo.root, "rev-parse", "HEAD").strip()
    r = client.post("/api/runs", json={"flow": "api-gate", "question": "Ship it?", "project_id": "moving"},
                    headers=bearer(tokens["operator"]))
    pinned = runtime.store.read_stream(stream_of(r.json()["run_id"]))[0].data["workspace"]
    assert (pinned["commit"], pinned["branch"], pinned["dirty"]) == (new_head, "topic", False)


def test_an_admin_removes_a_project_a_launch_naming_it_is_refused_and_a_pinned_run_keeps_its_pin(
        client, runtime, tokens, tmp_path):
    repo = make_repo(tmp_path)
    admin, operator = bearer(tokens["admin"]), bearer(tokens["operator"])
    client.post("/api/projects", json={"project_id": "leaving", "path": str(repo.root)}, headers=admin)
    pinned = client.post("/api/runs", json={"flow": "api-gate", "question": "Ship it?", "project_id": "leaving"},
                         headers=operator).json()["run_id"]
    refused = client.delete("/api/projects/leaving", headers=operator)
    assert refused.status_code == 403 and refused.json()["role"] == "admin"
    r = client.delete("/api/projects/leaving", params={"reason": "archived"}, headers=admin)
    assert r.status_code == 200, r.text
    (removed,) = [e for e in runtime.store.read_stream(PROJECTS_STREAM) if e.type == "ProjectRemoved"
                  and e.data["project_id"] == "leaving"]
    assert r.json() == {"project_id": "leaving", "position": removed.position}
    assert removed.data["by"] == "prj-admin" and removed.data["reason"] == "archived"
    assert "leaving" not in [p["project_id"] for p in client.get("/api/projects", headers=admin).json()]
    launch = client.post("/api/runs", json={"flow": "api-gate", "question": "Again?", "project_id": "leaving"},
                         headers=operator)
    assert launch.status_code == 422 and launch.json()["field"] == "project_id"
    launched = runtime.store.read_stream(stream_of(pinned))[0].data
    assert launched["workspace"]["root"] == str(repo.root.resolve())  # the run launched before keeps its pin
    assert client.get(f"/api/runs/{pinned}", headers=operator).json()["run"]["project_id"] == "leaving"
    before = runtime.store.read_stream(PROJECTS_STREAM)
    gone = client.delete("/api/projects/leaving", headers=admin)
    assert gone.status_code == 404 and gone.json()["type"].endswith("/unknown-project")
    assert client.delete("/api/projects/Not%20an%20id", headers=admin).status_code == 404
    long = client.delete("/api/projects/demo", params={"reason": "x" * 1001}, headers=admin)
    assert long.status_code == 422 and long.json()["field"] == "reason"
    assert runtime.store.read_stream(PROJECTS_STREAM) == before  # refusals append nothing
