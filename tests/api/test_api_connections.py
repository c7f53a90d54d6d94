"""Client load cannot take the server down, nor starve the engine of file handles.

1,100 clients each send half a request and stall (headers never finished,
or a body that never comes) to a server whose open-files limit is 1024. The
server must keep answering health, every run in flight must still finish
(none may fail on "Too many open files"), and the connections it holds stay
under its cap, with the stalled ones closed after the header/body timeout.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.server import ApiServer

FD_LIMIT = 1024
CLIENTS = 1100
HALF_HEADERS = b"GET /api/health HTTP/1.1\r\nHost: baton\r\nX-Slow: "
HALF_BODY = (b"POST /api/runs HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\n"
             b"Content-Length: 400\r\n\r\n{\"flow\": \"api-chain\", ")


def limit_open_files() -> None:  # in the server's process, before it starts
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stall(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each send half a request; those the server would not take are closed."""
    held = []
    for i in range(count):
        s = socket.socket()
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_BODY if i % 2 else HALF_HEADERS)
        except OSError:
            s.close()
            continue
        held.append(s)
    return held


@pytest.mark.slow
def test_half_sent_requests_leave_health_and_the_runs_alone(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < CLIENTS + 200:
        pytest.skip(f"this test needs {CLIENTS + 200} open files of its own; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, CLIENTS + 200), hard))
    db = Path(tmp_path) / "baton.db"
    try:
        with ApiServer(f"sqlite:///{db}", preexec_fn=limit_open_files, BATON_OFFLINE_DELAY_S="1",
                       BATON_HEADER_TIMEOUT_S="5", BATON_BODY_TIMEOUT_S="5") as server:
            assert server.process is not None
            run_ids = []
            for i in range(4):
                r = httpx.post(f"{server.url}/api/runs", json={"flow": "api-chain", "question": f"load {i}"},
                               auth=server.auth)
                assert r.status_code == 201, r.text
                run_ids.append(r.json()["run_id"])
            held = stall(server.port, CLIENTS)
            try:
                fds_under_load = open_fds(server.process.pid)
                began = time.monotonic()
                health = httpx.get(f"{server.url}/api/health", timeout=10)
                health_s = time.monotonic() - began
                assert health.status_code == 200, health.text
                assert health_s < 2, f"health took {health_s:.1f} s under {CLIENTS} stalled clients"
                deadline = time.monotonic() + 60
                while True:
                    runs = [httpx.get(f"{server.url}/api/runs/{r}", timeout=10, auth=server.auth).json()
                            for r in run_ids]
                    if all(run["run"]["status"] in ("completed", "failed") for run in runs):
                        break
                    assert time.monotonic() < deadline, [run["run"]["status"] for run in runs]
                    time.sleep(0.2)
                assert [run["run"]["status"] for run in runs] == ["completed"] * len(run_ids), runs
                assert fds_under_load < FD_LIMIT - 100, f"the server held {fds_under_load} files of {FD_LIMIT}"
                # The stalled clients are dropped after the header and body timeouts.
                deadline = time.monotonic() + 20
                while open_fds(server.process.pid) > 200:
                    assert time.monotonic() < deadline, f"{open_fds(server.process.pid)} files still open"
                    time.sleep(0.2)
                print(f"CONNECTIONS: {CLIENTS} stalled clients; server files open under load {fds_under_load} "
                      f"(limit {FD_LIMIT}); health answered in {health_s * 1000:.0f} ms")
            finally:
                for s in held:
                    s.close()
            assert "Too many open files" not in server.log()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_guard_runs_over_httptools_when_it_is_installed_else_h11(monkeypatch):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from api.http.connections import ConnectionGuard, guarded_protocol

    guard = ConnectionGuard(10, 1.0, 1.0)
    httptools = pytest.importorskip("uvicorn.protocols.http.httptools_impl")  # a dependency: installed
    assert issubclass(guarded_protocol(guard), httptools.HttpToolsProtocol)
    assert guarded_protocol(guard).guard is guard
    monkeypatch.setitem(sys.modules, "uvicorn.protocols.http.httptools_impl", None)  # as if absent
    fallback = guarded_protocol(guard)
    assert issubclass(fallback, H11Protocol) and fallback.guard is guard
