"""The task machinery against real git repositories: a diamond by hand, a conflict, idempotence, landing.

The diamond is driven the way the integration will drive it: the pure
lifecycle decides (``decide_tasks``) and guards every event (``apply``); the
machinery does the git side; the agent is replaced by calls of the write
tools it would make. Afterwards git shows nothing of the run but its
integration branch, and the person's checkout was never touched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actors.workspace.errors import CommitRefused, RefMoved
from actors.workspace.task_tools import TaskToolbox
from actors.workspace.worktree_results import Conflict, Merged, NothingToMerge
from actors.workspace.worktrees import RunWorktrees, in_memory
from flows.events import Event
from flows.tasks.events import (
    IntegrationCreated,
    Phase,
    TaskChecked,
    TaskCleanedUp,
    TaskCommitted,
    TaskDone,
    TaskMerged,
    TaskPhaseChanged,
    TaskReviewed,
    TaskStarted,
    TaskStatus,
    TaskWorktreeCreated,
)
from flows.tasks.files import load_task_graph, task_steps
from flows.tasks.lifecycle import TaskRunState, apply, decide_tasks, start_state
from tests.integration.task_repo import TaskRepo, make_task_repo

ALLOW = [[sys.executable, "-c"]]


@pytest.fixture
def repo(tmp_path: Path) -> TaskRepo:
    return make_task_repo(tmp_path)


def one_commit_on_task_t(repo: TaskRepo, run_id: str) -> RunWorktrees:
    """The run's integration branch, and task ``t`` with one commit (``t.txt``) on its branch."""
    m = repo.machinery(run_id)
    m.create_integration("main")
    m.add_task("t")
    (m.task_path("t") / "t.txt").write_text("t\n")
    m.commit("t", "t")
    return m


def task_file(task_id: str, deps: str, body: str) -> str:
    return f"---\nid: {task_id}\ntitle: {task_id}\ndepends_on: {deps}\nagent: implementation-specialist\n---\n{body}\n"


DIAMOND = {  # a and b in parallel from the base; c needs both
    "tasks/a.md": task_file("a", "[]", "Add lib_a.py"),
    "tasks/b.md": task_file("b", "[]", "Add lib_b.py"),
    "tasks/c.md": task_file("c", "[a, b]", "Add main.py using both"),
}
WORK = {
    "a": [("write_file", {"path": "src/lib_a.py", "content": "A = 1\n"})],
    "b": [("write_file", {"path": "src/lib_b.py", "content": "B = 2\n"}),
          ("edit_file", {"path": "README.md", "old": "# demo", "new": "# demo\n\nwith b"})],
    "c": [("write_file", {"path": "main.py", "content": "from src.lib_a import A\nfrom src.lib_b import B\n"
                                                        "print(A + B)\n"})],
}


class Coordinator:
    """Appends through the guard; does the git side with the machinery."""

    def __init__(self, machinery: RunWorktrees, state: TaskRunState) -> None:
        self.m = machinery
        self.state = state
        self.log: list[Event] = []

    def append(self, *events: Event) -> None:
        for event in events:
            self.state = apply(self.state, event)
            self.log.append(event)

    def phase(self, tid: str, phase: Phase) -> None:
        self.append(TaskPhaseChanged(step_id=tid, attempt=self.state.tasks[tid].attempt, phase=phase))

    def run_task(self, tid: str) -> None:
        attempt = self.state.tasks[tid].attempt
        made = self.m.add_task(tid)
        self.append(TaskWorktreeCreated(step_id=tid, attempt=attempt, path=str(made.path), branch=made.branch,
                                        base=made.base, reused=made.reused))
        self.phase(tid, Phase.CODER)
        tools = TaskToolbox(self.m, tid, ALLOW)
        for name, args in WORK[tid]:
            result = tools.call(name, args)
            assert result.ok, result.text
        assert tools.call("commit", {"message": f"do {tid}"}).ok
        [done] = tools.signals.commits
        self.append(TaskCommitted(step_id=tid, attempt=attempt, commit=done.sha, files=done.files))
        self.phase(tid, Phase.CHECKS)
        check = tools.call("run", {"argv": [sys.executable, "-c", "import pathlib; print(len(list("
                                            "pathlib.Path('.').rglob('*.py'))))"]})
        assert check.ok and check.text.startswith("exit code 0")
        self.append(TaskChecked(step_id=tid, attempt=attempt, argv=["python"], exit_code=0, ok=True))
        self.phase(tid, Phase.REVIEW)
        diff = self.m.diff(tid)
        assert WORK[tid][0][1]["path"] in diff  # the reviewer sees exactly the task's change
        self.append(TaskReviewed(step_id=tid, attempt=attempt, round=1, approved=True))
        self.phase(tid, Phase.MERGE)
        merged = self.m.merge(tid, reviewed=done.sha)
        assert isinstance(merged, Merged) and not merged.already
        self.append(TaskMerged(step_id=tid, attempt=attempt, task_head=merged.task_head,
                               merge_commit=merged.merge_commit))
        self.phase(tid, Phase.CLEANUP)
        cleaned = self.m.remove_task(tid, salvage=False)  # merged: nothing uncommitted by construction
        assert cleaned.worktree_removed and cleaned.branch_deleted and not cleaned.salvaged
        self.append(TaskCleanedUp(step_id=tid, branch_head=cleaned.branch_head),
                    TaskDone(step_id=tid, attempt=attempt, merge_commit=merged.merge_commit))


