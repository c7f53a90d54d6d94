"""The write tools of a task's implementor (§12), on top of the five read tools, confined to its worktree.

| tool | arguments | what it does |
|---|---|---|
| ``write_file`` | ``path``, ``content`` | create or replace a file, atomically (parents made) |
| ``edit_file`` | ``path``, ``old``, ``new`` | replace the one occurrence of ``old`` (zero or several: an error) |
| ``run`` | ``argv`` | an allow-listed command, no shell, a timeout, output capped; the exit code is in the result |
| ``commit`` | ``message`` | commit every change; the task id leads the subject and is a trailer |
| ``notify`` | ``level`` (info, blocking), ``message`` | a word to the people watching |
| ``blocked`` | ``reason`` | Safe Exit: the loop stops, the task is ``blocked`` with the reason |

The same rules as the read tools, now for writes: paths are relative, never
absolute, never climbing out with ``..``, never through a symlink (even one
that stays inside), never into ``.git`` (nor a worktree's ``.git`` file),
never over the size cap; writes are atomic (:mod:`actors.workspace.writes`).
Arguments are one msgspec Struct per tool, the schema generated from it
exactly as for the read tools, and a malformed call is answered the same way
(:func:`actors.workspace.tools.parse_call`).

A command that exits non-zero is an **answer** (``ok``, the exit code in the
text: failing tests are how an implementor works), not a tool error; a
command off the allow-list, a timeout or a program that cannot start are
tool errors. After ``blocked`` every further call is answered ``not_run``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal

import msgspec

from actors.workspace import results as r
from actors.workspace.commands import DEFAULT_MAX_OUTPUT, CommandResult, command_env, run_command
from actors.workspace.errors import CommitRefused, WorkspaceError
from actors.workspace.results import Outcome, ToolResult
from actors.workspace.tools import (
    ARGUMENTS as READ_ARGUMENTS,
)
from actors.workspace.tools import (
    TOOL_SCHEMAS as READ_SCHEMAS,
)
from actors.workspace.tools import (
    Caps,
    Toolbox,
    ToolName,
    _Args,
    _doc,
    function_schema,
    parse_call,
    schema_hash,
    workspace_failure,
)
from actors.workspace.worktree_results import Commit
from actors.workspace.worktrees import RunWorktrees
from actors.workspace.writes import EditRefused, edit_file, write_file
from flows.tasks.allow import allowed, describe
from flows.tasks.events import NotifyLevel


class WriteToolName(str, Enum):
    """The write tools, by the exact names models call them."""

    WRITE_FILE = "write_file"
    EDIT_FILE = "edit_file"
    RUN = "run"
    COMMIT = "commit"
    NOTIFY = "notify"
    BLOCKED = "blocked"


NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class WriteFileArgs(_Args, frozen=True):
    """Create or replace a file of your worktree with the given content (parent directories are made)."""

    path: Annotated[str, _doc("file path relative to the worktree root")]
    content: Annotated[str, _doc("the whole new content of the file")]


class EditFileArgs(_Args, frozen=True):
    """Replace one exact piece of text in a file: old must occur exactly once (add context to make it unique)."""

    path: Annotated[str, _doc("file path relative to the worktree root")]
    old: Annotated[str, msgspec.Meta(min_length=1, description="the exact text to replace, whitespace included")]
    new: Annotated[str, _doc("the text to put in its place")]


class RunArgs(_Args, frozen=True):
    """Run a command allowed by the project (e.g. the tests) in your worktree; no shell, one word per item."""

    argv: Annotated[list[NonEmpty], msgspec.Meta(min_length=1, description='e.g. ["pytest", "-q", "tests/x"]')]


class CommitArgs(_Args, frozen=True):
    """Commit every change in your worktree with a message saying what and why."""

    message: Annotated[str, msgspec.Meta(min_length=1, description="first line: what changed; then why")]


class NotifyArgs(_Args, frozen=True):
    """Tell the people watching something; blocking means you need an answer but keep working meanwhile."""

    level: Annotated[Literal["info", "blocking"], _doc("info or blocking")]
    message: NonEmpty


class BlockedArgs(_Args, frozen=True):
    """Safe Exit: stop now because you cannot go on safely; say what you need. Your work so far is kept."""

    reason: Annotated[str, msgspec.Meta(min_length=1, description="what blocks you and what would unblock you")]


WRITE_ARGUMENTS: dict[WriteToolName, type[_Args]] = {
    WriteToolName.WRITE_FILE: WriteFileArgs,
    WriteToolName.EDIT_FILE: EditFileArgs,
    WriteToolName.RUN: RunArgs,
    WriteToolName.COMMIT: CommitArgs,
    WriteToolName.NOTIFY: NotifyArgs,
    WriteToolName.BLOCKED: BlockedArgs,
}
ALL_ARGUMENTS: dict[Enum, type[_Args]] = {}
"""Every tool of an implementor and its arguments: how ``parse_call`` validates a call."""
for _table in (READ_ARGUMENTS, WRITE_ARGUMENTS):
    for _tool, _args in _table.items():
        ALL_ARGUMENTS[_tool] = _args
TASK_TOOL_SCHEMAS: list[dict[str, Any]] = READ_SCHEMAS + [function_schema(n, a) for n, a in WRITE_ARGUMENTS.items()]
"""The ``tools`` list of an implementor: the read tools, then the write tools."""
TASK_TOOL_SCHEMA_HASH = schema_hash(TASK_TOOL_SCHEMAS)


@dataclass(frozen=True)
class TaskCaps:
    """Limits of the write tools (the read tools keep :class:`~actors.workspace.tools.Caps`)."""

    run_timeout_s: float = 300.0
    max_run_output: int = DEFAULT_MAX_OUTPUT
    max_message_chars: int = 4_000
    """``notify`` and ``blocked`` texts (they land in events and in the plan)."""


@dataclass
class TaskSignals:
    """What the tools did that the engine must record beyond the call and its result."""

    commits: list[Commit] = field(default_factory=list)
    runs: list[CommandResult] = field(default_factory=list)
    notices: list[tuple[NotifyLevel, str]] = field(default_factory=list)
    blocked: str | None = None
    """The Safe Exit reason, once ``blocked`` was called."""


class TaskToolbox:
    """Read and write tools over one task's worktree."""

    schemas: list[dict[str, Any]] = TASK_TOOL_SCHEMAS
    schema_hash: str = TASK_TOOL_SCHEMA_HASH

    def __init__(self, worktrees: RunWorktrees, task_id: str, allow: Sequence[Sequence[str]], *,
                 caps: Caps = Caps(), task_caps: TaskCaps = TaskCaps(),
                 env: Mapping[str, str] | None = None) -> None:
        """Confine every call to the task's worktree; ``allow`` is the project's allow-list for ``run``."""
        self.worktrees = worktrees
        self.task_id = task_id
        self.allow = [list(a) for a in allow]
        self.task_caps = task_caps
        self.read = Toolbox(worktrees.task_path(task_id), caps=caps, git=worktrees.at(worktrees.task_path(task_id)))
        self.confinement = self.read.confinement
        self.env = command_env(env)
        self.signals = TaskSignals()
        self._run: dict[WriteToolName, Callable[[Any], ToolResult]] = {
            WriteToolName.WRITE_FILE: self._write_file, WriteToolName.EDIT_FILE: self._edit_file,
            WriteToolName.RUN: self._run_command, WriteToolName.COMMIT: self._commit,
            WriteToolName.NOTIFY: self._notify, WriteToolName.BLOCKED: self._blocked,
        }

    def call(self, name: str, arguments: str | Mapping[str, Any] | None) -> ToolResult:
        """Validate and run one call; every problem comes back as a result, never an exception."""
        if self.signals.blocked is not None:
            return r.failure(Outcome.NOT_RUN, "not-run", "not run: the task is blocked (Safe Exit was taken)")
        parsed = parse_call(name, arguments, ALL_ARGUMENTS)
        if isinstance(parsed, ToolResult):
            return parsed
        tool, args = parsed
        if isinstance(tool, ToolName):
            return self.read.call(name, arguments)
        try:
            return self._run[WriteToolName(tool)](args)
        except (EditRefused, CommitRefused) as exc:
            return r.failure(Outcome.ERROR, exc.reason, exc.detail)
        except WorkspaceError as exc:
            return workspace_failure(exc)

    # -- the tools ------------------------------------------------------------------

    def _write_file(self, args: WriteFileArgs) -> ToolResult:
        data = args.content.encode("utf-8", errors="surrogateescape")
        done = write_file(self.confinement, args.path, data)
        what = "new file" if done.created else "replaced"
        return r.make_result(f"wrote {done.path} ({done.bytes:,} bytes, {what})")

    def _edit_file(self, args: EditFileArgs) -> ToolResult:
        done, line = edit_file(self.confinement, args.path, args.old, args.new)
        return r.make_result(f"edited {done.path} at line {line} ({done.bytes:,} bytes now)")

    def _run_command(self, args: RunArgs) -> ToolResult:
        if not allowed(args.argv, self.allow):
            return r.failure(Outcome.ERROR, "not-allowed", f"{args.argv!r} is not on the project's allow-list; "
                                                           f"allowed: {describe(self.allow)}")
        result = run_command(args.argv, self.read.root, timeout_s=self.task_caps.run_timeout_s,
                             max_output_bytes=self.task_caps.max_run_output, env=self.env)
        self.signals.runs.append(result)
        if result.error:
            return r.failure(Outcome.ERROR, "not-startable", result.error)
        if result.timed_out:
            return r.make_result(f"error: timeout: killed after {self.task_caps.run_timeout_s:g} s\n{result.output}",
                                 Outcome.ERROR, "timeout", truncated=result.truncated)
        head = f"exit code {result.exit_code} in {result.duration_s:.1f} s"
        return r.make_result(f"{head}\n{result.output}" if result.output else head, truncated=result.truncated)

    def _commit(self, args: CommitArgs) -> ToolResult:
        done = self.worktrees.commit(self.task_id, args.message)
        self.signals.commits.append(done)
        subject = done.message.splitlines()[0]
        return r.make_result(f"committed {done.sha[:12]}: {subject} ({len(done.files)} files, "
                             f"+{done.insertions} -{done.deletions})")

    def _notify(self, args: NotifyArgs) -> ToolResult:
        text = args.message[: self.task_caps.max_message_chars]
        self.signals.notices.append((NotifyLevel(args.level), text))
        return r.make_result(f"noted ({args.level}); keep working" if args.level == "blocking" else "noted")

    def _blocked(self, args: BlockedArgs) -> ToolResult:
        self.signals.blocked = args.reason[: self.task_caps.max_message_chars]
        return r.make_result("stopping: the task is blocked; a person will answer. Your work is kept.")


__all__ = [
    "ALL_ARGUMENTS",
    "TASK_TOOL_SCHEMAS",
    "TASK_TOOL_SCHEMA_HASH",
    "WRITE_ARGUMENTS",
    "TaskCaps",
    "TaskSignals",
    "TaskToolbox",
    "WriteToolName",
]
