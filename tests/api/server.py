"""A real baton server in a subprocess (``python -m api.http.app``), and a small SSE reader.

    with ApiServer(db_url) as server:
        httpx.get(server.url + "/api/health")

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


class ApiServer:
    """``python -m api.http.app`` on a free port, stopped (SIGINT, then kill) on exit."""

    def __init__(self, db_url: str, *, start_timeout: float = 30.0, preexec_fn: Any = None, **env: str) -> None:
        self.db_url = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.env = server_env(db_url, self.port, **env)
        self.preexec_fn = preexec_fn  # run in the child before it starts (e.g. to lower its open-files limit)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"baton-api-test-{self.port}.log"

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