def test_a_diamond_by_hand_leaves_only_the_integration_branch(repo: TaskRepo):
    person_head = repo.git("rev-parse", "HEAD").strip()
    m = repo.machinery("R1")
    graph = load_task_graph(DIAMOND.items())
    coord = Coordinator(m, start_state(task_steps(graph)))
    integ = m.create_integration("main")
    coord.append(IntegrationCreated(branch=integ.branch, path=str(integ.path), base=integ.base))
    order: list[list[str]] = []
    while True:
        started = [e for e in decide_tasks(coord.state, slots=2)]
        coord.append(*started)
        wave = [e.step_id for e in started if isinstance(e, TaskStarted)]
        if not wave:
            break
        order.append(wave)
        # Both of a wave have their worktrees before either merges (they run side by side).
        for tid in wave:
            coord.run_task(tid)
    assert order == [["a", "b"], ["c"]]
    assert all(t.status is TaskStatus.DONE for t in coord.state.tasks.values())

    # git shows nothing of the run but the integration branch (and its worktree until removed).
    assert repo.branches() == ["baton/R1/integrate", "main"]
    assert repo.worktree_paths() == [str(repo.root), str(integ.path)]
    m.remove_integration()
    assert repo.worktree_paths() == [str(repo.root)]
    assert not (repo.worktrees / "R1" / "tasks").exists() or not any((repo.worktrees / "R1" / "tasks").iterdir())

    # The integration branch holds each task once, merged --no-ff, with the ids in the messages.
    log = repo.git("log", "--first-parent", "--format=%s|%an <%ae>", "baton/R1/integrate").splitlines()
    assert log == ["baton: merge task c|baton <baton@localhost>", "baton: merge task b|baton <baton@localhost>",
                   "baton: merge task a|baton <baton@localhost>", "initial|Setup Person <setup@example.com>"]
    task_commit = repo.git("log", "-1", "--format=%B", "baton/R1/integrate^2")
    assert task_commit.startswith("c: do c") and "Baton-Task: c\nBaton-Run: R1" in task_commit
    tree = repo.git("ls-tree", "-r", "--name-only", "baton/R1/integrate").split()
    assert sorted(tree) == ["README.md", "app.py", "main.py", "src/lib_a.py", "src/lib_b.py"]
    assert coord.state.integration_head == repo.git("rev-parse", "baton/R1/integrate").strip()

    # The person's checkout was never touched.
    assert repo.git("rev-parse", "HEAD").strip() == person_head
    assert repo.git("status", "--porcelain") == ""


