"""Task files: a folder of markdown files with YAML frontmatter, read into a checked task graph.

A task file (DESIGN §12)::

    ---
    id: auth-setup
    title: Set up the auth module
    depends_on: [db-schema]
    agent: implementation-specialist
    checks: ["pytest -q tests/auth", [make, lint]]
    ---
    The task, in prose: what to build and how to know it is done.

This module is pure: the outside reads the folder and hands in ``(filename,
text)`` pairs. Every problem is one line naming the file and what is wrong
(``tasks/b.md: depends on unknown task 'x'``); all of them are reported at
once, so a person fixes a folder in one pass instead of one error per run of
``baton tasks plan``.

Why a task id is narrower than a step id (``[a-z][a-z0-9_-]*``, at most 64):
it also names a git branch (``baton/<run>/<id>``) and a directory. Upper
case is refused because two ids differing only in case would be one ref and
one directory on a case-insensitive file system; dots are refused because
``..`` and ``.lock`` mean something to git.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from flows.errors import BatonError
from flows.model import StepSpec
from flows.tasks.allow import Argv, BadArgv, allowed, as_argv, describe
from flows.template import parse_frontmatter

TASK_ID = re.compile(r"[a-z][a-z0-9_-]{0,63}")
RESERVED_TASK_IDS = frozenset({"integrate", "input", "land"})
"""``integrate`` names the run's integration branch; ``input`` is ``$input`` in templates; ``land`` is the
run's landing gate (the approval step a task run with a target ends with, ``flows.tasks.run.LAND_STEP``)."""
TASK_AGENTS: frozenset[str] = frozenset({"implementation-specialist", "poc-specialist"})
"""The shipped personas written for tasks (write-capable, Safe Exit, commit discipline)."""
FIELDS = ("id", "title", "depends_on", "agent", "checks")
REQUIRED = ("id", "title", "agent")
TASK_KIND = "task"
"""The step kind of a task (``StepKind.TASK`` once the integration adds it to the model)."""


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One task as its file gives it: the unit a ``task`` step runs."""

    id: str
    title: str
    agent: str
    body: str
    depends_on: tuple[str, ...] = ()
    checks: tuple[Argv, ...] = ()
    source: str = ""
    """The file it came from, as the outside named it (``tasks/auth.md``)."""


class TaskGraph(msgspec.Struct, frozen=True, kw_only=True):
    """A checked task graph: ids unique, deps known, no cycle; tasks in file-name order."""

    tasks: tuple[TaskSpec, ...]

    def task(self, task_id: str) -> TaskSpec:
        """The task ``task_id``; KeyError when the graph has none."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every task id, in file-name order."""
        return tuple(t.id for t in self.tasks)


class TaskProblem(msgspec.Struct, frozen=True):
    """One thing wrong with one file."""

    source: str
    problem: str

    def __str__(self) -> str:
        return f"{self.source}: {self.problem}"


class TaskGraphError(BatonError, ValueError):
    """The task folder does not make a graph; ``problems`` has one line per problem."""

    def __init__(self, problems: Sequence[TaskProblem]) -> None:
        """Keep every problem; the message is all of them, one a line."""
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# -- one file ---------------------------------------------------------------


