"""A process doing one step of the task machinery, stopped at a point the test picks, then killed -9.

    python -m tests.e2e.task_crash_worker MODE REPO RUN_ID RUN_DIR ENV_JSON READY_FIFO TASK

It writes one line to ``READY_FIFO`` when it reaches the point, then waits
to be killed. The points:

- ``write``: ``write_file`` has written half the new content to its temp
  file (``os.write`` is wrapped in this process only);
- ``add``: inside the checkout of a new task worktree (a smudge filter
  blocks while git writes the files);
- ``commit``: inside ``git add`` (a clean filter configured in the test
  repository blocks while git holds ``index.lock``);
- ``merge``: inside ``git merge`` (a merge driver blocks while git holds the
  integration worktree's ``index.lock``);
- ``merge-stopped``: git stopped the merge on a conflict (``MERGE_HEAD``
  written), before baton aborted it;
- ``merged``: the merge commit is made; the process dies before the
  coordinator could record it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from actors.workspace import git as git_module
from actors.workspace import writes
from actors.workspace.task_tools import TaskToolbox
from actors.workspace.worktrees import RunWorktrees


def ready(fifo: str) -> None:
    """Say we are at the point, then wait for SIGKILL."""
    with open(fifo, "w") as f:
        f.write("ready\n")
    threading.Event().wait()


def main(argv: list[str]) -> int:
    mode, repo, run_id, run_dir, env_json, fifo, task = argv
    m = RunWorktrees(repo, run_id, run_dir, env=json.loads(env_json))
    if mode == "write":
        real_write = os.write

        def half_then_stop(fd: int, data: bytes | memoryview) -> int:
            done = real_write(fd, bytes(data[: len(data) // 2]))
            ready(fifo)
            return done

        writes.os.write = half_then_stop  # type: ignore[attr-defined]
        TaskToolbox(m, task, []).call("write_file", {"path": "notes.txt", "content": "NEW " * 10_000})
    elif mode == "add":
        m.add_task(task)  # the smudge filter calls ready() for us
    elif mode == "commit":
        m.commit(task, "add the data file")  # the clean filter calls ready() for us
    elif mode == "merge":
        m.merge(task)  # the merge driver calls ready() for us
    elif mode == "merge-stopped":
        real = git_module.Git.unmerged_paths

        def stop_after_git(self: git_module.Git) -> list[str]:
            if (self.git_dir() / "MERGE_HEAD").exists():
                ready(fifo)
            return real(self)

        git_module.Git.unmerged_paths = stop_after_git  # type: ignore[method-assign]
        m.merge(task)
    elif mode == "merged":
        m.merge(task)
        ready(fifo)
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main(sys.argv[1:]))
