"""A server's threads on one CPU; the processes it starts on every CPU.

An approval over HTTP crosses about fifteen thread hand-offs in a server (the
event loop, the orchestrator, the run's actor, the writer, the step's thread,
the projector, the frame hub, back to the loop). Each wakes a thread, and with
the process free to run on every CPU the woken thread mostly ran on another
CPU than its waker: an inter-processor interrupt (a VM exit on a virtual
machine), then the GIL handed between CPUs, for a process that runs Python
on one thread at a time anyway. With every thread on one CPU the same
approvals drain cost ~25% less CPU and ran ~30% faster on SQLite
(docs/PERFORMANCE.md, "Approvals drain: a server's threads on one CPU").

``pin()`` pins the calling thread, so every thread it starts from then on
inherits the one CPU. A process the engine starts (an agent's CLI, a task's
command, git) is started ``unpinned()``: it inherits the CPUs of the thread
that forks it, and gets them all back. Linux only (``os.sched_setaffinity``);
elsewhere both do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_all: frozenset[int] | None = None  # the CPUs the process could use before ``pin``; None: never pinned


def pin() -> int | None:
    """Pin the calling thread (and the threads it starts later) to the CPU it runs on; that CPU.

    None when there is nothing to gain or it cannot be done: one CPU allowed
    already, or no ``sched_setaffinity`` here. Call it before starting threads.
    """
    global _all
    getter, setter = getattr(os, "sched_getaffinity", None), getattr(os, "sched_setaffinity", None)
    if getter is None or setter is None:
        return None
    allowed = frozenset(getter(0))
    if len(allowed) < 2:
        return None
    cpu = _current_cpu()
    if cpu not in allowed:
        cpu = max(allowed)  # (CPU 0 takes most devices' interrupts)
    try:
        setter(0, {cpu})
    except OSError as exc:  # a container's policy: run as before
        log.info("the server's threads stay on every CPU: %s", exc)
        return None
    _all = allowed
    return cpu


@contextlib.contextmanager
def unpinned() -> Iterator[None]:
    """The calling thread on every CPU the process could use before ``pin`` while the block runs: a
    process it starts (fork inherits the forking thread's CPUs) is not held to the server's one."""
    if _all is None:
        yield
        return
    kept = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, _all)
    except OSError:  # a CPU taken away since (a cgroup changed): the child shares the server's
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, kept)


def _current_cpu() -> int | None:
    """The CPU the calling thread runs on now (``/proc/thread-self/stat``, field 39), or None."""
    try:
        stat = Path("/proc/thread-self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None
