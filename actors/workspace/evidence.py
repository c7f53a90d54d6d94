"""Checking evidence items against the commit a run was pinned to (DESIGN §11).

Evidence is checked, not trusted: for an item citing ``path:line`` or
``path:start-end`` with a quote, the cited file is read *as committed* in the
workspace's pinned commit (``git cat-file blob COMMIT:path``, never the work
tree, which may have moved on), and the quote must occur within the cited
lines, whitespace-normalised (:func:`flows.evidence.quote_in`). A cited path
goes through the same lexical confinement as a tool path first: a path that
climbs out of the root or into ``.git`` is never handed to git.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from actors.workspace.confine import DEFAULT_MAX_FILE_BYTES, SNIFF_BYTES, check_relative, is_text
from actors.workspace.errors import GitError, PathRefused
from actors.workspace.git import DEFAULT_TIMEOUT_S, Git
from flows.evidence import EvidenceCheck, EvidenceItem, Verdict, parse, quote_in
from flows.workspace import Workspace

_MISSING = object()


class EvidenceChecker:
    """Checks items against one pinned workspace (or marks them all unchecked without one)."""

    def __init__(self, workspace: Workspace | None, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Check against ``workspace``'s commit; files over ``max_file_bytes`` stay unchecked."""
        self.workspace = workspace
        self.max_file_bytes = max_file_bytes
        self._git = Git(Path(workspace.root), timeout_s=timeout_s) if workspace else None
        self._files: dict[str, list[str] | str] = {}  # path -> lines, or why it cannot be read

    def check_output(self, output: str) -> list[EvidenceCheck]:
        """Parse ``output`` and check every evidence item in it."""
        return self.check(parse(output))

    def check(self, items: Sequence[EvidenceItem]) -> list[EvidenceCheck]:
        """One verdict per item, in order."""
        return [self._check(item) for item in items]

    def _check(self, item: EvidenceItem) -> EvidenceCheck:
        def verdict(v: Verdict, detail: str) -> EvidenceCheck:
            return EvidenceCheck(item=item, verdict=v, detail=detail)

        if self.workspace is None:
            return verdict(Verdict.UNCHECKED, "the run has no workspace")
        if not item.path:
            return verdict(Verdict.UNCHECKED, "no file:line source")
        if not item.quote:
            return verdict(Verdict.UNCHECKED, "no quoted snippet")
        try:
            rel = check_relative(item.path)
        except PathRefused as exc:
            return verdict(Verdict.NOT_FOUND, f"the cited path was refused ({exc.rule.value}); nothing was read")
        if rel == ".":
            return verdict(Verdict.NOT_FOUND, "the cited path is the workspace root, not a file")
        lines = self._lines(rel)
        if isinstance(lines, str):
            unreadable = lines.startswith(("binary", "over "))
            return verdict(Verdict.UNCHECKED if unreadable else Verdict.NOT_FOUND, lines)
        start, end = item.start, item.end
        where = f"{start}" if start == end else f"{start}-{end}"
        if start < 1 or end < start:
            return verdict(Verdict.NOT_FOUND, f"lines {where} are no range")
        if start > len(lines):
            return verdict(Verdict.NOT_FOUND,
                           f"{rel} has {len(lines)} lines at {self._short}; line {start} is past the end")
        if quote_in(item.quote, "\n".join(lines[start - 1 : end])):
            return verdict(Verdict.VERIFIED, f"{rel}:{where} at {self._short}")
        elsewhere = _find_line(item.quote, lines)
        if elsewhere:
            return verdict(Verdict.NOT_FOUND, f"the quote is at line {elsewhere} of {rel}, not in lines {where}")
        return verdict(Verdict.NOT_FOUND, f"the quote is not in {rel} at {self._short}")

    @property
    def _short(self) -> str:
        assert self.workspace is not None
        return f"commit {self.workspace.commit[:12]}"

    def _lines(self, rel: str) -> list[str] | str:
        """The committed file's lines, or a sentence saying why there are none."""
        cached = self._files.get(rel, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        result = self._read(rel)
        self._files[rel] = result
        return result

    def _read(self, rel: str) -> list[str] | str:
        assert self._git is not None and self.workspace is not None
        commit = self.workspace.commit
        dirty = " (the work tree had uncommitted changes when the run was launched)" if self.workspace.dirty else ""
        try:
            size = self._git.blob_size(commit, rel)
            if size is None:
                return f"no file {rel} in {self._short}{dirty}"
            if size > self.max_file_bytes:
                return f"over the size cap ({size:,} bytes)"
            data = self._git.blob(commit, rel)
        except GitError as exc:
            return f"git could not read {rel}: {exc.stderr.splitlines()[-1] if exc.stderr else exc}"
        if not is_text(data[:SNIFF_BYTES]):
            return "binary file"
        lines = data.decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return [line.removesuffix("\r") for line in lines]


def _find_line(quote: str, lines: list[str]) -> int:
    """The first line where a quote (of as many lines as it has) occurs; 0 when nowhere."""
    if not quote_in(quote, "\n".join(lines)):
        return 0
    span = max(1, quote.strip().count("\n") + 1)
    for i in range(len(lines)):
        if quote_in(quote, "\n".join(lines[i : i + span])):
            return i + 1
    return 0
