"""``baton tasks plan|run|status|answer|land|cleanup`` (DESIGN §12).

``answer`` and ``land`` go where ``baton approve`` goes (``api.cli.context.target``): through a live
``baton serve`` of the store (or ``--server``), which drives the run, else in this process; the others
are carried out in this process on the store.

- ``plan PROJECT``: check the project's task files and print the waves (nothing is appended);
- ``run PROJECT``: launch the task graph and drive it here until it ends or waits for a person;
- ``status RUN``: every task's status, reason, phase, branch (folded from the log);
- ``land RUN [--target BRANCH]``: approve a run's landing gate, or fast-forward the target to an ended
  run's integration branch;
- ``cleanup RUN [--dry-run] [--prune-kept]``: reconcile git with the run's log (docs/TASKS.md §7);
- ``answer RUN TASK retry|skip|abort|message [--text T]``: a person's word on one task, then the run is
  followed until it ends or waits for a person (through a server: its route ``POST …/steps/{task}/…``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from actors import task_runs
from actors.engine import new_run_id
from actors.task_attempt import TaskEnv
from api.cli.context import target
from api.cli.errors import CliError
from api.cli.escape import printable_line
from api.cli.local import Local
from api.cli.targets import Remote
from api.failures import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from api.runtime import Runtime
from api.settings import Settings
from eventstore import open_store
from flows.events import stream_of
from flows.state import RunState
from flows.tasks.files import TaskGraphError, waves
from flows.tasks.launch import task_run_launched
from flows.tasks.lifecycle import plan as lifecycle_plan
from flows.tasks.run import refusal

RUN_WAIT_S = 24 * 3600.0
"""How long ``baton tasks run`` drives a run before it gives up waiting (the run goes on under ``baton serve``)."""


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    """Print the waves of a project's task graph, or every problem (one a line)."""
    store = open_store(settings.db)
    try:
        project = task_runs.project_of(store, args.project, time.time)
        try:
            graph = task_runs.plan(project, args.tasks_dir)
        except TaskGraphError as exc:
            for problem in exc.problems:
                print(printable_line(str(problem)), file=sys.stderr)
            return EXIT_USAGE
    finally:
        store.close()
    for n, wave in enumerate(waves(graph), 1):
        print(printable_line(f"wave {n}: {', '.join(wave)}"))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """Launch and drive a task run until it ends or waits for a person; print its tasks (and report)."""
    rounds = args.max_rounds or settings.task_max_rounds
    with Runtime(settings).start(projector=False, recover=False) as runtime:
        engine = runtime.engine
        assert engine is not None
        project = task_runs.project_of(runtime.store, args.project, time.time)
        try:
            graph = task_runs.plan(project, args.tasks_dir)
        except TaskGraphError as exc:
            for problem in exc.problems:
                print(printable_line(str(problem)), file=sys.stderr)
            return EXIT_USAGE
        event = task_run_launched(graph, run_id=new_run_id(), now=engine.clock.now(), project_id=project.project_id,
                                  repo=project.root, allow=project.allow, base=args.base, target=args.target,
                                  max_rounds=rounds, model=args.model or settings.model, backend=settings.agent,
                                  launched_by=f"cli:{settings.node or 'local'}")
        run_id = engine.launch_tasks(event).run_id
        print(printable_line(f"task run {run_id}: {len(graph.tasks)} tasks"), file=sys.stderr)
        state = engine.wait(run_id, lambda s: s.terminal or (s.status == "paused" and not s.running()),
                            timeout=RUN_WAIT_S)
    _print_tasks(state)
    if state.terminal:
        print(state.report)
    return EXIT_OK if state.status in ("completed", "paused") else EXIT_FAILED


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Every task of a task run, from its log."""
    store = open_store(settings.db)
    try:
        state, history = task_runs.run_state(store, args.run)
    finally:
        store.close()
    if state.launched is None:
        raise CliError(EXIT_USAGE, f"no run {args.run!r}")
    if state.tasks is None:
        raise CliError(EXIT_USAGE, f"run {args.run} is not a task run")
    if args.json:
        views, calls = lifecycle_plan(state.tasks, 0), task_runs.tool_counts(state, history)
        print(json.dumps({tid: {"status": t.status.value, "reason": views[tid].reason, "detail": views[tid].detail,
                                "phase": t.phase.value if t.phase else None, "branch": t.branch,
                                "worktree": t.worktree, "merge_commit": t.merge_commit, **calls[tid]}
                          for tid, t in state.tasks.tasks.items()}))
        return EXIT_OK
    _print_tasks(state)
    return EXIT_OK


def cmd_answer(args: argparse.Namespace, settings: Settings) -> int:
    """A person's word on one task, then the run is followed until it ends or waits for a person again.

    Where it goes is chosen as for ``baton approve``: a live ``baton serve`` of the store (or ``--server``)
    gets it on its route (``POST …/steps/{task}/{action}``) and drives the run; in this process
    (``--local``, or no server) the engine here carries it out, or hands it to the inbox of the process
    driving the run, and a run nobody drives is driven here.
    """
    with target(args, settings, engine=True) as where:
        by = f"cli:{settings.node or 'local'}" if isinstance(where, Local) else ""  # a server records its principal
        position = where.task_word(args.run, args.task, args.action, text=args.text, by=by)
        print(printable_line(f"task {args.task} of run {args.run}: {args.action} recorded (position {position})"),
              file=sys.stderr)
        state = where.follow(args.run, None)
    _print_tasks(state)
    if state.terminal:
        print(state.report)
    return EXIT_OK if state.status in ("completed", "paused") else EXIT_FAILED


def cmd_land(args: argparse.Namespace, settings: Settings) -> int:
    """Land a task run: fast-forward only; refused (exit 1) with the reason otherwise.

    A run waiting at its landing gate has the gate approved (driven here, or by the process that drives
    it) and the landing it records is printed; an ended run is landed here, on the store. Through a live
    ``baton serve`` (chosen as for ``baton approve``) its route ``POST /api/runs/{id}/land`` does both.
    """
    with target(args, settings, engine=True) as where:
        if isinstance(where, Remote):
            answer = where.client.land(args.run, target=args.target)
            landed, branch, commit, reason = (bool(answer["landed"]), str(answer["target"]),
                                              str(answer["commit"]), str(answer["reason"]))
            position = int(answer["position"])
        else:
            assert isinstance(where, Local)
            event, position = _land_here(args, settings, where)
            landed, branch = type(event).__name__ == "RunLanded", str(getattr(event, "target", ""))
            commit, reason = str(getattr(event, "commit", "")), str(getattr(event, "reason", ""))
    if landed:
        print(printable_line(f"landed {branch} at {commit[:12]} (position {position})"))
        return EXIT_OK
    print(printable_line(f"not landed: {reason}"), file=sys.stderr)
    return EXIT_FAILED


def _land_here(args: argparse.Namespace, settings: Settings, where: Local) -> tuple[Any, int]:
    """``land`` in this process: approve the gate of a run waiting at it, else land the ended run on the store."""
    store = where.rt.store
    env = TaskEnv(worktrees_dir=settings.worktrees_dir(), turn=None, run_timeout_s=settings.run_timeout_s)
    try:
        state, _ = task_runs.run_state(store, args.run)
        if task_runs.waits_at_gate(state):
            engine = where.start().engine
            assert engine is not None
            gated = task_runs.land_at_gate(engine, args.run, target=args.target,
                                           by=f"cli:{settings.node or 'local'}")
            if gated is not None:
                return gated
            # decided meanwhile by someone else: land it as an ended run, or say why not
        return task_runs.land(store, args.run, env, target=args.target, by="cli", now=time.time())
    except task_runs.LandingNotReady as exc:
        raise CliError(EXIT_USAGE, str(exc)) from None


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    """Reconcile git with an ended task run's log (a run under way is reconciled by its owner at recovery)."""
    store = open_store(settings.db)
    try:
        state, _ = task_runs.run_state(store, args.run)
        if state.launched is None:
            raise CliError(EXIT_USAGE, f"no run {args.run!r}")
        if not args.dry_run and not state.terminal:
            raise CliError(EXIT_USAGE, f"run {args.run} has not ended ({state.status}): its owner reconciles it at "
                                       "recovery; use --dry-run to see what differs")
        env = TaskEnv(worktrees_dir=settings.worktrees_dir(), turn=None, run_timeout_s=settings.run_timeout_s)
        lines, events = task_runs.reconciliation(state, env, dry_run=args.dry_run, prune_kept=args.prune_kept,
                                                 now=time.time())
        for line in lines or ["nothing to do: git and the log agree"]:
            print(printable_line(line))
        if events:
            assert state.tasks is not None
            problem = refusal(state.tasks, events)
            if problem is not None:
                raise CliError(EXIT_FAILED, f"not recorded: {problem}")
            from actors.runlog import new_events  # the one way events become records
            store.append(stream_of(args.run), new_events(events, {"actor": "baton tasks cleanup",
                                                                  "correlation_id": args.run}),
                         expected_version=state.version)
    finally:
        store.close()
    return EXIT_OK


def _print_tasks(state: RunState) -> None:
    assert state.tasks is not None
    views = lifecycle_plan(state.tasks, 0)
    print(printable_line(f"run {state.run_id}: {state.status}"))
    width = max((len(t) for t in state.tasks.tasks), default=4)
    for tid, task in state.tasks.tasks.items():
        view = views[tid]
        detail = f" ({view.detail})" if view.detail else ""
        print(printable_line(f"  {tid:<{width}}  {task.status.value:<14} {view.reason}{detail}"
                             + (f"  [{task.branch}]" if task.branch and not task.branch_deleted else "")))


__all__ = ["cmd_answer", "cmd_cleanup", "cmd_land", "cmd_plan", "cmd_run", "cmd_status"]
