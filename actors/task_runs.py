"""Task runs for the outside layers (HTTP routes, CLI): read a project's task files, launch, look, reconcile.

The project is the registered one (``actors.workspace.projects.ProjectBook``):
its root and allow-list are read from the log, never taken from a request.
Task files are read only inside the project's root (a ``tasks_dir`` that
climbs out, or a symlink that leads out, is refused by name).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from msgspec.structs import replace

from actors.errors import ActorsError
from actors.runlog import new_events, read_with_owner
from actors.task_attempt import TaskAttempt, TaskEnv, machinery
from actors.workspace.projects import ProjectBook
from actors.workspace.repair import carry_out, inventory
from eventstore import EventStore
from flows.events import REVIEWER_ROLE, Event, LandingRefused, RunLanded, TaskCleanedUp, ToolResult, stream_of
from flows.projects import Project, ProjectNotFound, UnknownProject
from flows.state import RunState
from flows.tasks.files import TaskGraph, load_task_graph
from flows.tasks.lifecycle import TaskTransitionError, check, evolve
from flows.tasks.reconcile import compensation_events, describe, logged_run, reconcile
from flows.tasks.run import LAND_STEP, plan_view, refusal

DEFAULT_TASKS_DIR = "tasks"
"""Where a project's task files are, relative to its root (DESIGN §12)."""
MAX_TASK_FILES = 500
MAX_TASK_FILE_BYTES = 256 * 1024


class TaskFilesRefused(ActorsError, ValueError):
    """The task folder cannot be read (outside the project, missing, too large); the message says which."""


