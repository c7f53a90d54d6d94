"""Property: any Unicode text, through launch -> log -> projection -> API, on both backends.

Text is drawn from every plane, control characters and lone surrogates
included; a body sends it as raw UTF-8 where it can be encoded, and as
``\\uXXXX`` escapes otherwise (or when drawn so), which is how JSON carries a
lone surrogate. Either the launch is refused, 422 naming the field that
holds NUL or a lone surrogate (and nothing is appended), or it is 201 and
the API gives back the very same text once the run is projected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from flows.text import find_unstorable
from tests.api.access import authed_client, issue_tokens
from tests.pg import database_of_its_own

JSON_BODY = {"Content-Type": "application/json"}  # every body below is JSON

# Every code point (planes 0-16, controls, lone surrogates) ...
CHARACTERS = st.characters(codec=None, categories=None)
# ... and the edges of the rule, spliced in often enough that refusals are not a rarity.
EDGES = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\x01", "\x1f", "\x7f", "\u2028",
                         "\ufeff", "\ufffd", "\U0001F600", "\U0010FFFF", "\\", '"'])


def any_text(min_size: int = 0) -> st.SearchStrategy[str]:
    plain = st.text(alphabet=CHARACTERS, min_size=min_size, max_size=40)
    spliced = st.tuples(plain, EDGES, plain).map("".join)
    return st.one_of(plain, spliced)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(request, tmp_path_factory) -> Iterator[tuple[TestClient, Runtime]]:
    with database_of_its_own(request.param, tmp_path_factory.mktemp("unicode")) as url:
        with Runtime(Settings(db=url, flows=("tests.api.api_flows",), max_active_runs=0)).start() as rt:
            with authed_client(create_app(rt), issue_tokens(rt.store)["admin"], headers=JSON_BODY) as c:
                yield c, rt


def expected_refusal(question: str, project_id: str, notes: str) -> str | None:
    """The field a launch must be refused for, in the order the launch checks them; None: accepted.

    A project must be registered (DESIGN §11): any other non-empty id is refused, last.
    """
    for field, text in (("question", question), ("project_id", project_id), ("inputs.notes", notes)):
        if find_unstorable(text) is not None:
            return field
    if not question.strip():
        return "question"
    return "project_id" if project_id else None


def body_of(fields: dict[str, Any], escaped: bool) -> bytes:
    """The JSON body: escapes only (what a lone surrogate needs), or raw UTF-8 where it can be."""
    text = json.dumps(fields, ensure_ascii=escaped)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON can only carry it escaped
        return json.dumps(fields, ensure_ascii=True).encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(question=any_text(min_size=1), project_id=any_text(), notes=any_text(), escaped=st.booleans())
def test_any_text_is_refused_naming_its_field_or_read_back_the_same(client, question, project_id, notes, escaped):
    c, runtime = client
    fields = {"flow": "api-gate", "question": question, "project_id": project_id, "inputs": {"notes": notes}}
    head = runtime.store.head()
    r = c.post("/api/runs", content=body_of(fields, escaped), headers={"Content-Type": "application/json"})
    refused = expected_refusal(question, project_id, notes)
    event(f"refused: {refused}" if refused else "accepted")
    if refused is not None:
        assert r.status_code == 422, r.text
        assert r.json()["field"] == refused
        # Earlier runs move on meanwhile; no run was launched by this request.
        assert not [e for e in runtime.store.read_all(head) if e.type == "RunLaunched"]
        return
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    detail = c.get(f"/api/runs/{run_id}")  # read-your-writes: the GET waits for the launch's position
    assert detail.status_code == 200, detail.text
    run = detail.json()["run"]
    assert (run["question"], run["project_id"], run["inputs"]) == (
        question, project_id, {"notes": notes, "question": question})
    if project_id:
        listed = c.get("/api/runs", params={"project_id": project_id, "limit": 500}).json()["runs"]
        assert run_id in [row["run_id"] for row in listed]
