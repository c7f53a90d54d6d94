"""Confinement: a tool path may name only what lies inside the workspace root.

Every path a model gives goes through :class:`Confinement`. The rules, each
refused as :class:`PathRefused` naming its :class:`Rule`:

- ``invalid-path``: empty, or holding a NUL byte;
- ``absolute-path``: ``/etc/passwd``;
- ``outside-root``: ``..`` that climbs above the root (``a/../../x``); a
  ``..`` that stays inside (``src/../README.md``) is harmless and allowed;
- ``symlink-out``: any component is a symlink whose target lies outside the
  root (a symlink that stays inside is followed);
- ``git-dir``: anything inside ``.git`` (a directory, or the ``.git`` file of a
  worktree or submodule), at any depth, before or after following symlinks;
- ``binary``: a NUL byte or invalid UTF-8 in the first KiB;
- ``too-large``: a file over the size cap;
- ``not-found``, ``not-a-file``, ``not-a-directory``: honest misses.

Why the two-phase open (TOCTOU): the path is first resolved with
``realpath`` and checked with ``commonpath``; the *resolved* path, which then
contains no symlink, is opened component by component from a descriptor of
the root with ``O_NOFOLLOW``. A directory swapped for a symlink between the
check and the open makes the open fail (and the path is refused) instead of
leading outside. Writes (§12) never follow a symlink at all.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from actors.workspace.errors import PathRefused, Rule, WorkspaceError

SNIFF_BYTES = 1024
"""How much of a file decides whether it is text (NUL byte or invalid UTF-8)."""
DEFAULT_MAX_FILE_BYTES = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in the tree must not block the step.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_DIR_CACHE = 256


@dataclass(frozen=True)
class Resolved:
    """A path that passed the lexical and symlink rules."""

    given: str
    """The path exactly as the caller gave it (for error messages)."""
    rel: str
    """The resolved path relative to the root, ``/``-separated; ``"."`` is the root."""
    real: Path
    """The resolved absolute path."""


def check_relative(path: str) -> str:
    """Apply the rules that need no disk: return the normalised relative path.

    Used directly for paths that need not exist in the work tree (the
    ``path`` of ``git_log`` may name a deleted file) and by every other check
    first. Returns ``"."`` for the root.
    """
    if not path or "\0" in path:
        raise PathRefused(Rule.INVALID_PATH, path, "empty" if not path else "contains a NUL byte")
    if path.startswith("/") or os.path.isabs(path):
        raise PathRefused(Rule.ABSOLUTE_PATH, path, "paths are relative to the workspace root")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise PathRefused(Rule.OUTSIDE_ROOT, path, "it climbs above the workspace root")
    if _in_git_dir(norm):
        raise PathRefused(Rule.GIT_DIR, path, "the .git directory is not readable by tools")
    return norm


def _in_git_dir(rel: str) -> bool:
    # casefold: on a case-insensitive file system `.GIT/config` is `.git/config`.
    return any(part.casefold() == ".git" for part in rel.split("/"))


def is_text(head: bytes) -> bool:
    """Whether a file starting with ``head`` is text: no NUL, valid UTF-8 so far.

    A multi-byte character cut by the end of the sniff window does not make a
    text file look binary.
    """
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only an incomplete character at the very end is forgiven.
        return exc.reason == "unexpected end of data" and exc.end == len(head)
    return True


class Confinement:
    """Resolves and opens paths inside one workspace root, and nowhere else."""

    def __init__(self, root: Path | str, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        """Pin the root by its real path; it must be an existing directory."""
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise WorkspaceError(f"workspace root {root} is not a directory")
        self.root = Path(real)
        self._root = real
        self.max_file_bytes = max_file_bytes

    # -- resolving ----------------------------------------------------------

    def resolve(self, path: str) -> Resolved:
        """Resolve ``path`` against the root, following symlinks that stay inside.

        The target need not exist (the caller's open says ``not-found``).
        """
        norm = check_relative(path)
        real = os.path.realpath(os.path.join(self._root, norm))
        if real != self._root and os.path.commonpath([self._root, real]) != self._root:
            # Lexically inside (checked above), really outside: a symlink did it.
            raise PathRefused(Rule.SYMLINK_OUT, path, "a symlink on the way leads outside the workspace root")
        rel = os.path.relpath(real, self._root).replace(os.sep, "/")
        if _in_git_dir(rel):
            raise PathRefused(Rule.GIT_DIR, path, "it leads into a .git directory")
        return Resolved(given=path, rel=rel, real=Path(real))

    def directory(self, path: str) -> Resolved:
        """Resolve ``path`` and require an existing directory."""
        resolved = self.resolve(path)
        if not resolved.real.exists():
            raise PathRefused(Rule.NOT_FOUND, path, "no such directory")
        if not resolved.real.is_dir():
            raise PathRefused(Rule.NOT_A_DIRECTORY, path, "it is a file; give a directory")
        return resolved

    # -- reading ------------------------------------------------------------

    def read_text(self, path: str) -> str:
        """The text of the file at ``path``, after every rule (binary and size included)."""
        resolved = self.resolve(path)
        with self.walker() as walk:
            data = walk.read(resolved.rel, given=path)
        return data.decode("utf-8", errors="replace")

    @contextmanager
    def walker(self) -> Iterator[Walker]:
        """A :class:`Walker` that caches directory descriptors; closes them on exit."""
        walk = Walker(self._root, self.max_file_bytes)
        try:
            yield walk
        finally:
            walk.close()

    # -- writing (§12) ------------------------------------------------------

    def open_for_write(self, path: str, *, make_dirs: bool = False) -> int:
        """A descriptor open for writing (created or truncated) at ``path``.

        No symlink is followed anywhere on the way (``symlink-write``), so a
        write can never land outside the root, whatever changes on disk.
        Missing parent directories are created only with ``make_dirs``. The
        caller closes the descriptor. The write tools do not use this (they
        write atomically, :mod:`actors.workspace.writes`).
        """
        fd, name, norm = self.open_parent(path, make_dirs=make_dirs)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            try:
                out = os.open(name, flags, 0o644, dir_fd=fd)
            except OSError as exc:
                raise _refusal_on_open(exc, path, write=True, root=self._root, rel=norm) from None
            if not stat.S_ISREG(os.fstat(out).st_mode):
                os.close(out)
                raise PathRefused(Rule.NOT_A_FILE, path, "not a regular file")
            return out
        finally:
            os.close(fd)

    def open_parent(self, path: str, *, make_dirs: bool = False) -> tuple[int, str, str]:
        """``(descriptor of the parent directory, last component, normalised path)`` for a write.

        Every directory on the way is opened from the root's descriptor with
        ``O_NOFOLLOW``: a symlink anywhere (even one that stays inside) is
        refused as ``symlink-write``, so what is created or replaced through
        the returned descriptor lies inside the root whatever changes on disk
        meanwhile. The caller closes the descriptor.
        """
        norm = check_relative(path)
        if norm == ".":
            raise PathRefused(Rule.NOT_A_FILE, path, "the workspace root is a directory")
        *dirs, name = norm.split("/")
        fd = os.open(self._root, _DIR_FLAGS)
        try:
            for part in dirs:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not make_dirs:
                        raise PathRefused(Rule.NOT_FOUND, path, f"no directory {part!r} on the way") from None
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass  # made meanwhile (or a dangling symlink: the open below refuses it)
                    try:
                        nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        raise _refusal_on_open(exc, path, write=True, root=self._root, rel=norm) from None
                except OSError as exc:
                    raise _refusal_on_open(exc, path, write=True, root=self._root, rel=norm) from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, name, norm


class Walker:
    """Opens resolved relative paths from a root descriptor, never following a symlink.

    Directory descriptors are cached (a search opens each directory once, not
    once per file); the cache is bounded so a wide tree cannot exhaust the
    process's descriptors.
    """

    def __init__(self, root: str, max_file_bytes: int) -> None:
        """Open the root; the caller must :meth:`close`."""
        self.max_file_bytes = max_file_bytes
        self._root = root
        self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dirs: dict[str, int] = {}

    def close(self) -> None:
        """Close every descriptor this walker opened."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self._root_fd)

    def _dir_fd(self, rel_dir: str) -> int:
        if not rel_dir:
            return self._root_fd
        fd = self._dirs.get(rel_dir)
        if fd is not None:
            return fd
        parent, _, name = rel_dir.rpartition("/")
        parent_fd = self._dir_fd(parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        if len(self._dirs) >= _DIR_CACHE:
            for old in self._dirs.values():
                if old != parent_fd:
                    os.close(old)
            self._dirs = {k: v for k, v in self._dirs.items() if v == parent_fd}
        self._dirs[rel_dir] = fd
        return fd

    def open(self, rel: str, *, given: str | None = None) -> int:
        """A read descriptor for the regular file at the resolved ``rel``."""
        fd, _ = self._open_regular(rel, rel if given is None else given)
        return fd

    def _open_regular(self, rel: str, shown: str) -> tuple[int, int]:
        """A read descriptor for a regular file and its size."""
        if rel == ".":
            raise PathRefused(Rule.NOT_A_FILE, shown, "the workspace root is a directory")
        parent, _, name = rel.rpartition("/")
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self._dir_fd(parent))
        except OSError as exc:
            raise _refusal_on_open(exc, shown, write=False, root=self._root, rel=rel) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            what = "a directory; list it instead" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise PathRefused(Rule.NOT_A_FILE, shown, what)
        return fd, st.st_size

    def read_bytes(self, rel: str, *, given: str | None = None) -> bytes:
        """The bytes of a regular file within the size cap (text or not)."""
        shown = rel if given is None else given
        fd, size = self._open_regular(rel, shown)
        try:
            if size > self.max_file_bytes:
                raise PathRefused(Rule.TOO_LARGE, shown,
                                  f"{size:,} bytes; the cap is {self.max_file_bytes:,}")
            # One byte more than fstat said: a file that grew since is caught too.
            data = os.read(fd, size + 1)
            if len(data) > size:
                data += _read_up_to(fd, self.max_file_bytes + 1 - len(data))
        finally:
            os.close(fd)
        if len(data) > self.max_file_bytes:
            raise PathRefused(Rule.TOO_LARGE, shown, f"over the cap of {self.max_file_bytes:,} bytes")
        return data

    def read(self, rel: str, *, given: str | None = None) -> bytes:
        """The bytes of a text file within the size cap; refused otherwise."""
        data = self.read_bytes(rel, given=given)
        if not is_text(data[:SNIFF_BYTES]):
            raise PathRefused(Rule.BINARY, rel if given is None else given,
                              "a NUL byte or invalid UTF-8 in its first KiB")
        return data

    def read_many(self, rels: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """Each path with its bytes (within the cap, text or not), or None when it may not be read.

        For search, which skips what it may not read instead of failing (and
        checks for text itself, only in files that can match). The same
        rules as :meth:`read_bytes` in fewer Python steps: this runs once per
        file of the repository (50,000 times on the benchmark), so the
        directory descriptor is looked up once per directory, not per file.
        """
        cap = self.max_file_bytes
        os_open, fstat, read, close, is_reg = os.open, os.fstat, os.read, os.close, stat.S_ISREG
        last_parent: str | None = None
        dir_fd: int | None = None
        for rel in rels:
            parent, _, name = rel.rpartition("/")
            if parent != last_parent:
                last_parent = parent
                try:
                    dir_fd = self._dir_fd(parent)
                except OSError:
                    dir_fd = None
            if dir_fd is None:
                yield rel, None
                continue
            try:
                fd = os_open(name, _FILE_FLAGS, dir_fd=dir_fd)
            except OSError:
                yield rel, None
                continue
            data: bytes | None = None
            try:
                st = fstat(fd)
                size = st.st_size
                if is_reg(st.st_mode) and size <= cap:
                    data = read(fd, size + 1)
                    if len(data) > size:
                        data = None  # grew while read: skip, do not guess
            except OSError:
                data = None
            finally:
                close(fd)
            yield rel, data


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _refusal_on_open(exc: OSError, path: str, *, write: bool, root: str, rel: str) -> PathRefused:
    """The confinement verdict for an ``open`` that failed on a symlink-free path."""
    if exc.errno == errno.ENOENT:
        return PathRefused(Rule.NOT_FOUND, path, "no such file")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        # Linux answers ENOTDIR both for a file used as a directory and for a
        # symlink opened with O_DIRECTORY|O_NOFOLLOW: look which it was. The
        # refusal already happened; this only names it.
        link = _first_symlink(root, rel)
        if link is None and exc.errno == errno.ENOTDIR:
            return PathRefused(Rule.NOT_FOUND, path, "a file is used as a directory on the way")
        if write:
            return PathRefused(Rule.SYMLINK_WRITE, path, "writes never go through a symlink")
        # The path was resolved without symlinks a moment ago: one appeared.
        return PathRefused(Rule.SYMLINK_OUT, path, "the path changed into a symlink while it was opened")
    if exc.errno == errno.EISDIR:
        return PathRefused(Rule.NOT_A_FILE, path, "a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PathRefused(Rule.NOT_FOUND, path, "permission denied")
    return PathRefused(Rule.NOT_FOUND, path, os.strerror(exc.errno or 0))


def _first_symlink(root: str, rel: str) -> str | None:
    """The first component of ``rel`` (under ``root``) that is a symlink now, if any."""
    here = root
    for part in rel.split("/"):
        here = os.path.join(here, part)
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return here
        except OSError:
            return None
    return None
