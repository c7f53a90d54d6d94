"""The five read-only tools of DESIGN §11, their schemas and their validation.

Each tool's arguments are one msgspec Struct: the single home of its names,
types and defaults. The OpenAI function-calling schema is generated from it
(:data:`TOOL_SCHEMAS`) and the same Struct validates what a model sends, so
the schema shown and the schema enforced cannot drift apart.

A call is first validated (unknown tool, arguments that are not JSON or do
not match the schema: a **malformed** call), then run against the workspace
through :class:`~actors.workspace.confine.Confinement` (a refusal or failure:
a tool **error**). Both are answers the model reads, never exceptions; an
exception from here is a bug or an outage and fails the step.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import msgspec

from actors.workspace import results as r
from actors.workspace.confine import DEFAULT_MAX_FILE_BYTES, Confinement, check_relative
from actors.workspace.errors import BadRevision, GitError, PathRefused, WorkspaceError
from actors.workspace.git import Git
from actors.workspace.globs import BadGlob, Glob, compile_glob
from actors.workspace.results import Outcome, ToolResult
from actors.workspace.search import BadPattern, Match, compile_matcher, search_files

_NOT_GIVEN = msgspec.UNSET


class ToolName(str, Enum):
    """The read-only tools, by the exact names models call them."""

    LIST_FILES = "list_files"
    READ_FILE = "read_file"
    SEARCH = "search"
    GIT_DIFF = "git_diff"
    GIT_LOG = "git_log"


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


Line = Annotated[int, msgspec.Meta(ge=1, description="1-based line number")]


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Arguments of a tool; unknown fields are a schema mismatch."""


class ListFilesArgs(_Args, frozen=True):
    """List files (respecting .gitignore) under a directory of the workspace."""

    path: Annotated[str, _doc("directory relative to the workspace root")] = "."
    glob: Annotated[str, _doc("only paths matching this glob, e.g. *.py or src/**/*.ts")] | msgspec.UnsetType = (
        _NOT_GIVEN)


class ReadFileArgs(_Args, frozen=True):
    """Read a text file of the workspace as numbered lines."""

    path: Annotated[str, _doc("file path relative to the workspace root")]
    start_line: Line | msgspec.UnsetType = _NOT_GIVEN
    end_line: Line | msgspec.UnsetType = _NOT_GIVEN


class SearchArgs(_Args, frozen=True):
    """Search the workspace's text files for a regular expression (Python syntax)."""

    pattern: Annotated[str, _doc("regular expression, matched against each line")]
    path: Annotated[str, _doc("directory or file to search, relative to the root")] = "."
    glob: Annotated[str, _doc("only files whose path matches this glob, e.g. *.py")] | msgspec.UnsetType = _NOT_GIVEN


class GitDiffArgs(_Args, frozen=True):
    """Show a unified diff: base (default HEAD) against head (default the working tree)."""

    base: Annotated[str, _doc("commit, branch or tag; default HEAD")] | msgspec.UnsetType = _NOT_GIVEN
    head: Annotated[str, _doc("commit, branch or tag; default the working tree")] | msgspec.UnsetType = _NOT_GIVEN
    path: Annotated[str, _doc("limit the diff to this path")] | msgspec.UnsetType = _NOT_GIVEN


class GitLogArgs(_Args, frozen=True):
    """List commits, newest first, one a line: short sha, date, author, subject."""

    path: Annotated[str, _doc("only commits touching this path")] | msgspec.UnsetType = _NOT_GIVEN
    max_count: Annotated[int, msgspec.Meta(ge=1, description="how many commits, default 20")] | msgspec.UnsetType = (
        _NOT_GIVEN)


ARGUMENTS: dict[ToolName, type[_Args]] = {
    ToolName.LIST_FILES: ListFilesArgs,
    ToolName.READ_FILE: ReadFileArgs,
    ToolName.SEARCH: SearchArgs,
    ToolName.GIT_DIFF: GitDiffArgs,
    ToolName.GIT_LOG: GitLogArgs,
}


