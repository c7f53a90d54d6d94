"""A real baton server in a subprocess (``python -m api.http.app``), and a small SSE reader.

    with ApiServer(db_url) as server:
        httpx.get(server.url + "/api/health")
        httpx.get(server.url + "/api/runs", auth=server.auth)            # as admin
        httpx.post(server.url + "/api/runs", json=..., auth=server.auth_as("operator"))

Access is on, as in production: the server writes its first admin token to
the admin token file (beside a SQLite store, or ``BATON_TOKEN_FILE``), and
the fixture reads it there, then makes one token per role through the API
(``tokens``: role -> token).

The port is a free one picked here (bind to 0, read it, close): uvicorn's
own port-0 report is not easy to read. Readiness is waited for on the
server's own word (uvicorn's "Uvicorn running on" line, once it listens),
read from its output by a thread, with a timeout; /api/health then confirms.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(db_url: str, port: int, **extra: str) -> dict[str, str]:
    """The environment of a test server: offline agents, paced so deltas stream over time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update({
        "BATON_DB": db_url,
        "BATON_AGENT": "offline",
        "BATON_OFFLINE_DELAY_S": "0.2",
        "BATON_FLOWS": "tests.api.api_flows",
        "BATON_HOST": "127.0.0.1",
        "BATON_PORT": str(port),
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


ROLES = ("viewer", "operator", "approver", "admin")


class Bearer(httpx.Auth):
    """httpx auth sending ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def token_file_of(db_url: str) -> Path:
    """Where ``baton serve`` writes the admin token of ``db_url`` (as ``ApiServer`` runs it)."""
    from api.settings import Settings

    return Settings(db=db_url).admin_token_file()


def _token_file_for(db_url: str) -> Path:
    """A token file of this store's own for a server whose store has no file to sit beside (PostgreSQL)."""
    import hashlib

    name = hashlib.sha256(db_url.encode()).hexdigest()[:16]
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"baton-test-tokens-{name}" / "admin-token"


class ApiServer:
    """``python -m api.http.app`` on a free port, stopped (SIGINT, then kill) on exit.

    ``tokens`` maps each role to a token of it (made at the first start on its
    store: the admin's from the token file, the others through the API);
    ``auth`` is the admin's, ``auth_as(role)`` another's.
    """

    def __init__(self, db_url: str, *, start_timeout: float = 30.0, preexec_fn: Any = None, port: int = 0,
                 **env: str) -> None:
        self.db_url = db_url
        self.port = port or free_port()  # a given port: a server started again where its clients knew it
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        extra = {} if db_url.startswith("sqlite") else {"BATON_TOKEN_FILE": str(_token_file_for(db_url))}
        self.env = server_env(db_url, self.port, **{**extra, **env})
        self.token_file = Path(self.env["BATON_TOKEN_FILE"]) if "BATON_TOKEN_FILE" in self.env else token_file_of(
            db_url)
        self.preexec_fn = preexec_fn  # run in the child before it starts (e.g. to lower its open-files limit)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"baton-api-test-{self.port}.log"
        self.tokens: dict[str, str] = {}

    @property
    def auth(self) -> Bearer:
        """The admin's bearer auth (every right)."""
        return self.auth_as("admin")

    def auth_as(self, role: str) -> Bearer:
        """A bearer auth of ``role``."""
        return Bearer(self.tokens[role])

    def headers(self, role: str = "admin") -> dict[str, str]:
        """The Authorization header of ``role``."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def _make_tokens(self) -> None:
        """The admin token from the file the server wrote; one more per role through the API."""
        if "BATON_INSECURE_NO_AUTH" in self.env or self.tokens:  # no auth, or restarted: its tokens are valid
            return
        admin = self.token_file.read_text().strip()
        self.tokens = {"admin": admin}
        for role in ROLES[:-1]:
            r = httpx.post(self.url + "/api/tokens", json={"name": f"test-{role}-{self.port}", "role": role},
                           auth=Bearer(admin), timeout=10.0)
            assert r.status_code == 201, r.text
            self.tokens[role] = r.json()["token"]

    def __enter__(self) -> ApiServer:
        self._log = open(self.log_path, "wb")
        self._listening = threading.Event()
        self.process = subprocess.Popen([sys.executable, "-m", "api.http.app"], cwd=ROOT, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        preexec_fn=self.preexec_fn)
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()
        # Set when the server listens, and also when its output ends (it exited): no wait outlives it.
        if not self._listening.wait(self.start_timeout):
            self.__exit__()
            raise RuntimeError(f"the server did not listen within {self.start_timeout} s:\n{self.log()}")
        try:
            healthy = httpx.get(self.url + "/api/health", timeout=5.0).status_code == 200
        except httpx.TransportError:
            healthy = False
        if not healthy:
            self.__exit__()
            code = self.process.returncode
            raise RuntimeError(f"the server exited with {code}:\n{self.log()}" if code is not None
                               else f"the server listens but /api/health does not answer 200:\n{self.log()}")
        self._make_tokens()
        return self

    def _copy_output(self) -> None:
        """Copy the server's output to its log file; say when it listens, and when the output ends."""
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()
            if b"Uvicorn running on" in line:
                self._listening.set()
        try:
            self.process.wait(10)  # EOF: the server is exiting (before listening, or after)
        finally:
            self._listening.set()

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(10)
        self._log.close()

    def sigterm(self, wait_s: float = 30.0) -> tuple[int | None, float]:
        """Send SIGTERM; the exit code (None: still running after ``wait_s``) and the seconds it took."""
        assert self.process is not None
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - sent

    def log(self) -> str:
        """What the server printed so far."""
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Decode a text/event-stream response into ``{"id", "event", "data"}`` dicts (comments skipped)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield {"id": int(fields["id"]) if "id" in fields else None, "event": fields.get("event"),
                       "data": json.loads(fields["data"])}
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields[name] = value[1:] if value.startswith(" ") else value


def is_terminal(frame: dict[str, Any]) -> bool:
    """The run's last frame: a flow_run_step_updated carrying a terminal run_status."""
    return (frame.get("type") == "flow_run_step_updated" and frame.get("step_id") is None
            and frame.get("run_status") in ("completed", "failed", "rejected", "cancelled"))