def read_task_files(root: str, tasks_dir: str = DEFAULT_TASKS_DIR) -> list[tuple[str, str]]:
    """``(name relative to the root, text)`` of every ``*.md`` in ``tasks_dir``, confined to ``root``."""
    real_root = os.path.realpath(root)
    if os.path.isabs(tasks_dir) or ".." in Path(tasks_dir).parts:
        raise TaskFilesRefused(f"tasks_dir {tasks_dir!r} must be a relative path inside the project")
    folder = os.path.realpath(os.path.join(real_root, tasks_dir))
    if folder != real_root and not folder.startswith(real_root + os.sep):
        raise TaskFilesRefused(f"tasks_dir {tasks_dir!r} leads outside the project (through a symlink)")
    if not os.path.isdir(folder):
        raise TaskFilesRefused(f"the project has no task folder {tasks_dir!r} (looked in {folder})")
    out: list[tuple[str, str]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.name.endswith(".md") or entry.is_symlink() or not entry.is_file():
            continue
        if len(out) >= MAX_TASK_FILES:
            raise TaskFilesRefused(f"{tasks_dir!r} has more than {MAX_TASK_FILES} task files")
        if entry.stat().st_size > MAX_TASK_FILE_BYTES:
            raise TaskFilesRefused(f"{tasks_dir}/{entry.name} is over {MAX_TASK_FILE_BYTES} bytes")
        with open(entry.path, encoding="utf-8", errors="replace") as f:
            out.append((f"{tasks_dir.rstrip('/')}/{entry.name}", f.read()))
    return out


def plan(project: Project, tasks_dir: str = DEFAULT_TASKS_DIR) -> TaskGraph:
    """The project's checked task graph (raises TaskGraphError with every problem, one a line)."""
    return load_task_graph(read_task_files(project.root, tasks_dir), allow=project.allow)


def project_of(store: EventStore, project_id: str, now: Any) -> Project:
    """The registered project (raises ProjectNotFound, naming the known ones)."""
    try:
        return ProjectBook(store, now).get(project_id)
    except UnknownProject as exc:
        raise ProjectNotFound(exc.project_id, exc.known) from None


def run_state(store: EventStore, run_id: str) -> tuple[RunState, list[tuple[int, Event]]]:
    """The run's state folded from its stream, and its ``(position, event)`` history."""
    state, pairs, _ = read_with_owner(store, run_id)
    return state, pairs


_COUNTS = ("tool_calls", "tool_errors", "malformed_calls")
"""A task's implementor's calls over all its attempts; its reviewer's are the same keys prefixed ``review_``."""


def tool_counts(state: RunState, history: list[tuple[int, Event]]) -> dict[str, dict[str, int]]:
    """Each task's calls over all its attempts, folded from its ``ToolResult`` events (every task has an
    entry): the implementor's ``tool_calls``, ``tool_errors``, ``malformed_calls``, and the read-only
    reviewer's ``review_tool_calls``, ``review_tool_errors``, ``review_malformed_calls`` (``role``)."""
    tasks = state.tasks.tasks if state.tasks is not None else {}
    counts = {tid: dict.fromkeys((*_COUNTS, *(f"review_{k}" for k in _COUNTS)), 0) for tid in tasks}
    for _, event in history:
        if isinstance(event, ToolResult) and event.step_id in counts:
            found = counts[event.step_id]
            prefix = "review_" if event.role == REVIEWER_ROLE else ""
            found[prefix + "tool_calls"] += 1
            found[prefix + "tool_errors"] += event.outcome == "error"
            found[prefix + "malformed_calls"] += event.outcome == "malformed"
    return counts


def clean_up_cancelled(store: EventStore, run_id: str, env: TaskEnv, attempts: Sequence[TaskAttempt],
                       now: Callable[[], float], wait_s: float) -> list[str]:
    """After a task run was cancelled (its tasks aborted in the cancel's batch): what can go safely goes, as
    events; the lines say what was done and what was left (for ``baton tasks cleanup``).

    Waits (up to ``wait_s``) for the cancelled attempts' threads, so no two hands work one worktree. Then
    each aborted task's worktree is removed with its uncommitted work committed to its branch first
    (``salvaged``: never destroyed), and its branch deleted only when the integration branch contains it
    (nothing of its own left; a branch with unmerged commits is kept), recorded as the ``TaskCleanedUp`` an
    abort's cleanup records; then reconciliation (what ``baton tasks cleanup`` does: stale locks, temp files,
    stray directories), as its ``GitCompensated`` events. An attempt still at work after ``wait_s`` keeps its
    worktree (and the run's reconciliation waits) for ``baton tasks cleanup``.
    """
    deadline = time.monotonic() + wait_s
    busy = {a.task_id for a in attempts if not a.finished.wait(max(0.0, deadline - time.monotonic()))}
    state, _ = run_state(store, run_id)
    if state.tasks is None or state.launched is None or not state.terminal:
        return []
    git = machinery(str(state.launched.input.get("repo", "")), run_id, env)
    left = {a.task_id: a.abandoned for a in attempts if a.abandoned is not None}
    lines = [f"{tid}: its attempt was still at work after {wait_s:g} s; left for `baton tasks cleanup`"
             for tid in sorted(busy)]
    tasks = state.tasks
    events: list[Event] = []
    for tid, task in state.tasks.tasks.items():
        cleaned = TaskCleanedUp(step_id=tid, at=now())
        if not task.worktree or task.worktree_removed or tid in busy or check(tasks, cleaned) is not None:
            continue
        done = git.remove_task(tid, delete_branch=None, salvage=True)
        salvaged = done.salvaged or getattr(left.get(tid), "salvaged", "")
        cleaned = replace(cleaned, worktree_removed=done.worktree_removed, branch_deleted=done.branch_deleted,
                          branch_head=done.branch_head, salvaged=salvaged)
        events.append(cleaned)
        tasks = evolve(tasks, cleaned)
        kept = "" if done.branch_deleted else f", branch {task.branch} kept at {done.branch_head[:12]}"
        lines.append(f"{tid}: worktree removed" + (f", uncommitted work salvaged as {salvaged[:12]}" if salvaged
                                                     else "") + kept)
    if events:
        state = _append_after_end(store, state, events)
    if not busy:
        more_lines, more = reconciliation(state, env, now=now())
        lines += more_lines
        if more:
            _append_after_end(store, state, more)
    return lines


def _append_after_end(store: EventStore, state: RunState, events: list[Event]) -> RunState:
    """Append ``events`` to an ended run's stream (guarded, expecting its version); the state after them."""
    assert state.tasks is not None
    problem = refusal(state.tasks, events)
    if problem is not None:
        raise TaskTransitionError(f"run {state.run_id}: not recorded: {problem}")
    store.append(stream_of(state.run_id), new_events(events, {"actor": "baton: cleanup after cancel",
                                                              "correlation_id": state.run_id}),
                 expected_version=state.version)
    return run_state(store, state.run_id)[0]


def reconciliation(state: RunState, env: TaskEnv, *, dry_run: bool = False, prune_kept: bool = False,
                   now: float = 0.0) -> tuple[list[str], list[Event]]:
    """Git against the run's log, both ways (docs/TASKS.md §7): what is (or would be) done, and its events.

    The events are returned, not appended: the run's writer appends them
    (the RunActor at recovery, ``Engine.reconcile`` for ``baton tasks
    cleanup``), after the lifecycle guard. Actions are carried out before
    the events exist: each is idempotent, so a crash between the two is
    repaired by the next reconciliation, which finds nothing left to do.
    """
    if state.tasks is None or state.launched is None:
        raise TaskFilesRefused(f"run {state.run_id} is not a task run")
    git = machinery(str(state.launched.input.get("repo", "")), state.run_id, env)
    # an ended run, or one whose integration worktree went at its end, needs no integration worktree
    log = logged_run(state.run_id, str(git.run_dir), state.tasks,
                     active=not state.terminal and not state.tasks.integration_removed)
    actions = reconcile(log, inventory(git, log), prune_kept=prune_kept)
    lines = describe(actions)
    if dry_run or not actions:
        return lines, []
    applied = carry_out(git, actions)
    heads = {a.action.target: a.head for a in applied if a.ok and a.head}
    events = compensation_events(state.tasks, [a.action for a in applied if a.ok], heads=heads, now=now)
    failed = [f"not done: {a.action.repair.value} {a.action.target}: {a.detail}" for a in applied if not a.ok]
    return lines + failed, events


__all__ = ["DEFAULT_TASKS_DIR", "LAND_STEP", "LAND_WAIT_S", "LandingNotReady", "TaskFilesRefused", "clean_up_cancelled",
           "land", "land_at_gate", "landing", "plan", "plan_with_tasks", "project_of", "read_task_files", "reconciliation", "run_state",
           "tool_counts", "waits_at_gate"]


class LandingNotReady(ActorsError, ValueError):
    """A task run that cannot be landed now (not a task run, under way, no target); the message says why."""


def landing(state: RunState, env: TaskEnv, target: str, now: float) -> Event:
    """Fast-forward ``target`` to the run's integration head: ``RunLanded`` or ``LandingRefused`` (not appended).

    One compare-and-swap of the target ref (``RunWorktrees.land``): nothing half-done to repair. A
    target that already contains the integration head (landed by a process killed before it recorded
    it, or by a person) is recorded as landed there: a landing is never done twice.
    """
    assert state.launched is not None
    git = machinery(str(state.launched.input.get("repo", "")), state.run_id, env)
    head = git.git.branch_head(git.integration_branch)
    old = git.git.branch_head(target)
    if head and old and old != head and git.git.is_ancestor(head, old):
        return RunLanded(target=target, commit=head, at=now)
    done = git.land(target)
    return (RunLanded(target=target, commit=done.commit, at=now) if done.landed
            else LandingRefused(target=target, reason=done.reason, at=now))


def waits_at_gate(state: RunState) -> bool:
    """Whether the run waits for a person's decision at its landing gate."""
    gate = state.steps.get(LAND_STEP)
    return gate is not None and not state.terminal and gate.status == "paused"


def _landable(state: RunState, run_id: str) -> None:
    if state.launched is None:
        raise LandingNotReady(f"no run {run_id!r}")
    if state.tasks is None:
        raise LandingNotReady(f"run {run_id} is not a task run")
    gate = state.steps.get(LAND_STEP)
    rejected_at_gate = state.status == "rejected" and gate is not None and gate.status == "rejected"
    if state.status != "completed" and not rejected_at_gate:
        raise LandingNotReady(f"run {run_id} is {state.status}: only a completed task run (or one whose landing "
                              "was rejected) is landed by this command; a run under way lands at its gate "
                              f"(approve step {LAND_STEP!r})")


def land(store: EventStore, run_id: str, env: TaskEnv, *, target: str = "", by: str = "",
         now: float = 0.0) -> tuple[Event, int]:
    """Land an ended task run's integration branch on ``target`` (default: the run's pinned target), as a
    person's command (the route is the approver's): ``RunLanded`` or ``LandingRefused`` and its position.

    For a run that ended without landing: launched before the landing gate existed (its log is as it
    was), without a target, rejected at its gate, or refused (the person made it a fast-forward since).
    A run under way lands at its gate instead (:func:`land_at_gate`). The event is appended after the
    run's end.
    """
    state, _ = run_state(store, run_id)
    _landable(state, run_id)
    assert state.launched is not None
    branch = target or str(state.launched.input.get("target", ""))
    if not branch:
        raise LandingNotReady("no target branch: give one (the run was launched without --target)")
    event = landing(state, env, branch, now)
    recorded = store.append(stream_of(run_id), new_events([event], {"actor": by or "anonymous",
                                                                    "correlation_id": run_id,
                                                                    "causation_id": "command:land"}),
                            expected_version=state.version)
    return event, recorded[-1].position


LAND_WAIT_S = 120.0
"""How long ``land`` of a run at its gate waits for the run to record its landing after the approval."""


def land_at_gate(engine: Any, run_id: str, *, target: str = "", by: str = "") -> tuple[Event, int] | None:
    """``land`` of a run waiting at its landing gate: the gate is approved (the approval machinery: roles,
    four eyes, the run's own writer) and the landing the run then records is returned with its position.
    None when the run does not wait at its gate (the caller lands an ended run with :func:`land`)."""
    state, _ = run_state(engine.store, run_id)
    if not waits_at_gate(state):
        return None
    assert state.launched is not None
    pinned = str(state.launched.input.get("target", ""))
    if target and target != pinned:
        raise LandingNotReady(f"run {run_id} waits to land on {pinned}, not {target}: approve its gate, or "
                              f"reject it and land the kept branch yourself")
    engine.approve(run_id, LAND_STEP, by=by, comment="landed by the land command")
    engine.wait(run_id, lambda s: s.terminal or (s.tasks is not None and bool(s.tasks.landing)), timeout=LAND_WAIT_S)
    _, history = run_state(engine.store, run_id)
    for position, event in reversed(history):
        if isinstance(event, (RunLanded, LandingRefused)):
            return event, position
    raise LandingNotReady(f"run {run_id} was approved but recorded no landing (see its report)")


def plan_with_tasks(plan: dict[str, Any], store: EventStore) -> dict[str, Any]:
    """The scheduler's plan with each task run's tasks (seed 001: every task's one status and one reason).

    Each entry of ``in_progress`` and ``planned_queued`` whose flow is a task graph has ``tasks``:
    ``{task: {status, reason, detail, waiting_on, phase}}`` (``flows.tasks.run.plan_view``). The
    scheduler's entries carry them already (each task run's actor tells them as they change, and the
    ``plan_delta`` frames carry them too); an entry without them (a cluster's plan, a run not driven
    here) has them folded from its log.
    """
    from flows.tasks.launch import TASK_FLOW

    free = max(0, int(plan.get("agent_slots") or 0) - int(plan.get("slots_in_use") or 0))
    for key in ("in_progress", "planned_queued"):
        for entry in plan.get(key, []):
            if entry.get("flow") != TASK_FLOW or "tasks" in entry:
                continue
            state, _ = run_state(store, entry["run_id"])
            if state.tasks is None:
                continue
            entry["tasks"] = plan_view(state.tasks, free)
    return plan
