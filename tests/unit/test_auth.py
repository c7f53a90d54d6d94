"""flows.auth: roles, the token fold and decisions, the access rules, and four eyes in ``resume``."""

from __future__ import annotations

import msgspec
import pytest

from flows import Flow, approval, code
from flows.auth import (
    ANONYMOUS,
    ROLES,
    ROUTE_ROLES,
    Forbidden,
    FourEyesRefused,
    IdentityMismatch,
    InvalidTokenName,
    Principal,
    Role,
    TokenExists,
    TokenIssued,
    TokenRevoked,
    Unauthenticated,
    UnknownRole,
    UnknownToken,
    authenticate,
    check_access,
    check_identity,
    fold,
    issue,
    revoke,
    token_hash,
)
from flows.decide import complete, decide, resume
from flows.events import Event, RunLaunched, RunStarted
from flows.model import FlowSnapshot, StepSpec
from flows.state import RunState, evolve

TOKEN = "baton_" + "a" * 43


def test_roles_nest_viewer_operator_approver_admin() -> None:
    order = [Role(name) for name in ROLES]
    assert order == [Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN]
    for i, have in enumerate(order):
        assert [have.allows(needed) for needed in order] == [j <= i for j in range(len(order))]


def test_each_route_needs_the_role_the_design_gives_it() -> None:
    assert {name for name, role in ROUTE_ROLES.items() if role is None} == {
        "console", "static", "health", "login", "logout"}
    assert ROUTE_ROLES["launch"] is ROUTE_ROLES["cancel"] is Role.OPERATOR
    assert ROUTE_ROLES["approve"] is ROUTE_ROLES["reject"] is Role.APPROVER
    assert {ROUTE_ROLES[n] for n in ("list_tokens", "create_token", "revoke_token")} == {Role.ADMIN}
    assert {ROUTE_ROLES[n] for n in ("list_runs", "get_run", "run_events", "run_report", "stream", "ws",
                                     "plan", "flows", "session", "openapi")} == {Role.VIEWER}


def test_issue_and_revoke_fold_into_the_registry_of_valid_tokens() -> None:
    registry = fold(issue(fold([]), "ana", "approver", token_hash(TOKEN), by="root", now=5.0))
    assert registry.version == 1
    ana = registry.get("ana")
    assert (ana.role, ana.issued_by, ana.issued_at) == (Role.APPROVER, "root", 5.0)
    assert ana.token_hash == token_hash(TOKEN) and TOKEN not in msgspec.json.encode(ana).decode()
    registry = fold(revoke(registry, "ana", by="root", now=6.0), registry)
    assert registry.tokens == {} and registry.version == 2
    with pytest.raises(UnknownToken, match="no token named 'ana' \\(tokens: none\\)"):
        revoke(registry, "ana")


def test_issue_refuses_a_bad_name_an_unknown_role_and_a_live_name() -> None:
    registry = fold([TokenIssued(name="ana", role="viewer", token_hash="h")])
    with pytest.raises(InvalidTokenName):
        issue(registry, "ana smith", "viewer", "h2")
    with pytest.raises(InvalidTokenName):
        issue(registry, "", "viewer", "h2")
    with pytest.raises(UnknownRole, match="roles are viewer, operator, approver, admin"):
        issue(registry, "bo", "root", "h2")
    with pytest.raises(TokenExists):
        issue(registry, "ana", "admin", "h2")
    # A revoked name may be given again (to a new token).
    registry = fold([TokenRevoked(name="ana")], registry)
    assert issue(registry, "ana", "admin", "h2")[0].role == "admin"


def test_events_of_a_later_version_grant_nothing_but_count() -> None:
    """A role this version does not know is left out, not guessed; an unknown event changes nothing."""
    registry = fold([TokenIssued(name="x", role="superuser", token_hash="h"), Event()])
    assert registry.tokens == {} and registry.version == 2