def test_a_conflict_aborts_the_merge_lists_the_file_keeps_the_branch_and_merges_after_the_fix(repo: TaskRepo):
    m = repo.machinery("R2")
    m.create_integration("main")
    for tid, word in (("x", "hi from x"), ("y", "hi from y")):
        m.add_task(tid)
        (m.task_path(tid) / "app.py").write_text(f"def greet():\n    return '{word}'\n")
        m.commit(tid, f"greet from {tid}")
    assert isinstance(m.merge("x"), Merged)
    before = repo.git("rev-parse", "baton/R2/integrate").strip()
    y_head = repo.git("rev-parse", "baton/R2/y").strip()

    outcome = m.merge("y")
    assert isinstance(outcome, Conflict)
    assert outcome.files == ["app.py"] and outcome.integration_head == before
    assert repo.git("rev-parse", "baton/R2/integrate").strip() == before  # nothing landed
    assert repo.git("rev-parse", "baton/R2/y").strip() == y_head  # the branch is kept as it was
    assert repo.git("status", "--porcelain", cwd=m.integration_path) == ""  # no half merge left
    assert not (Path(repo.git("rev-parse", "--absolute-git-dir", cwd=m.integration_path).strip())
                / "MERGE_HEAD").exists()
    # Never resolved by taking one side: the file still says x on the integration branch.
    assert "hi from x" in repo.git("show", "baton/R2/integrate:app.py")

    back = m.update_task("y")
    assert back.conflicts == ["app.py"] and back.onto == before
    marked = (m.task_path("y") / "app.py").read_text()
    assert "<<<<<<<" in marked and "hi from x" in marked and "hi from y" in marked
    with pytest.raises(CommitRefused) as refused:
        m.commit("y", "resolve")
    assert refused.value.reason in ("unresolved-conflicts", "conflict-markers")
    assert m.update_task("y").conflicts == ["app.py"]  # asked again (a retry): the same answer, nothing lost
    (m.task_path("y") / "app.py").write_text("def greet():\n    return 'hi from x and y'\n")
    resolved = m.commit("y", "resolve the greeting with x")
    merged = m.merge("y", reviewed=resolved.sha)
    assert isinstance(merged, Merged)
    assert "hi from x and y" in repo.git("show", "baton/R2/integrate:app.py")


def test_the_integration_worktree_checks_out_only_top_level_files_and_merges_without_the_rest(tmp_path: Path):
    repo = make_task_repo(tmp_path, {"README.md": "# demo\n", "src/app.py": "A = 1\n", "src/deep/lib.py": "L = 1\n"})
    config_before = (repo.root / ".git" / "config").read_text()
    m = repo.machinery("RS")
    integ = m.create_integration("main")

    def files_on_disk() -> list[str]:
        return sorted(str(p.relative_to(integ.path)) for p in integ.path.rglob("*")
                      if p.is_file() and ".git" not in p.parts)

    assert files_on_disk() == ["README.md"]  # no second full checkout for a worktree nobody works in
    for tid, text in (("x", "A = 'x'\n"), ("y", "A = 'y'\n")):
        m.add_task(tid)
        (m.task_path(tid) / "src" / "app.py").write_text(text)
        (m.task_path(tid) / "src" / "deep" / f"{tid}.py").write_text(f"{tid} = 1\n")
        m.commit(tid, f"A from {tid}")
    assert isinstance(m.merge("x"), Merged)
    assert files_on_disk() == ["README.md"]  # a clean merge writes the index, not the files
    assert repo.git("show", "baton/RS/integrate:src/deep/x.py") == "x = 1\n"
    before = repo.git("rev-parse", "baton/RS/integrate").strip()
    conflict = m.merge("y")  # a conflict in a directory nobody checked out is still found and listed
    assert isinstance(conflict, Conflict) and conflict.files == ["src/app.py"]
    assert repo.git("rev-parse", "baton/RS/integrate").strip() == before
    assert repo.git("status", "--porcelain", cwd=integ.path) == ""  # aborted cleanly, even for a person's git
    assert "A = 'x'" in repo.git("show", "baton/RS/integrate:src/app.py")  # never resolved by taking one side
    # Nothing of the sparse checkout is in the person's repository config (no extensions.worktreeConfig).
    assert (repo.root / ".git" / "config").read_text() == config_before
    assert repo.git("status", "--porcelain") == ""


def test_a_branch_that_diverged_without_conflict_is_rebased_linearly(repo: TaskRepo):
    m = repo.machinery("R3")
    m.create_integration("main")
    m.add_task("p")
    m.add_task("q")
    (m.task_path("p") / "p.txt").write_text("p\n")
    m.commit("p", "p")
    (m.task_path("q") / "q.txt").write_text("q\n")
    q_old = m.commit("q", "q").sha
    m.merge("p")
    back = m.update_task("q")
    assert back.conflicts == [] and back.head != q_old
    assert repo.git("rev-parse", f"{back.head}^").strip() == back.onto  # linear: q sits on the new head
    assert (m.task_path("q") / "p.txt").exists()


