"""``baton seal`` and ``baton replay --verify --seal``; the keyed chain through BATON_CHAIN_KEY_FILE."""

from __future__ import annotations

import os
import queue
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
from baton_cli import FIXTURE_FLOWS

pytestmark = pytest.mark.slow  # each `baton` command is a process start (~1-2 s)


def remove_behind_the_back(url: str, where: str) -> None:
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    db.execute("DROP TRIGGER events_refuse_delete")
    db.execute(f"DELETE FROM events WHERE {where}")
    db.commit()
    db.close()


def test_a_seal_printed_then_checked_catches_a_cut_tail(baton):
    run_id = baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?").run_id
    sealed = baton.ok("seal")
    line = sealed.out.strip()
    assert line.startswith(f"baton-seal:{baton.head() - 1}:") and "replay --verify --seal" in sealed.err
    checked = baton.ok("replay", "--verify", "--seal", line)
    assert "the seal holds: the log up to position" in checked.out
    (baton.cwd / "seal.txt").write_text(line + "\n")
    assert baton.ok("replay", "--verify", "--seal", "@seal.txt").code == 0

    last = baton.events(run_id)[-1]  # the run's end, cut along with the seal event recorded after it
    remove_behind_the_back(baton.url, f"position >= {last.position}")
    assert baton.ok("replay", "--verify").code == 0  # the chains alone cannot see a cut tail
    result = baton("replay", "--verify", "--seal", line)
    assert result.code == 1, result.out + result.err
    assert "cut: the seal given covers the log up to position" in result.err
    assert "the log does not verify" in result.err and "Traceback" not in result.err


def test_a_bad_seal_is_a_usage_error(baton):
    baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?")
    result = baton("replay", "--verify", "--seal", "baton-seal:1:2")
    assert result.code == 2 and "a seal looks like baton-seal:HEAD:EVENTS" in result.err
    result = baton("replay", "--seal", baton.ok("seal").out.strip())
    assert result.code == 2 and "use it with --verify" in result.err


def test_the_keyed_chain_needs_its_key_to_verify(baton, tmp_path):
    key = tmp_path / "chain.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    keyed = {"BATON_CHAIN_KEY_FILE": str(key)}
    run_id = baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?", **keyed).run_id
    assert all(e.hash.startswith("3:") for e in baton.events(run_id))
    assert "hash chains intact" in baton.ok("replay", "--verify", **keyed).out
    result = baton("replay", "--verify")
    assert result.code == 1 and "checking them needs the chain key (BATON_CHAIN_KEY_FILE)" in result.err
    key.chmod(0o644)
    result = baton("replay", "--verify", **keyed)
    assert result.code == 2 and "can be read by others than its owner" in result.err and "chmod 600" in result.err


class Output:
    """A running command's stderr lines, read by a thread (select() on a text pipe misses buffered lines)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=lambda: [self.lines.put(line.rstrip("\n")) for line in proc.stderr],
                                        daemon=True)
        self._thread.start()

    def until(self, done: Callable[[str], bool], timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"gave up waiting after {timeout} s; got {self.seen}")
            self.seen.append(line)
            if done(line):
                return line

    def rest(self) -> list[str]:
        self._thread.join(timeout=20)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def serve(baton, interval: str) -> tuple[subprocess.Popen, Output]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = baton.popen("serve", "--host", "127.0.0.1", "--port", str(port), "--seal-interval-s", interval)
    return server, Output(server)


def stop(server: subprocess.Popen) -> None:
    try:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()


def seals(lines: list[str]) -> list[str]:
    return [line.removeprefix(SEALED) for line in lines if line.startswith(SEALED)]


SEALED = "baton: sealed the log: "


def test_serve_seals_on_its_timer_and_at_shutdown(baton):
    baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?")
    server, output = serve(baton, "0.2")
    try:
        timed = output.until(lambda line: line.startswith(SEALED)).removeprefix(SEALED)
        assert baton.ok("replay", "--verify", "--seal", timed).code == 0
    finally:
        stop(server)
    output.rest()
    baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "Anything new?")
    server, output = serve(baton, "0")  # no timer: the shutdown seal only
    try:
        output.until(lambda line: "Uvicorn running on" in line)
        assert seals(output.seen) == []
    finally:
        stop(server)
    final = seals(output.rest())
    assert len(final) == 1, output.seen
    assert baton.ok("replay", "--verify", "--seal", final[0]).code == 0