def parse_task_file(source: str, text: str, *, agents: Collection[str] = TASK_AGENTS
                    ) -> TaskSpec | list[TaskProblem]:
    """One task file's task, or every problem it has (missing or bad fields, bad agent, no body)."""
    problems: list[TaskProblem] = []

    def bad(problem: str) -> None:
        problems.append(TaskProblem(source, problem))

    fields, body, error = _split(text)
    if error:
        bad(error)
        return problems
    unknown = sorted(set(fields) - set(FIELDS))
    for name in unknown:
        bad(f"unknown field {name!r} (the fields are {', '.join(FIELDS)})")
    for name in REQUIRED:
        value = fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            bad(f"missing field {name!r}")
        elif not isinstance(value, str):
            bad(f"field {name!r} must be text, got {_kind(value)}")
    task_id = fields.get("id")
    if isinstance(task_id, str) and task_id.strip():
        if not TASK_ID.fullmatch(task_id):
            bad(f"id {task_id!r} is not a task id: lowercase letters, digits, '-' and '_', starting with a letter, "
                "at most 64 characters (it names a git branch and a directory)")
        elif task_id in RESERVED_TASK_IDS:
            bad(f"id {task_id!r} is reserved")
    agent = fields.get("agent")
    if isinstance(agent, str) and agent.strip() and agent not in agents:
        bad(f"unknown agent {agent!r}; task agents are {', '.join(sorted(agents)) or 'none'}")
    deps = _depends_on(fields.get("depends_on"), bad)
    checks = _checks(fields.get("checks"), bad)
    if not body.strip():
        bad("the task has no text: write what to do below the frontmatter")
    if problems:
        return problems
    return TaskSpec(id=str(task_id), title=str(fields["title"]).strip(), agent=str(agent), body=body.strip("\n"),
                    depends_on=deps, checks=checks, source=source)


def _split(text: str) -> tuple[dict[str, Any], str, str]:
    """(frontmatter fields, body, error): the frontmatter must open the file with ``---``."""
    lines = text.lstrip("\ufeff").split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, "", "no frontmatter: a task file starts with a '---' line, its YAML fields, and '---'"
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        return {}, "", "the frontmatter opened with '---' on line 1 is never closed by '---'"
    fields, error = parse_frontmatter("\n".join(lines[: end + 1]))
    if error:
        return {}, "", error
    return fields, "\n".join(lines[end + 1:]), ""


def _depends_on(value: object, bad: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # `depends_on: a` for one dep is common enough to accept
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        bad(f"depends_on must be a list of task ids, got {_kind(value)}")
        return ()
    seen: list[str] = []
    for dep in value:
        if dep in seen:
            bad(f"depends on {dep!r} twice")
        else:
            seen.append(dep)
    return tuple(seen)


def _checks(value: object, bad: Any) -> tuple[Argv, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        bad(f"checks must be a list of commands (each a list of words or a string), got {_kind(value)}")
        return ()
    out: list[Argv] = []
    for n, item in enumerate(value, 1):
        try:
            out.append(as_argv(item, what=f"check {n}"))
        except BadArgv as exc:
            bad(str(exc))
    return tuple(out)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


# -- the folder -------------------------------------------------------------


def load_task_graph(files: Iterable[tuple[str, str]], *, agents: Collection[str] = TASK_AGENTS,
                    allow: Sequence[Sequence[str]] | None = None) -> TaskGraph:
    """The checked graph of a folder's task files, or :class:`TaskGraphError` with every problem.

    ``files`` are ``(name, text)`` pairs (the outside reads them). With
    ``allow`` (the project's allow-list), a check no entry allows is a
    problem too: it would be refused when the task runs, so say it now.
    """
    problems: list[TaskProblem] = []
    tasks: list[TaskSpec] = []
    for source, text in sorted(files):
        parsed = parse_task_file(source, text, agents=agents)
        if isinstance(parsed, list):
            problems += parsed
        else:
            tasks.append(parsed)
    if not tasks and not problems:
        raise TaskGraphError([TaskProblem("(task folder)", "no task files: add NAME.md files with frontmatter")])
    first: dict[str, TaskSpec] = {}
    for task in tasks:
        if task.id in first:
            problems.append(TaskProblem(task.source, f"duplicate id {task.id!r} (also in {first[task.id].source})"))
        else:
            first[task.id] = task
    for task in first.values():
        for dep in task.depends_on:
            if dep == task.id:
                problems.append(TaskProblem(task.source, f"task {task.id!r} depends on itself"))
            elif dep not in first:
                problems.append(TaskProblem(task.source, f"depends on unknown task {dep!r}"))
        if allow is not None:
            for argv in task.checks:
                if not allowed(argv, allow):
                    problems.append(TaskProblem(task.source, f"check {list(argv)!r} is not on the project's "
                                                             f"allow-list ({describe(allow)})"))
    problems += _cycles(first)
    if problems:
        raise TaskGraphError(problems)
    return TaskGraph(tasks=tuple(first.values()))


def _cycles(by_id: Mapping[str, TaskSpec]) -> list[TaskProblem]:
    """One problem per cycle (named by its path), found by a depth-first walk in id order."""
    problems: list[TaskProblem] = []
    state: dict[str, int] = {}  # 1 on the path, 2 finished
    reported: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for dep in by_id[node].depends_on:
            if dep not in by_id or dep == node:
                continue  # reported as unknown / self already
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    problems.append(TaskProblem(by_id[dep].source, "dependency cycle: " + " -> ".join(cycle)))
            elif dep not in state:
                walk(dep, path)
        path.pop()
        state[node] = 2

    for task_id in sorted(by_id):
        if task_id not in state:
            walk(task_id, [])
    return problems


def waves(graph: TaskGraph) -> list[list[str]]:
    """The topological layers: wave 1 has no deps, wave N depends only on earlier waves (ids sorted).

    What ``baton tasks plan`` prints: the tasks of one wave can run in
    parallel; the actual start order also follows slots and outcomes.
    """
    level: dict[str, int] = {}
    remaining = {t.id: t for t in graph.tasks}
    while remaining:
        ready = [tid for tid, t in remaining.items() if all(d in level for d in t.depends_on)]
        if not ready:  # a checked graph has no cycle; a hand-built one might
            raise TaskGraphError([TaskProblem(remaining[min(remaining)].source, "dependency cycle")])
        for tid in ready:
            deps = remaining[tid].depends_on
            level[tid] = 1 + max((level[d] for d in deps), default=0)
            del remaining[tid]
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=0))]
    for tid, n in level.items():
        out[n - 1].append(tid)
    return [sorted(w) for w in out]


