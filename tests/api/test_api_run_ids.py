"""Errors about a run name the run the request named, whatever path found it missing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from tests.api.access import authed_client, issue_tokens


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("run-ids") / "baton.db"
    with Runtime(Settings(db=f"sqlite:///{db}")).start() as rt:
        with authed_client(create_app(rt), issue_tokens(rt.store)["admin"]) as c:
            yield c


@pytest.mark.parametrize("path", ["/api/runs/nope/cancel", "/api/runs/nope/steps/gate/approve",
                                  "/api/runs/nope/steps/gate/reject"])
def test_a_command_for_an_unknown_run_names_the_run(client, path):
    r = client.post(path, json={})
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == "no run 'nope'"
