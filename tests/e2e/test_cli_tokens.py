"""``baton tokens`` and the first ``baton serve`` of a store, as a person runs them (DESIGN §13)."""

from __future__ import annotations

import getpass
import signal
import socket
import stat
import subprocess

import httpx
import pytest

from baton_cli import Baton
from eventstore import open_store
from tests.e2e.test_cli_commands import read_lines_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def auth_events(b: Baton) -> list:
    with open_store(b.url) as store:
        return store.read_stream("auth")


def test_tokens_in_this_process_are_printed_once_and_recorded_as_a_hash(baton):
    made = baton.ok("tokens", "create", "ana", "--role", "approver")
    token = made.out.strip()
    assert token.startswith("baton_") and "\n" not in token  # stdout is the token alone: TOKEN=$(baton ...)
    assert "shown this once" in made.err and "'ana' (approver)" in made.err
    [issued] = auth_events(baton)
    assert issued.type == "TokenIssued" and issued.data["role"] == "approver"
    assert token not in str(issued.data) and len(issued.data["token_hash"]) == 64
    assert issued.data["by"] == getpass.getuser()  # in this process: the login name, the database trusted
    listed = baton.ok("tokens", "list")
    assert "ana" in listed.out and "approver" in listed.out and token not in listed.out
    assert baton.ok("tokens", "list", "--json").out.count('"name": "ana"') == 1
    taken = baton("tokens", "create", "ana")
    assert taken.code == 2 and "a token named 'ana' already exists" in taken.err
    bad = baton("tokens", "create", "ana", "--role", "root")
    assert bad.code == 2 and "invalid choice: 'root'" in bad.err
    assert "token 'ana' revoked" in baton.ok("tokens", "revoke", "ana").out
    again = baton("tokens", "revoke", "ana")
    assert again.code == 2 and again.err.strip() == "baton: error: no token named 'ana' (tokens: none)"
    assert [e.type for e in auth_events(baton)] == ["TokenIssued", "TokenRevoked"]


def serve(b: Baton, port: int, *flags: str) -> subprocess.Popen:
    return b.popen("serve", "--host", "127.0.0.1", "--port", str(port), *flags)


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_the_first_serve_writes_an_admin_token_file_the_commands_use_and_a_restart_keeps_it(baton):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token_file = baton.cwd / "baton.db.admin-token"
    server = serve(baton, port)
    try:
        lines = read_lines_until(server, lambda line: "Uvicorn running on" in line, stderr=True)
        said = next(line for line in lines if "admin token" in line)
        assert f"first start on this store: an admin token is in {token_file} (readable by you only)" in said
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        admin = token_file.read_text().strip()
        who = httpx.get(url + "/api/session", headers={"Authorization": f"Bearer {admin}"}, timeout=10).json()
        assert (who["name"], who["role"]) == ("admin", "admin")
        assert httpx.get(url + "/api/runs", timeout=10).status_code == 401

        # Commands go through the server with the file's token: as "admin".
        bob = baton.ok("tokens", "create", "bob", "--role", "viewer").out.strip()
        assert auth_events(baton)[-1].data["by"] == "admin"
        refused = baton("launch", "research", "-q", "as bob", BATON_TOKEN=bob)
        assert refused.code == 2 and "POST /api/runs needs the operator role; 'bob' has viewer" in refused.err
        assert "runs (0)" in baton.ok("runs", BATON_TOKEN=bob).out
        baton.ok("tokens", "revoke", "bob")
        gone = baton("runs", BATON_TOKEN=bob)  # refused at once: revoked through this server
        assert gone.code == 2 and "needs a valid token: BATON_TOKEN was refused" in gone.err
    finally:
        stop(server)
    server = serve(baton, port)
    try:
        lines = read_lines_until(server, lambda line: "Uvicorn running on" in line, stderr=True)
        assert any(f"the admin token file is {token_file}" in line for line in lines), lines
        assert [e.data["name"] for e in auth_events(baton) if e.type == "TokenIssued"] == ["admin", "bob"]
        assert token_file.read_text().strip() == admin
    finally:
        stop(server)


def test_insecure_no_auth_warns_on_loopback_and_refuses_any_other_host(baton):
    refused = baton("serve", "--insecure-no-auth", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert refused.err.startswith("baton: error: --insecure-no-auth / BATON_INSECURE_NO_AUTH serves without tokens")
    assert "'0.0.0.0'" in refused.err
    port = free_port()
    server = serve(baton, port, "--insecure-no-auth")
    try:
        lines = read_lines_until(server, lambda line: "Uvicorn running on" in line, stderr=True)
        assert any(line.startswith("baton: WARNING: --insecure-no-auth: no token is asked") for line in lines)
        assert httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=10).status_code == 200
        assert not (baton.cwd / "baton.db.admin-token").exists()  # no token made, none needed
    finally:
        stop(server)


@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_the_variable_turns_auth_off_too(baton, value):
    refused = baton("serve", "--host", "0.0.0.0", "--port", str(free_port()), BATON_INSECURE_NO_AUTH=value)
    assert refused.code == 2 and "loopback" in refused.err


def test_four_eyes_in_this_process_refuses_the_launcher_and_appends_nothing(baton):
    """In this process the person is taken at their word (the database is trusted): the login name, or --by."""
    flows = ("--flows", "tests.api.api_flows")
    run_id = baton.ok(*flows, "launch", "api-four-eyes", "-q", "Ship it?").run_id
    head = baton.head()
    mine = baton(*flows, "approve", run_id, "gate")
    assert mine.code == 2 and "needs four eyes" in mine.err and f"'{getpass.getuser()}' launched it" in mine.err
    assert baton.head() == head
    other = baton.ok(*flows, "approve", run_id, "gate", "--by", "second-pair")
    assert "by second-pair" in other.out
    resumed = next(e for e in baton.events(run_id) if e.type == "StepResumed")
    assert resumed.data["by"] == "second-pair"