def test_merging_twice_and_removing_twice_change_nothing_the_second_time(repo: TaskRepo):
    m = one_commit_on_task_t(repo, "R4")
    first = m.merge("t")
    again = m.merge("t")
    assert isinstance(first, Merged) and isinstance(again, Merged) and again.already
    assert again.merge_commit == first.merge_commit
    merges = repo.git("log", "--merges", "--format=%s", "baton/R4/integrate").splitlines()
    assert merges == ["baton: merge task t"]
    assert m.remove_task("t").branch_deleted
    second = m.remove_task("t")
    assert second.branch_deleted and second.branch_head == ""
    assert repo.branches() == ["baton/R4/integrate", "main"]


def test_a_task_that_changed_nothing_has_nothing_to_merge(repo: TaskRepo):
    m = repo.machinery("R5")
    m.create_integration("main")
    m.add_task("idle")
    assert isinstance(m.merge("idle"), NothingToMerge)
    with pytest.raises(CommitRefused) as refused:
        m.commit("idle", "nothing")
    assert refused.value.reason == "nothing-to-commit"


def test_a_branch_that_moved_after_its_review_is_not_merged(repo: TaskRepo):
    m = repo.machinery("R6")
    m.create_integration("main")
    m.add_task("t")
    (m.task_path("t") / "a.txt").write_text("a\n")
    reviewed = m.commit("t", "a").sha
    (m.task_path("t") / "b.txt").write_text("b\n")
    m.commit("t", "b")
    with pytest.raises(RefMoved, match="review again"):
        m.merge("t", reviewed=reviewed)


def test_removing_an_unmerged_task_salvages_its_work_and_keeps_its_branch(repo: TaskRepo):
    m = repo.machinery("R7")
    m.create_integration("main")
    m.add_task("w")
    (m.task_path("w") / "draft.txt").write_text("half done\n")
    cleaned = m.remove_task("w")
    assert cleaned.worktree_removed and not cleaned.branch_deleted and cleaned.salvaged
    assert repo.git("show", "baton/R7/w:draft.txt") == "half done\n"
    assert "w: salvage uncommitted work" in repo.git("log", "-1", "--format=%s", "baton/R7/w")
    again = m.add_task("w")  # a retry continues the kept branch
    assert again.reused and (again.path / "draft.txt").read_text() == "half done\n"


def test_a_new_attempt_continues_the_worktree_with_its_uncommitted_work(repo: TaskRepo):
    m = repo.machinery("R8")
    m.create_integration("main")
    first = m.add_task("t")
    (first.path / "wip.txt").write_text("unsaved\n")
    second = m.add_task("t")
    assert second.reused and second.path == first.path and (second.path / "wip.txt").read_text() == "unsaved\n"


def test_landing_is_fast_forward_only_and_never_in_a_checkout(repo: TaskRepo):
    m = one_commit_on_task_t(repo, "R9")
    m.merge("t")
    refused = m.land("main")
    assert not refused.landed and "checked out in" in refused.reason
    assert f"git -C {repo.root} merge --ff-only baton/R9/integrate" in refused.reason
    repo.git("checkout", "-q", "--detach")
    landed = m.land("main")
    assert landed.landed and landed.commit == repo.git("rev-parse", "main").strip()
    assert m.land("main").landed  # again: already there
    # The target moved on its own: not a fast-forward, the integration branch is kept.
    repo.git("checkout", "-q", "main")
    (repo.root / "other.txt").write_text("x\n")
    repo.git("add", "other.txt")
    repo.git("commit", "-q", "-m", "person's own commit")
    repo.git("checkout", "-q", "--detach")
    (m.task_path("t") / "t2.txt").write_text("t2\n") if m.task_path("t").exists() else None
    m.add_task("u")
    (m.task_path("u") / "u.txt").write_text("u\n")
    m.commit("u", "u")
    m.merge("u")
    moved = m.land("main")
    assert not moved.landed and "not a fast-forward" in moved.reason
    assert "baton/R9/integrate" in repo.branches()
    assert m.land("nope").reason == "there is no branch 'nope'"