def function_schema(name: Enum, args: type[_Args]) -> dict[str, Any]:
    """The OpenAI ``tools`` entry of one tool, generated from its Struct (read and write tools alike)."""
    generated = msgspec.json.schema(args)
    params = dict(generated["$defs"][args.__name__])
    params.pop("title", None)
    params.pop("description", None)
    params.setdefault("required", [])
    return {"type": "function",
            "function": {"name": name.value, "description": (args.__doc__ or "").strip(),
                         "parameters": params}}


TOOL_SCHEMAS: list[dict[str, Any]] = [function_schema(n, a) for n, a in ARGUMENTS.items()]
"""The ``tools`` list sent with every model turn of a step with a workspace."""


def schema_hash(schemas: list[dict[str, Any]]) -> str:
    """A stable sha256 of a tool list (canonical JSON: sorted keys, no spaces).

    Recorded in ``StepStarted`` so an audit can tell which tools a model was
    offered without storing the schema on every step.
    """
    canonical = json.dumps(schemas, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


TOOL_SCHEMA_HASH = schema_hash(TOOL_SCHEMAS)


@dataclass(frozen=True)
class Caps:
    """The caps on every result; each cut says so in the result."""

    max_lines: int = 400
    """Lines per ``read_file`` call and per ``git_diff`` result."""
    max_bytes: int = 32_000
    """Bytes of any one result's text."""
    max_matches: int = 200
    max_files: int = 1_000
    """Paths per ``list_files`` result."""
    max_log: int = 200
    default_log: int = 20
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    """Files larger than this are refused by ``read_file`` and skipped by ``search``."""


class Toolbox:
    """The read-only tools over one workspace root."""

    schemas: list[dict[str, Any]] = TOOL_SCHEMAS
    schema_hash: str = TOOL_SCHEMA_HASH

    def __init__(self, root: Path | str, caps: Caps = Caps(), git: Git | None = None) -> None:
        """Confine every call to ``root`` (a git work tree), with ``caps`` on every result."""
        self.caps = caps
        self.confinement = Confinement(root, max_file_bytes=caps.max_file_bytes)
        self.root = self.confinement.root
        self.git = git or Git(self.root)
        self._run: dict[ToolName, Callable[[Any], ToolResult]] = {
            ToolName.LIST_FILES: self._list_files,
            ToolName.READ_FILE: self._read_file,
            ToolName.SEARCH: self._search,
            ToolName.GIT_DIFF: self._git_diff,
            ToolName.GIT_LOG: self._git_log,
        }

    def call(self, name: str, arguments: str | Mapping[str, Any] | None) -> ToolResult:
        """Validate and run one call; every problem comes back as a result.

        ``arguments`` is the raw JSON text the model sent (a mapping is
        accepted from servers that send objects). Empty text counts as
        ``{}``, and a ``null`` for an optional argument as not given: models
        emit both for "no arguments", and neither changes what is asked.
        """
        parsed = parse_call(name, arguments)
        if isinstance(parsed, ToolResult):
            return parsed
        tool, args = parsed
        try:
            return self._run[tool](args)
        except BadRevision as exc:
            return r.failure(Outcome.ERROR, "bad-revision", exc.hint or str(exc))
        except BadPattern as exc:
            return r.failure(Outcome.ERROR, "bad-pattern", str(exc))
        except BadGlob as exc:
            return r.failure(Outcome.ERROR, "bad-glob", str(exc))
        except WorkspaceError as exc:
            return workspace_failure(exc)

    # -- the tools ----------------------------------------------------------

    def _list_files(self, args: ListFilesArgs) -> ToolResult:
        where = self.confinement.directory(args.path)
        glob = compile_glob(args.glob) if isinstance(args.glob, str) else None
        root = str(self.root)
        paths = [p for p in _chosen(self.git.files(where.rel), glob, where.rel)
                 if os.path.lexists(os.path.join(root, p))]
        if not paths:
            return r.make_result(f"no files under {args.path!r}" + (f" matching {args.glob!r}" if glob else ""))
        lines = paths[: self.caps.max_files]
        if len(paths) > len(lines):
            lines.append(r.cut_notice(len(lines), len(paths), "paths"))
        return self._capped("\n".join(lines), truncated=len(paths) > self.caps.max_files)

    def _read_file(self, args: ReadFileArgs) -> ToolResult:
        text = self.confinement.read_text(args.path)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line; it starts none
        total = len(lines)
        if total == 0:
            return r.make_result(f"{args.path} is empty")
        start = args.start_line if isinstance(args.start_line, int) else 1
        asked_end = args.end_line if isinstance(args.end_line, int) else total
        if start > total:
            return r.failure(Outcome.ERROR, "bad-range",
                             f"start_line {start} is past the end: {args.path} has {total:,} lines")
        if asked_end < start:
            return r.failure(Outcome.ERROR, "bad-range", f"end_line {asked_end} is before start_line {start}")
        end = min(asked_end, total, start + self.caps.max_lines - 1)
        width = len(str(end))
        out = [f"{n:>{width}}\t{lines[n - 1].removesuffix(chr(13))}" for n in range(start, end + 1)]
        cut = end < min(asked_end, total)
        if cut:
            out.append(f"[cut: lines {start}-{end} of {total:,} shown; read on with start_line={end + 1}]")
        return self._capped("\n".join(out), truncated=cut)

    def _search(self, args: SearchArgs) -> ToolResult:
        matcher = compile_matcher(args.pattern)
        glob = compile_glob(args.glob) if isinstance(args.glob, str) else None
        where = self.confinement.resolve(args.path)
        sources: list[Callable[[], list[str]]]
        if where.real.is_file():
            sources = [lambda: [where.rel]]
        else:
            where = self.confinement.directory(args.path)
            # The untracked files are found by a walk of the tree in another
            # process while this one searches the tracked ones.
            pending = self.git.start_untracked_files(where.rel)
            tracked = self.git.tracked_files(where.rel)
            sources = [lambda: tracked, pending.result]
        outcomes = []
        with self.confinement.walker() as walker:
            for source in sources:  # tracked, then untracked: git lists no file in both
                outcomes.append(search_files(walker, _chosen(source(), glob, where.rel), matcher,
                                             self.caps.max_matches))
        total = sum(o.total for o in outcomes)
        searched = sum(o.files_searched for o in outcomes)
        skipped = sum(o.files_skipped for o in outcomes)
        # Each group is in path order: the first N of their union, in path order.
        matches: list[Match] = sorted((m for o in outcomes for m in o.matches),
                                      key=lambda m: (m.path, m.line))[: self.caps.max_matches]
        note = f"\n({skipped:,} files not searched: binary, over {self.caps.max_file_bytes:,} bytes, " \
               "symlinks or unreadable)" if skipped else ""
        if not matches:
            return r.make_result(f"no matches for {args.pattern!r} in {searched:,} files{note}")
        lines = [f"{m.path}:{m.line}: {m.text}" for m in matches]
        if total > len(matches):
            lines.append(r.cut_notice(len(matches), total, "matches"))
        return self._capped("\n".join(lines) + note, truncated=total > len(matches))

    def _git_diff(self, args: GitDiffArgs) -> ToolResult:
        path = check_relative(args.path) if isinstance(args.path, str) else None
        base = args.base if isinstance(args.base, str) else None
        head = args.head if isinstance(args.head, str) else None
        diff = self.git.diff(base, head, path)
        if not diff:
            return r.make_result("no differences")
        lines = diff.rstrip("\n").split("\n")
        shown = lines[: self.caps.max_lines]
        if len(lines) > len(shown):
            shown.append(r.cut_notice(len(shown), len(lines), "diff lines"))
        return self._capped("\n".join(shown), truncated=len(lines) > self.caps.max_lines)

    def _git_log(self, args: GitLogArgs) -> ToolResult:
        path = check_relative(args.path) if isinstance(args.path, str) else None
        asked = args.max_count if isinstance(args.max_count, int) else self.caps.default_log
        count = min(asked, self.caps.max_log)
        lines = self.git.log(path, count)
        if not lines:
            return r.make_result("no commits" + (f" touching {args.path!r}" if path else ""))
        if asked > count:
            lines.append(f"[cut: max_count {asked:,} lowered to {count:,}]")
        return self._capped("\n".join(lines), truncated=asked > count)

    def _capped(self, text: str, truncated: bool) -> ToolResult:
        capped, cut = r.cap_bytes(text, self.caps.max_bytes)
        return r.make_result(capped, truncated=truncated or cut)


def workspace_failure(exc: WorkspaceError) -> ToolResult:
    """A workspace error as a tool's result: the rule a path broke, git's last words, or the error."""
    if isinstance(exc, PathRefused):
        return r.failure(Outcome.ERROR, exc.rule.value, f"{exc.path!r} refused: {exc.detail}")
    if isinstance(exc, GitError):
        # git's own last words, without the directory: the model needs the
        # reason, not the server's layout.
        said = exc.stderr.splitlines()[-1] if exc.stderr else (exc.hint or "git failed")
        return r.failure(Outcome.ERROR, "git-error", said)
    return r.failure(Outcome.ERROR, "workspace-error", str(exc))


def parse_call(name: str, arguments: str | Mapping[str, Any] | None,
               table: Mapping[Any, type[_Args]] = ARGUMENTS) -> tuple[Any, _Args] | ToolResult:
    """The tool and its validated arguments, or the malformed-call result that explains why not.

    ``table`` maps each tool (an Enum member whose value is its name) to its
    arguments Struct: the read tools by default; the write tools pass theirs,
    so every toolbox answers a malformed call the same way.
    """
    by_name = {t.value: t for t in table}
    tool = by_name.get(name)
    if tool is None:
        known = ", ".join(by_name)
        return r.failure(Outcome.MALFORMED, "unknown-tool", f"unknown tool {name!r}; the tools are {known}")
    raw: Any = arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        raw = {}
    elif isinstance(arguments, str):
        try:
            raw = json.loads(arguments)
        except json.JSONDecodeError as exc:
            preview = arguments if len(arguments) <= 200 else arguments[:200] + "..."
            return r.failure(Outcome.MALFORMED, "not-json",
                             f"the arguments of {name} are not valid JSON ({exc.msg}): {preview!r}")
    if isinstance(raw, Mapping):
        raw = {k: v for k, v in raw.items() if v is not None}
    try:
        return tool, msgspec.convert(raw, table[tool])
    except msgspec.ValidationError as exc:
        return r.failure(Outcome.MALFORMED, "bad-arguments",
                         f"the arguments of {name} do not match its schema: {exc}")


def _chosen(paths: list[str], glob: Glob | None, under: str) -> list[str]:
    """The paths a tool may show: none inside a ``.git`` (at any depth), and matching ``glob``.

    git never lists ``.git`` contents, but a nested ``.GIT`` or a worktree's
    ``.git`` file could appear as untracked: never offer what read_file
    refuses. A search of 50,000 files runs this every time, so the common
    case (no such path) costs one pass over the joined names.
    """
    hidden: set[str] = set()
    if ".git" in "\n".join(paths).lower():  # also true for every .gitignore: then look closer
        hidden = {p for p in paths if ".git" in p.lower() and any(part.lower() == ".git" for part in p.split("/"))}
    if glob is None:
        return [p for p in paths if p not in hidden] if hidden else paths
    return [p for p in paths if p not in hidden and _glob_ok(glob, p, under)]


def _glob_ok(glob: Glob | None, path: str, under: str) -> bool:
    if glob is None:
        return True
    if glob.matches(path):
        return True
    # `list_files(path="src", glob="api/*.py")` means src/api/*.py.
    prefix = under + "/"
    return under != "." and path.startswith(prefix) and glob.matches(path[len(prefix):])


__all__ = ["ARGUMENTS", "Caps", "Outcome", "TOOL_SCHEMAS", "TOOL_SCHEMA_HASH", "ToolName",
           "ToolResult", "Toolbox", "function_schema", "parse_call", "schema_hash"]
