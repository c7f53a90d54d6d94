"""A task run's report sections (DESIGN §12): what each task changed, its checks, reviews and merge;
the task half of the after-action review, with Action Items. Pure: from the state and the events alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from flows.events import (
    Event,
    GitCompensated,
    LandingRefused,
    RunLanded,
    StepPaused,
    StepResumed,
    StepSkipped,
    TaskAborted,
    TaskBlocked,
    TaskChecked,
    TaskCommitted,
    TaskDone,
    TaskFailed,
    TaskMergeConflicted,
    TaskMerged,
    TaskMessaged,
    TaskNotified,
    TaskReviewed,
    TaskStarted,
)
from flows.tasks.lifecycle import TaskRunState
from flows.tasks.run import LAND_STEP

History = Sequence[tuple[int, Event]]


def tasks_section(tasks: TaskRunState, history: History) -> list[str]:
    """``## Tasks``: one row per task (status, files, lines, checks, review rounds, merge)."""
    files: dict[str, set[str]] = {t: set() for t in tasks.tasks}
    lines: dict[str, list[int]] = {t: [0, 0] for t in tasks.tasks}
    checks: dict[str, list[int]] = {t: [0, 0] for t in tasks.tasks}
    reviews: dict[str, list[int]] = {t: [0, 0] for t in tasks.tasks}
    merged: dict[str, str] = {}
    for _, ev in history:
        sid = getattr(ev, "step_id", "")
        if sid not in tasks.tasks:
            continue
        if isinstance(ev, TaskCommitted):
            files[sid].update(ev.files)
            lines[sid][0] += ev.insertions
            lines[sid][1] += ev.deletions
        elif isinstance(ev, TaskChecked):
            checks[sid][0 if ev.ok else 1] += 1
        elif isinstance(ev, TaskReviewed):
            reviews[sid][0 if ev.approved else 1] += 1
        elif isinstance(ev, TaskMerged):
            merged[sid] = f"merged `{ev.merge_commit[:12]}`" if ev.merge_commit else "nothing to merge"
    out = ["## Tasks", "", "| task | status | files | lines | checks | reviews | merge |", "|---|---|---|---|---|---|---|"]
    for sid, task in tasks.tasks.items():
        changed = ", ".join(f"`{f}`" for f in sorted(files[sid])) or "-"
        merge = merged.get(sid) or (f"{task.conflicts} conflict(s)" if task.conflicts else "-")
        ok, failed = checks[sid]
        approved, rejected = reviews[sid]
        out.append(f"| {sid} | {task.status.value} | {changed} | +{lines[sid][0]} -{lines[sid][1]} "
                   f"| {ok} passed, {failed} failed | {approved} approved, {rejected} rejected | {merge} |")
    return out + [""]


def landing_section(tasks: TaskRunState, history: History) -> list[str]:
    """``## Landing``: the gate (asked, decided, or why not asked), the landing or its refusal, and what
    became of the integration worktree. Empty for a run without a gate and without a landing."""
    out: list[str] = []
    for pos, ev in history:
        if isinstance(ev, StepPaused) and ev.step_id == LAND_STEP:
            out.append(f"- Asked for approval to land [event {pos}].")
        elif isinstance(ev, StepResumed) and ev.step_id == LAND_STEP:
            who = f" by {ev.decided_by}" if ev.decided_by else ""
            note = f": {ev.comment}" if ev.comment else ""
            out.append(f"- {ev.decision.capitalize()}{who}{note} [event {pos}].")
        elif isinstance(ev, StepSkipped) and ev.step_id == LAND_STEP:
            out.append(f"- Not asked: {ev.detail} [event {pos}].")
        elif isinstance(ev, RunLanded):
            out.append(f"- Landed: {ev.target} fast-forwarded to `{ev.commit[:12]}` [event {pos}].")
        elif isinstance(ev, LandingRefused):
            out.append(f"- Not landed on {ev.target}: {ev.reason} [event {pos}].")
    if not out:
        return []
    if tasks.integration_removed:
        out.append("- The integration worktree was removed; the integration branch is kept (it is the result).")
    return ["## Landing", "", *out, ""]


ATTEMPT_ENDS = (TaskDone, TaskFailed, TaskBlocked)
"""The events that end a task's attempt (with its number); an abort ends it without one."""


