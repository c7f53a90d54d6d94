"""A baton server for the benchmarks: ``python -m api.http.app`` on a free port, in a process of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def start(settings: Callable[[int], dict[str, str]], timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Spawn the server with no BATON_* setting of this environment and ``settings(port)`` instead; return
    the process and its URL once ``/api/health`` answers 200 (RuntimeError if it exits or takes too long)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(settings(port), BATON_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "api.http.app"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
