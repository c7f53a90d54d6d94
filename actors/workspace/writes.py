"""Atomic, confined writes: what ``write_file`` and ``edit_file`` do to a task's worktree (§12).

A write never goes through a symlink, never into ``.git`` (the directory, or
a worktree's ``.git`` file), never outside the root: the parent directory
is opened from the root without following a symlink
(:meth:`~actors.workspace.confine.Confinement.open_parent`), and the file
is never opened for writing by its name at all. Instead:

1. a temp file ``.baton-write-<random>.tmp`` is created **in the same
   directory** with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (it cannot be a
   pre-planted symlink or hard link);
2. the content is written and ``fsync``-ed;
3. it is renamed over the target (``renameat`` on the same directory
   descriptor: atomic on POSIX), and the directory is ``fsync``-ed.

Why: a process killed mid-write (kill -9, OOM, power) leaves the old file
whole or the new one whole, never half of one; the only trace is a temp
file, which reconciliation sweeps (its name is reserved: tools refuse to
write one). A rename also replaces a symlink or a hard link *itself*
instead of writing through it into a file outside the worktree, which an
``open(O_TRUNC)`` of an existing name would do for a hard link.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from dataclasses import dataclass

from actors.workspace.confine import Confinement
from actors.workspace.errors import PathRefused, Rule, WorkspaceError

TEMP_PREFIX = ".baton-write-"
TEMP_SUFFIX = ".tmp"  # git.TEMP_GLOB names them too: `commit` never stages one
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of this module's temp files (swept by reconciliation)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


class EditRefused(WorkspaceError):
    """``edit_file``'s ``old`` text does not occur exactly once (or the edit changes nothing)."""

    def __init__(self, reason: str, detail: str) -> None:
        """``reason`` is the tool error's name: ``old-not-found``, ``old-not-unique``, ``no-change``."""
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Written:
    """What a write did."""

    path: str
    """Normalised, relative to the root."""
    bytes: int
    created: bool


def write_file(confinement: Confinement, path: str, data: bytes) -> Written:
    """Replace (or create) the file at ``path`` with ``data``, atomically; parent directories are made.

    Raises :class:`PathRefused` for every confinement rule, and
    ``too-large`` when ``data`` is over the confinement's file cap.
    """
    cap = confinement.max_file_bytes
    if len(data) > cap:
        raise PathRefused(Rule.TOO_LARGE, path, f"{len(data):,} bytes; the cap is {cap:,}")
    _refuse_reserved(path)
    dir_fd, name, norm = confinement.open_parent(path, make_dirs=True)
    try:
        mode, exists = _target_mode(dir_fd, name, path)
        _replace(dir_fd, name, data, mode)
    finally:
        os.close(dir_fd)
    return Written(path=norm, bytes=len(data), created=not exists)


def edit_file(confinement: Confinement, path: str, old: str, new: str) -> tuple[Written, int]:
    """Replace the one occurrence of ``old`` in the text file at ``path`` by ``new``, atomically.

    Returns what was written and the 1-based line where the edit starts.
    Raises :class:`EditRefused` when ``old`` occurs zero times or more than
    once (naming the lines), :class:`PathRefused` for the path rules (the
    file must exist, be text and within the cap, before and after).
    """
    if old == new:
        raise EditRefused("no-change", "old and new are the same text")
    _refuse_reserved(path)
    dir_fd, name, norm = confinement.open_parent(path, make_dirs=False)
    try:
        text, mode = _read_text(confinement, dir_fd, name, path)
        count = text.count(old)
        if count == 0:
            raise EditRefused("old-not-found", f"the old text does not occur in {path}; read the file and copy "
                                               "the text exactly (whitespace included)")
        if count > 1:
            lines = _lines_of(text, old)
            shown = ", ".join(map(str, lines[:20])) + (" ..." if len(lines) > 20 else "")
            raise EditRefused("old-not-unique", f"the old text occurs {count} times in {path} (at lines {shown}); "
                                                "include more surrounding text so it occurs once")
        at = text.index(old)
        data = (text[:at] + new + text[at + len(old):]).encode("utf-8", errors="surrogateescape")
        if len(data) > confinement.max_file_bytes:
            raise PathRefused(Rule.TOO_LARGE, path, f"the edit makes it {len(data):,} bytes; the cap is "
                                                    f"{confinement.max_file_bytes:,}")
        _replace(dir_fd, name, data, mode)
    finally:
        os.close(dir_fd)
    return Written(path=norm, bytes=len(data), created=False), text.count("\n", 0, at) + 1


def _refuse_reserved(path: str) -> None:
    if is_temp_name(path.rsplit("/", 1)[-1]):
        raise PathRefused(Rule.INVALID_PATH, path, f"names starting {TEMP_PREFIX!r} are reserved for baton's "
                                                   "own temp files")


def _target_mode(dir_fd: int, name: str, shown: str) -> tuple[int, bool]:
    """The mode to give the new file (the old one's, else 0o644) and whether one exists."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0o644, False
    if stat.S_ISLNK(st.st_mode):
        raise PathRefused(Rule.SYMLINK_WRITE, shown, "writes never go through a symlink")
    if stat.S_ISDIR(st.st_mode):
        raise PathRefused(Rule.NOT_A_FILE, shown, "a directory")
    if not stat.S_ISREG(st.st_mode):
        raise PathRefused(Rule.NOT_A_FILE, shown, "not a regular file")
    return stat.S_IMODE(st.st_mode), True


def _read_text(confinement: Confinement, dir_fd: int, name: str, shown: str) -> tuple[str, int]:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise PathRefused(Rule.NOT_FOUND, shown, "no such file (edit_file changes existing files; "
                                                 "use write_file to create one)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise PathRefused(Rule.SYMLINK_WRITE, shown, "writes never go through a symlink") from None
        raise PathRefused(Rule.NOT_A_FILE, shown, os.strerror(exc.errno or 0)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(Rule.NOT_A_FILE, shown, "not a regular file")
        cap = confinement.max_file_bytes
        if st.st_size > cap:
            raise PathRefused(Rule.TOO_LARGE, shown, f"{st.st_size:,} bytes; the cap is {cap:,}")
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if b"\0" in data:
        raise PathRefused(Rule.BINARY, shown, "a NUL byte: not a text file")
    try:
        return data.decode("utf-8"), stat.S_IMODE(st.st_mode)
    except UnicodeDecodeError:
        raise PathRefused(Rule.BINARY, shown, "not valid UTF-8 text") from None


def _replace(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a temp file in ``dir_fd`` and rename it over ``name``; the temp never survives an error."""
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}"
    fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    os.fsync(dir_fd)


def _lines_of(text: str, needle: str) -> list[int]:
    lines: list[int] = []
    start = 0
    while (at := text.find(needle, start)) != -1:
        lines.append(text.count("\n", 0, at) + 1)
        start = at + 1
    return lines