def provenance(tasks: TaskRunState, history: History) -> list[str]:
    """``## Provenance`` of a task run: one row per attempt (persona, how it ended, how long, which events)."""
    rows = ["## Provenance", "", "| task | persona | attempt | ended | duration | events |", "|---|---|---|---|---|---|"]
    begun: dict[tuple[str, int], tuple[int, float]] = {}
    ended: dict[tuple[str, int], tuple[str, int, float]] = {}
    for pos, ev in history:
        if isinstance(ev, TaskStarted):
            begun[(ev.step_id, ev.attempt)] = (pos, ev.at)
        elif isinstance(ev, ATTEMPT_ENDS):
            ended.setdefault((ev.step_id, ev.attempt), (type(ev).__name__.removeprefix("Task").lower(), pos, ev.at))
        elif isinstance(ev, TaskAborted):
            for key in [k for k in begun if k[0] == ev.step_id and k not in ended]:
                ended[key] = ("aborted", pos, ev.at)
    for (sid, attempt), (pos, at) in begun.items():
        how, end, end_at = ended.get((sid, attempt), ("-", 0, at))
        persona = tasks.specs[sid].persona if sid in tasks.specs else "-"
        duration = f"{max(0.0, end_at - at):.1f} s" if end else "-"
        rows.append(f"| {sid} | {persona} | {attempt} | {how} | {duration} | {pos}{f', {end}' if end else ''} |")
    return rows + [""]


def task_review(tasks: TaskRunState, history: History) -> list[str]:
    """The task half of the after-action review: what went wrong, and the Action Items it calls for."""
    wrong: list[str] = []
    items: list[str] = []
    for pos, ev in history:
        if isinstance(ev, TaskBlocked):
            wrong.append(f"- Task {ev.step_id} was blocked ({ev.source}): {ev.reason} [event {pos}].")
            items.append(f"- Answer task {ev.step_id}'s question (retry with context, skip or abort), or "
                         "clarify its task file.")
        elif isinstance(ev, TaskMergeConflicted):
            wrong.append(f"- Task {ev.step_id} conflicted on merge in {', '.join(ev.files)} [event {pos}].")
            items.append(f"- Split the files {', '.join(ev.files)} between tasks, or order the tasks that "
                         "share them with depends_on.")
        elif isinstance(ev, TaskReviewed) and not ev.approved:
            wrong.append(f"- Task {ev.step_id}'s review round {ev.round} asked for changes [event {pos}].")
        elif isinstance(ev, TaskChecked) and not ev.ok:
            wrong.append(f"- Task {ev.step_id}'s check `{' '.join(ev.argv)}` failed "
                         f"(exit {ev.exit_code}) [event {pos}].")
        elif isinstance(ev, TaskFailed):
            what = "lost in a crash" if ev.lost else "failed"
            wrong.append(f"- Task {ev.step_id} attempt {ev.attempt} {what}: {ev.error} [event {pos}].")
            if not ev.will_retry:
                items.append(f"- Find why task {ev.step_id} failed ({ev.error[:120]}) before running it again.")
        elif isinstance(ev, TaskAborted):
            wrong.append(f"- Task {ev.step_id} was aborted: {ev.reason} [event {pos}].")
        elif isinstance(ev, GitCompensated):
            wrong.append(f"- Reconciliation: {ev.action} {ev.target} ({ev.reason}) [event {pos}].")
            items.append("- Leave baton's branches and worktrees to baton (`baton tasks cleanup` repairs them).")
        elif isinstance(ev, TaskNotified) and ev.level.value == "blocking":
            wrong.append(f"- Task {ev.step_id} raised a blocking notice: {ev.message} [event {pos}].")
        elif isinstance(ev, LandingRefused):
            wrong.append(f"- Landing on {ev.target} was refused: {ev.reason} [event {pos}].")
            items.append(f"- Bring {ev.target} and the integration branch together, then `baton tasks land` "
                         "the run.")
        elif isinstance(ev, TaskMessaged):
            continue
    out = ["### What went wrong in the tasks", ""] + (wrong or ["- Nothing: every task merged at its first try."])
    out += ["", "### Action Items", ""] + (list(dict.fromkeys(items)) or ["- None."])
    return out + [""]


__all__ = ["landing_section", "provenance", "task_review", "tasks_section"]