def test_authenticate_finds_a_token_by_its_hash_and_nothing_else() -> None:
    registry = fold([TokenIssued(name="ana", role="operator", token_hash=token_hash(TOKEN))])
    index = registry.by_hash()
    principal = authenticate(index, TOKEN)
    assert principal == Principal(name="ana", role=Role.OPERATOR, via="token", token_hash=token_hash(TOKEN))
    assert authenticate(index, TOKEN[:-1] + "b") is None
    assert authenticate(index, token_hash(TOKEN)) is None  # the hash itself opens nothing
    assert authenticate(index, "") is None


def test_check_access_is_401_without_a_principal_and_403_naming_the_role_needed() -> None:
    viewer = Principal(name="vi", role=Role.VIEWER)
    check_access(None, None, "GET /api/health")
    check_access(viewer, Role.VIEWER, "GET /api/runs")
    with pytest.raises(Unauthenticated, match="GET /api/runs needs a token"):
        check_access(None, Role.VIEWER, "GET /api/runs")
    with pytest.raises(Forbidden) as info:
        check_access(viewer, Role.OPERATOR, "POST /api/runs")
    assert info.value.needed is Role.OPERATOR
    assert str(info.value) == "POST /api/runs needs the operator role; 'vi' has viewer"
    check_access(ANONYMOUS, Role.ADMIN, "anything")  # --insecure-no-auth: everyone is an admin


def test_a_claimed_identity_must_be_the_principal() -> None:
    ana = Principal(name="ana", role=Role.APPROVER)
    check_identity("by", "", ana)
    check_identity("by", "ana", ana)
    with pytest.raises(IdentityMismatch, match="by is 'bo', but this request comes from 'ana'"):
        check_identity("by", "bo", ana)


# -- four eyes in flows.decide.resume -------------------------------------------------------------


def gate_state(*, four_eyes: bool, launched_by: str = "ana") -> RunState:
    flow = Flow("f", [code("work", fn=print), approval("gate", prompt="Ship?", deps=["work"], four_eyes=four_eyes)])
    state = RunState()
    for position, event in enumerate([
        RunLaunched(run_id="r1", flow="f", snapshot=flow.snapshot("medium"), launched_by=launched_by),
        RunStarted(run_id="r1"),
    ], 1):
        state = evolve(state, event, position)
    # work runs and completes; the gate pauses
    for event in decide(state, 1.0).events:
        state = evolve(state, event, state.version + 1)
    for event in complete(state, "work", 1, "done", 2.0):
        state = evolve(state, event, state.version + 1)
    for event in decide(state, 3.0).events:
        state = evolve(state, event, state.version + 1)
    assert state.steps["gate"].status == "paused"
    return state


def test_four_eyes_refuses_the_launcher_and_an_unnamed_decider_and_lets_another_decide() -> None:
    state = gate_state(four_eyes=True)
    for decision in ("approved", "rejected"):
        with pytest.raises(FourEyesRefused) as info:
            resume(state, "gate", decision, 4.0, by="ana")
        assert "needs four eyes" in str(info.value) and "'ana' launched it" in str(info.value)
    with pytest.raises(FourEyesRefused, match="names nobody"):
        resume(state, "gate", "approved", 4.0, by="")
    [resumed] = resume(state, "gate", "approved", 4.0, by="bo")
    assert resumed.by == "bo"


def test_without_four_eyes_the_launcher_may_decide() -> None:
    [resumed] = resume(gate_state(four_eyes=False), "gate", "approved", 4.0, by="ana")
    assert resumed.by == "ana"


def test_four_eyes_is_pinned_in_the_snapshot_and_old_snapshots_decode_without_it() -> None:
    flow = Flow("f", [approval("gate", prompt="Ship?", four_eyes=True)])
    snapshot = flow.snapshot("medium")
    assert snapshot.step("gate").four_eyes is True
    old = msgspec.json.decode(b'{"name": "f", "steps": [{"id": "gate", "kind": "approval"}]}', type=FlowSnapshot)
    assert old.steps[0] == StepSpec(id="gate", kind="approval") and old.steps[0].four_eyes is False
    assert b"four_eyes" not in msgspec.json.encode(Flow("g", [approval("gate", prompt="x")]).snapshot("medium"))