def test_repository_hooks_never_run(repo: TaskRepo, tmp_path: Path):
    marker = tmp_path / "hook-ran"
    hook = repo.root / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    for name in ("post-checkout", "post-merge", "commit-msg", "reference-transaction"):
        other = hook.with_name(name)
        other.write_text(hook.read_text())
        other.chmod(0o755)
    m = repo.machinery("RH")
    m.create_integration("main")
    m.add_task("t")
    (m.task_path("t") / "t.txt").write_text("t\n")
    m.commit("t", "t")
    m.merge("t")
    m.remove_task("t")
    assert not marker.exists()


def test_tasks_running_at_once_each_merge_exactly_once_and_leave_nothing(repo: TaskRepo):
    """No read-modify-write race: refs move by compare-and-swap, merges queue on the run's lock."""
    import threading

    m = repo.machinery("RP")
    m.create_integration("main")
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def task(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            tid = f"t{n}"
            made = m.add_task(tid)
            (made.path / f"{tid}.txt").write_text(f"{tid}\n")
            sha = m.commit(tid, f"file of {tid}").sha
            assert isinstance(m.merge(tid, reviewed=sha), Merged)
            assert m.remove_task(tid).branch_deleted
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == []
    merged = repo.git("log", "--first-parent", "--merges", "--format=%s", "baton/RP/integrate").splitlines()
    assert sorted(merged) == [f"baton: merge task t{n}" for n in range(6)]
    tree = repo.git("ls-tree", "--name-only", "baton/RP/integrate").split()
    assert {f"t{n}.txt" for n in range(6)} <= set(tree)
    assert repo.branches() == ["baton/RP/integrate", "main"]
    assert repo.worktree_paths() == [str(repo.root), str(m.integration_path)]


def test_a_commit_moves_the_branch_by_compare_and_swap_with_the_message_git_commit_would_write(repo: TaskRepo):
    m = repo.machinery("RC")
    m.create_integration("main")
    m.add_task("t")
    (m.task_path("t") / "t.txt").write_text("t\n")
    made = m.commit("t", "first line")
    assert repo.git("rev-parse", "baton/RC/t").strip() == made.sha
    assert repo.git("rev-parse", f"{made.sha}^").strip() == repo.base
    assert repo.git("reflog", "-1", "--format=%gs", "baton/RC/t").strip() == "commit: t: first line"
    assert repo.git("status", "--porcelain", cwd=m.task_path("t")) == ""  # the index is the commit
    # A commit made on a HEAD that moved meanwhile is not put on the branch.
    git = m.at(m.task_path("t"))
    (m.task_path("t") / "u.txt").write_text("u\n")
    repo.git("add", "u.txt", cwd=m.task_path("t"))
    with pytest.raises(RefMoved):
        git.commit_index("u", repo.base)
    assert repo.git("rev-parse", "baton/RC/t").strip() == made.sha
    # The message as `git commit -m` would leave it (its whitespace cleanup).
    messy = "\n\n  subject   \n\n\n\nbody\twith tab\t\r\n  \n\n"
    sha = git.commit_index(messy, made.sha)
    expected = subprocess.run(["git", "stripspace"], input=messy, capture_output=True, text=True, check=True).stdout
    assert repo.git("cat-file", "commit", sha).split("\n\n", 1)[1] == expected == "  subject\n\nbody\twith tab\n"


def test_checkout_workers_only_where_files_go_to_a_disk():
    mounts = ("/dev/vda / ext4 rw 0 0\ntmpfs /dev/shm tmpfs rw 0 0\n"
              "tmpfs /mnt/my\\040ram tmpfs rw 0 0\n/dev/vdb /dev/shm/disk ext4 rw 0 0\n")
    assert in_memory(Path("/dev/shm/baton/run"), mounts)
    assert in_memory(Path("/mnt/my ram/run"), mounts)  # mount points come octal-escaped
    assert not in_memory(Path("/dev/shm/disk/run"), mounts)  # the longest mount point decides
    assert not in_memory(Path("/dev/shmx/run"), mounts)
    assert not in_memory(Path("/home/me/worktrees"), mounts)
    assert not in_memory(Path("/anything"), "")  # not known: parallel checkout
