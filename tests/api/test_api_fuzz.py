"""A schema-driven fuzz of the whole API (schemathesis) against a real app, as each role and as nobody.

Every operation of ``/api/openapi.json`` gets requests generated from its
schema, sent through the app (a real runtime on SQLite, offline agents) with
a token of each role, and with none. What must hold, for every request:

- no server error (5xx), and every answer (status, media type, headers and
  body) is one the document describes for that operation;
- a principal whose role does not reach the operation's
  (``flows.auth.ROUTE_ROLES``) never gets a 2xx, and no principal at all
  gets 401 wherever a role is needed.

Bounded (``EXAMPLES`` per operation and principal, derandomized) so the
whole file runs in well under a minute. The frame stream and the WebSocket
are left out: an SSE answer does not end, and a WebSocket is not an HTTP
exchange the tool can check; their access is asserted in test_api_access.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.http.app import create_app
from api.runtime import Runtime
from api.settings import Settings
from flows.auth import ROUTE_ROLES, Role
from tests.api.access import bearer, issue_tokens

EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20}  # per operation: ~35 s on an idle machine
PRINCIPALS = ("nobody", "viewer", "operator", "approver", "admin")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, str]]]:
    db = tmp_path_factory.mktemp("fuzz") / "baton.db"
    # schemathesis sends `Host: testserver`: a name this server is told it has, as a deployment would.
    settings_ = Settings(db=f"sqlite:///{db}", flows=("tests.api.api_flows",), allowed_hosts=("testserver",),
                         max_body_bytes=16 * 1024)
    runtime = Runtime(settings_).start()
    try:
        yield runtime, issue_tokens(runtime.store, "fuzz-")
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def operations(fuzzed: tuple[Runtime, dict[str, str]]) -> list[Any]:
    """The operations of the app's own OpenAPI document (fetched from the app, as a viewer)."""
    runtime, tokens = fuzzed
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(runtime),
                                            headers=bearer(tokens["viewer"]))
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.definition.raw["operationId"] not in ("stream", "ws")]


def test_the_fuzz_reaches_every_operation_but_the_streams(operations):
    ids = {op.definition.raw["operationId"] for op in operations}
    # schemathesis leaves out the document it was loaded from (/api/openapi.json); the console's page and
    # files are not in the API's document.
    assert ids == set(ROUTE_ROLES) - {"stream", "ws", "openapi", "console", "static"}


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_server_error_no_undocumented_answer_no_success_without_the_role(operations, fuzzed, mode):
    """Each generated request is sent once as each principal (the same request: only the token differs).

    Positive requests fit the document; negative ones break it somewhere (a wrong type, a missing
    field, a value out of range) and must be refused with an answer the document describes.
    """
    _, tokens = fuzzed
    for operation in operations:
        try:
            fuzz(operation, mode, tokens)
        except Unsatisfiable:  # nothing of this operation can be made invalid (no parameter, no body)
            assert mode is GenerationMode.NEGATIVE, operation.label


def fuzz(operation: Any, mode: GenerationMode, tokens: dict[str, str]) -> None:
    """Hypothesis over one operation's requests; raises what a check found."""
    needed = ROUTE_ROLES[operation.definition.raw["operationId"]]

    @settings(max_examples=EXAMPLES[mode], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def each(case: Any) -> None:
        for principal in PRINCIPALS:
            headers = bearer(tokens[principal]) if principal != "nobody" else {}
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            if needed is None:
                continue
            if principal == "nobody":
                assert response.status_code == 401, (operation.label, response.status_code)
            elif not Role(principal).allows(needed):
                assert response.status_code >= 400, (operation.label, principal, response.status_code)

    each()
