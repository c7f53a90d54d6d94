"""A process driving a task run, killed -9 in the middle of a task's merge.

    python -m tests.e2e.task_run_worker DB REPO WORKTREES BASE_URL ENV_JSON FIFO FILES_JSON TASK [WHEN [TARGET]]

It writes ``ready RUN_ID`` to ``FIFO`` and waits to be killed: with WHEN
``after`` (the default) once ``git merge`` of ``TASK`` has made its commit
in the integration worktree (not yet recorded); with ``before`` once the
merge phase is recorded and git has not merged yet. The run lands on
TARGET (none by default: no landing gate). With a TARGET, WHEN may be
``gate`` (the run waits at its landing gate), ``approved`` (the gate was
approved and recorded, git has not landed yet) or ``landed`` (git moved the
target, the landing is not recorded).
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from actors.agents.chat_turn import ChatTurns
from actors.config import EngineConfig
from actors.engine import Engine
from actors.task_attempt import TaskEnv
from actors.workspace.worktree_results import Merged
from actors.workspace.worktrees import RunWorktrees
from eventstore import open_store
from flows.catalog import FlowRegistry
from flows.tasks import load_task_graph
from flows.tasks.launch import task_run_launched

MODEL = "coder"


def main(argv: list[str]) -> int:
    db, repo, worktrees, base_url, env_json, fifo, files_json, task, *rest = argv
    when = rest[0] if rest else "after"
    target = rest[1] if len(rest) > 1 else ""
    run: dict[str, str] = {}
    real = RunWorktrees.merge_commit
    real_land = RunWorktrees.land

    def stop() -> None:
        with open(fifo, "w") as f:
            f.write(f"ready {run['id']}\n")
        threading.Event().wait()

    def merge_then_stop(self: RunWorktrees, task_id: str, sha: str) -> Any:
        if task_id == task and when == "before":
            stop()
        outcome = real(self, task_id, sha)
        if task_id == task and when == "after" and isinstance(outcome, Merged) and not outcome.already:
            stop()
        return outcome

    def land_then_stop(self: RunWorktrees, branch: str) -> Any:
        if when == "approved":
            stop()
        outcome = real_land(self, branch)
        if when == "landed":
            stop()
        return outcome

    RunWorktrees.merge_commit = merge_then_stop  # type: ignore[method-assign]
    RunWorktrees.land = land_then_stop  # type: ignore[method-assign]
    env = TaskEnv(worktrees_dir=Path(worktrees), turn=ChatTurns(base_url), run_timeout_s=30.0,
                  git_env=json.loads(env_json))
    engine = Engine(open_store(db), FlowRegistry([]), EngineConfig(agent_slots=4, backend="openai", model=MODEL,
                                                                   lease_ttl_s=1.0, node="worker"), tasks=env).start()
    graph = load_task_graph(json.loads(files_json).items())
    event = task_run_launched(graph, run_id="KILLED1", now=engine.clock.now(), project_id="demo", repo=repo, allow=[],
                              base="main", target=target, max_rounds=3, model=MODEL, backend="openai")
    run["id"] = engine.launch_tasks(event).run_id
    if when == "gate":
        engine.wait(run["id"], lambda s: s.steps.get("land") is not None and s.steps["land"].status == "paused",
                    timeout=60)
        stop()
    elif when in ("approved", "landed"):
        engine.wait(run["id"], lambda s: s.steps.get("land") is not None and s.steps["land"].status == "paused",
                    timeout=60)
        try:  # answered after the landing, which is held back here until the kill
            engine.approve(run["id"], "land", by="ann")
        except Exception:  # noqa: BLE001  (an ask timeout: the kill comes anyway)
            pass
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
