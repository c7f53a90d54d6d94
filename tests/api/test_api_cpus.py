"""A server's threads on one CPU, the processes it starts on all (``actors.cpus``, ``BATON_ONE_CPU``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from api.cli import main as cli
from api.settings import Settings, from_env
from tests.api.server import ROOT, ApiServer

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
several = pytest.mark.skipif(len(CPUS) < 2, reason="needs a Linux machine that lets this process use 2 CPUs or more")


def cpus_of(pid: int) -> dict[str, frozenset[int]]:
    """Each thread of ``pid``: the CPUs it may run on (its ``Cpus_allowed_list``, e.g. ``0,2-3``)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus: set[int] = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    first, _, last = part.partition("-")
                    cpus.update(range(int(first), int(last or first) + 1))
                found[task.name] = frozenset(cpus)
    return found


def test_one_cpu_is_on_unless_turned_off_by_its_variable_or_flag():
    assert Settings().one_cpu is True
    assert from_env({}).one_cpu is True
    assert from_env({"BATON_ONE_CPU": "0"}).one_cpu is False
    args = cli.build_parser().parse_args(["serve", "--no-one-cpu"])
    assert args.setting__one_cpu is False


@several
def test_a_pinned_threads_new_threads_share_its_cpu_and_a_process_started_unpinned_gets_every_cpu():
    # in a process of its own: pinning this test's process would hold the rest of the suite to one CPU
    child = textwrap.dedent("""
        import json, os, subprocess, sys, threading
        from actors import cpus
        probe = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
        cpu = cpus.pin()
        seen = {}
        thread = threading.Thread(target=lambda: seen.update(thread=sorted(os.sched_getaffinity(0))))
        thread.start()
        thread.join()
        with cpus.unpinned():
            freed = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
        held = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
        print(json.dumps({"cpu": cpu, "thread": seen["thread"], "after": sorted(os.sched_getaffinity(0)),
                          "freed": json.loads(freed), "held": json.loads(held)}))
    """)
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    got = json.loads(done.stdout)
    assert got["cpu"] in CPUS
    assert got["thread"] == got["after"] == got["held"] == [got["cpu"]]  # threads inherit; unpinned() restores
    assert got["freed"] == CPUS


@several
@pytest.mark.parametrize("one_cpu", ["1", "0"])
def test_a_servers_threads_are_on_one_cpu_unless_told_otherwise(tmp_path, one_cpu):
    with ApiServer(f"sqlite:///{tmp_path / 'cpus.db'}", BATON_ONE_CPU=one_cpu) as server:
        assert server.process is not None
        threads = cpus_of(server.process.pid)
    assert len(threads) > 5  # the runtime's, the engine's and uvicorn's threads, started after the pin
    allowed = set(threads.values())
    assert len(allowed) == 1  # every thread alike
    if one_cpu == "1":
        assert len(allowed.pop()) == 1
    else:
        assert allowed.pop() == frozenset(CPUS)
