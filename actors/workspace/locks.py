"""Git lock files left behind by a killed process: who holds one, and whether it is stale.

git takes a lock by creating ``<file>.lock`` with ``O_EXCL`` and renames it
over ``<file>`` when done; a process killed in between leaves the ``.lock``
behind and every later git command touching that file fails with "Unable to
create ... .lock: File exists". Removing a lock a **live** git still uses
would let two writers race, so a lock is stale only when no process holds
it. On Linux that is read from ``/proc``:

- a process with the lock file open (``/proc/<pid>/fd/*``) holds it;
- a ``git`` process whose working directory is inside one of the given
  trees may hold it without an open descriptor (git closes the lock's
  descriptor just before the rename, and while hooks run), so it counts too.

Without ``/proc`` (macOS, BSD) nothing can be proven: a lock counts as held
until it is older than ``stale_after_s``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

UNKNOWN_HOLDER = -1
"""Returned as the holder when the system cannot tell (no ``/proc``) and the lock is young."""
DEFAULT_STALE_AFTER_S = 600.0


def holders(lock: Path, trees: Sequence[Path] = (), *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> list[int]:
    """The pids that hold ``lock`` (or may): empty means it is stale and may be removed."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        try:
            age = time.time() - lock.lstat().st_mtime
        except FileNotFoundError:
            return []
        return [] if age > stale_after_s else [UNKNOWN_HOLDER]
    target = os.path.realpath(lock)
    roots = [os.path.realpath(t) for t in trees]
    me = os.getpid()
    found: list[int] = []
    for pid in _pids(proc):
        if pid == me:
            continue
        if _has_open(proc / str(pid), target) or _git_inside(proc / str(pid), roots):
            found.append(pid)
    return found


def _pids(proc: Path) -> Iterable[int]:
    try:
        names = os.listdir(proc)
    except OSError:
        return []
    return [int(n) for n in names if n.isdigit()]


def _has_open(pdir: Path, target: str) -> bool:
    try:
        fds = os.listdir(pdir / "fd")
    except OSError:  # gone, or another user's process
        return False
    for fd in fds:
        try:
            if os.readlink(pdir / "fd" / fd) == target:
                return True
        except OSError:
            continue
    return False


def _git_inside(pdir: Path, roots: Sequence[str]) -> bool:
    if not roots:
        return False
    try:
        comm = (pdir / "comm").read_text().strip()
        if not comm.startswith("git"):
            return False
        cwd = os.readlink(pdir / "cwd")
    except OSError:
        return False
    return any(cwd == r or cwd.startswith(r.rstrip("/") + "/") for r in roots)


def lock_files(git_dirs: Iterable[Path], ref_dir: Path | None = None) -> list[Path]:
    """The ``*.lock`` files directly in each of ``git_dirs`` and anywhere under ``ref_dir``."""
    found: list[Path] = []
    for gd in git_dirs:
        try:
            found += [gd / n for n in os.listdir(gd) if n.endswith(".lock")]
        except OSError:
            continue
    if ref_dir is not None and ref_dir.is_dir():
        for here, _dirs, files in os.walk(ref_dir):
            found += [Path(here) / f for f in files if f.endswith(".lock")]
    return sorted(found)