# -- into a run's graph ------------------------------------------------------


class TaskStepSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A task as a step of a run's pinned graph: :class:`~flows.model.StepSpec`'s fields plus ``checks``.

    Field for field a ``StepSpec`` (``kind`` is ``"task"``, ``persona`` the
    agent, ``prompt`` the body, ``label`` the title), so a pinned task graph
    decodes as ``StepSpec`` today (the extra fields are ignored) and the
    integration only adds ``checks`` and ``source`` to ``StepSpec``.
    """

    id: str
    kind: str  # no default: omit_defaults must never drop it (StepSpec requires it)
    label: str = ""
    persona: str = ""
    prompt: str = ""
    deps: tuple[str, ...] = ()
    trigger_rule: str = "all_success"
    retries: int = 0
    timeout_s: float = 0.0
    checks: tuple[Argv, ...] = ()
    source: str = ""

    def step_spec(self) -> StepSpec:
        """The plain step spec (without the task-only fields)."""
        fields = {name: getattr(self, name) for name in self.__struct_fields__}
        return msgspec.convert(fields, StepSpec)  # fields StepSpec has not (checks, source) are ignored


def task_steps(graph: TaskGraph, *, retries: int = 1, timeout_s: float = 0.0) -> tuple[TaskStepSpec, ...]:
    """The run's steps, one ``task`` step per task, in wave order (then id order).

    ``retries`` is how often a task lost in a crash or failed by an error is
    tried again (a Safe Exit is never retried on its own: a person decides).
    """
    order = [tid for wave in waves(graph) for tid in wave]
    return tuple(TaskStepSpec(id=t.id, kind=TASK_KIND, label=t.title, persona=t.agent, prompt=t.body, deps=t.depends_on,
                              retries=retries, timeout_s=timeout_s, checks=t.checks, source=t.source)
                 for t in (graph.task(tid) for tid in order))
