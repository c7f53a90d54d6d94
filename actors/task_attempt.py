"""One attempt of a ``task`` step (DESIGN §12, docs/TASKS.md §4): worktree, coder, checks, review, merge, cleanup.

The attempt runs on a thread of the engine's step pool, like an agent
step's model call, but it records as it goes: every phase is appended
(:class:`~flows.events.TaskPhaseChanged`, the intent) **before** git acts,
and every git effect **after** (the fact, with the shas git answered), by
asking the RunActor to append (``append``: the RunActor checks each event
against the lifecycle guard, appends it with the stream's expected version
and answers once it is durable). So a crash at any point leaves an intent
without its fact at worst, which reconciliation repairs (flows.tasks.reconcile).

The model turns go to the run's OpenAI-compatible server through the tool
loop (``actors.agents.toolloop``): the implementor with the task's toolbox
(read + write tools, confined to its worktree), the reviewer with the read
tools over the same worktree and the diff in its prompt. On the ``cli``
backend the implementor is the task template (``BATON_CLI_TASK_COMMAND``)
run once per round with the task's worktree as working directory, and the
reviewer the flow steps' plan-mode template run there too; what it leaves
goes through the same closing commit, checks, review and merge. The
``offline`` backend is a no-op implementor whose reviews approve (the
machinery's own cost, bench/tasks.py).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from actors.agents import AgentRequest, Backend, Cancelled, CancelToken, CliBackend, persona_text
from actors.agents.chat_turn import ChatTurns
from actors.agents.cli import DEFAULT_TASK_COMMAND
from actors.agents.safe_exit import SafeExit, SafeExitObserver
from actors.agents.toolloop import (
    CallRecord,
    LoopLimits,
    LoopObserver,
    PersonMessage,
    TurnFn,
    run_tool_loop,
)
from actors.workspace.commands import run_command
from actors.workspace.errors import CommitRefused
from actors.workspace.results import ToolResult
from actors.workspace.task_tools import TaskCaps, TaskSignals, TaskToolbox
from actors.workspace.tools import Toolbox
from actors.workspace.worktree_results import Cleanup, Conflict, Merged, NothingToMerge
from actors.workspace.worktrees import RunWorktrees
from flows.events import (
    REVIEWER_ROLE,
    Event,
    IntegrationCreated,
    Phase,
    TaskBlocked,
    TaskChecked,
    TaskCleanedUp,
    TaskCommitted,
    TaskDone,
    TaskFailed,
    TaskMergeConflicted,
    TaskMerged,
    TaskNotified,
    TaskPhaseChanged,
    TaskRebased,
    TaskReviewed,
    TaskWorktreeCreated,
    ToolCalled,
)
from flows.events import ToolResult as ToolResulted
from flows.model import StepSpec
from flows.tasks.allow import allowed
from flows.template import parse_frontmatter

Append = Callable[[list[Event]], None]
"""Appends events through the RunActor (raises when the guard refuses one, or the run ended)."""

REVIEWER = "reviewer"
"""The persona of the read-only review of a task's branch."""

REPO_INPUT, ALLOW_INPUT, BASE_INPUT, TARGET_INPUT = "repo", "allow", "base", "target"
"""The run inputs a task run pins at launch: the repository, its allow-list, the base commit, the target branch."""


@dataclasses.dataclass(frozen=True)
class TaskEnv:
    """What every task attempt of one engine is given (settings, the model's turns)."""

    worktrees_dir: Path
    """``BATON_WORKTREES``: each run's worktrees go to ``<dir>/<run>/``."""
    turn: TurnFn | None
    """One model turn against the run's server; None: the offline no-op implementor."""
    run_timeout_s: float = 300.0
    """``BATON_RUN_TIMEOUT_S``: the ``run`` tool and each check."""
    limits: LoopLimits = dataclasses.field(default_factory=LoopLimits)
    git_env: dict[str, str] = dataclasses.field(default_factory=dict)
    refusal: str = ""
    """Why no task attempt can run on this engine ("" when they can): every attempt fails with it."""
    implementor: Backend | None = None
    """A command-line implementor (the ``cli`` backend's task template), used when ``turn`` is None."""
    reviewer: Backend | None = None
    """With ``implementor``: the read-only reviewer (the flow steps' plan-mode template)."""


_MACHINERY: dict[tuple[str, str], RunWorktrees] = {}
_MACHINERY_LOCK = threading.Lock()


def machinery(repo: str, run_id: str, env: TaskEnv) -> RunWorktrees:
    """The run's :class:`RunWorktrees`: one per run in this process (it serialises the run's merges)."""
    key = (repo, run_id)
    with _MACHINERY_LOCK:
        found = _MACHINERY.get(key)
        if found is None:
            found = _MACHINERY[key] = RunWorktrees(repo, run_id, env.worktrees_dir / run_id, env=env.git_env)
        return found


_CREATING: dict[str, threading.Lock] = {}


def _integration_lock(run_id: str) -> threading.Lock:
    with _MACHINERY_LOCK:
        return _CREATING.setdefault(run_id, threading.Lock())


def forget_machinery(run_id: str) -> None:
    """Drop the run's machinery (the run ended)."""
    with _MACHINERY_LOCK:
        for key in [k for k in _MACHINERY if k[1] == run_id]:
            del _MACHINERY[key]
        _CREATING.pop(run_id, None)


@dataclasses.dataclass
class TaskAttempt:
    """One attempt of one task; :meth:`run` does it all and returns the attempt's summary."""

    run_id: str
    spec: StepSpec
    attempt: int
    context: str
    inputs: dict[str, Any]
    model: str
    max_rounds: int
    integration_created: bool
    env: TaskEnv
    append: Append
    inbox: queue.SimpleQueue[PersonMessage] = dataclasses.field(default_factory=queue.SimpleQueue)
    finish_merged: bool = False
    """Recovered after its merge was recorded: only the cleanup is left (never a second merge)."""
    merge_commit: str = ""
    """With ``finish_merged``: the recorded merge commit."""
    in_cleanup: bool = False
    """With ``finish_merged``: the cleanup phase was already entered before the crash."""
    abandon_only: bool = False
    """The task was aborted while no attempt ran (blocked, waiting): only remove its worktree, keep its branch."""
    finished: threading.Event = dataclasses.field(default_factory=threading.Event)
    """Set once :meth:`run` returned or raised: its thread acts on git no more."""
    abandoned: Cleanup | None = None
    """What :meth:`_abandon` did in git (kept even when its ``TaskCleanedUp`` could not be recorded: the run
    had ended; the cleanup after a cancelled run records it)."""

    @property
    def task_id(self) -> str:
        """The task's id (its step id)."""
        return self.spec.id

    @property
    def allow(self) -> list[list[str]]:
        """The project's allow-list, as pinned at launch."""
        return [list(a) for a in self.inputs.get(ALLOW_INPUT, [])]

    def run(self, token: CancelToken) -> str:
        """Every phase of the attempt; its last event ends it (done, blocked, failed, review-capped)."""
        try:
            git = machinery(str(self.inputs[REPO_INPUT]), self.run_id, self.env)
            try:
                return self._phases(git, token)
            except Cancelled:
                self._abandon(git)
                raise
        finally:
            self.finished.set()

    # -- the phases ---------------------------------------------------------------------------

    def _phases(self, git: RunWorktrees, token: CancelToken) -> str:
        tid, attempt = self.task_id, self.attempt
        if self.finish_merged:
            return self._cleanup(git, self.merge_commit, enter=not self.in_cleanup)
        if self.abandon_only:
            self._abandon(git)
            return "cleaned up after the abort"
        if token.cancelled:  # cancelled before its thread started (the run was cancelled): make no worktree
            raise Cancelled("cancelled before it started")
        if not self.integration_created:
            with _integration_lock(self.run_id):  # the run's first tasks start together: one makes it
                made = git.create_integration(str(self.inputs.get(BASE_INPUT) or "HEAD"))
                # Recorded once: the RunActor drops a second one (made before a crash, or by the other task).
                self.append([IntegrationCreated(branch=made.branch, path=str(made.path), base=made.base)])
        tree = git.add_task(tid)
        self.append([TaskWorktreeCreated(step_id=tid, attempt=attempt, path=str(tree.path), branch=tree.branch,
                                         base=tree.base, reused=tree.reused)])
        context, rounds, checks_failed = self.context, 0, 0
        while True:
            self._phase(Phase.CODER, "implementing" if not context else "implementing again")
            if token.cancelled:
                raise Cancelled("aborted")
            blocked = self._code(git, token, context)
            if blocked is not None:
                self.append([TaskBlocked(step_id=tid, attempt=attempt, reason=blocked)])
                return f"blocked: {blocked}"
            self._phase(Phase.CHECKS)
            failing = self._checks(git)
            if failing:
                checks_failed += 1
                if checks_failed >= self.max_rounds:
                    self.append([TaskFailed(step_id=tid, attempt=attempt,
                                            error=f"checks failed {checks_failed} times: {failing.splitlines()[0]}")])
                    self._abandon(git)
                    return "failed: checks"
                context = "A check failed; fix the cause (never the check):\n\n" + failing
                continue
            self._closing_commit(git)
            self._phase(Phase.REVIEW)
            rounds += 1
            approved, review = self._review(git, token, rounds)
            self.append([TaskReviewed(step_id=tid, attempt=attempt, round=rounds, approved=approved, review=review,
                                      capped=not approved and rounds >= self.max_rounds)])
            if not approved:
                if rounds >= self.max_rounds:
                    return f"review rounds ran out ({rounds})"
                context = "The reviewer asked for changes:\n\n" + review
                continue
            self._phase(Phase.MERGE)
            head = git.git.branch_head(git.task_branch(tid)) or ""
            outcome = git.merge(tid, reviewed=head)
            if isinstance(outcome, Conflict):
                self.append([TaskMergeConflicted(step_id=tid, attempt=attempt, files=outcome.files,
                                                 integration_head=outcome.integration_head)])
                back = git.update_task(tid)
                self.append([TaskRebased(step_id=tid, attempt=attempt, onto=back.onto, head=back.head,
                                         conflicts=back.conflicts)])
                context = ("Merging into the integration branch conflicted in: " + ", ".join(outcome.files)
                           + ". Your branch was brought onto the integration head"
                           + (" and these files hold conflict markers: " + ", ".join(back.conflicts)
                              if back.conflicts else "") + ". Resolve them keeping both intents, then commit.")
                continue
            merge_commit = outcome.merge_commit if isinstance(outcome, Merged) else ""
            already = outcome.already if isinstance(outcome, Merged) else False
            task_head = outcome.task_head if isinstance(outcome, (Merged, NothingToMerge)) else head
            self.append([TaskMerged(step_id=tid, attempt=attempt, task_head=task_head, merge_commit=merge_commit,
                                    already=already)])
            return self._cleanup(git, merge_commit)

    def _cleanup(self, git: RunWorktrees, merge_commit: str, *, enter: bool = True) -> str:
        tid = self.task_id
        if enter:
            self._phase(Phase.CLEANUP)
        done = git.remove_task(tid, salvage=False)
        self.append([TaskCleanedUp(step_id=tid, worktree_removed=done.worktree_removed,
                                   branch_deleted=done.branch_deleted, branch_head=done.branch_head,
                                   salvaged=done.salvaged),
                     TaskDone(step_id=tid, attempt=self.attempt, merge_commit=merge_commit)])
        return f"merged {merge_commit[:12]}" if merge_commit else "nothing to merge"

    def _phase(self, phase: Phase, detail: str = "") -> None:
        self.append([TaskPhaseChanged(step_id=self.task_id, attempt=self.attempt, phase=phase, detail=detail)])

    def _code(self, git: RunWorktrees, token: CancelToken, context: str) -> str | None:
        """The implementor's tool loop; the Safe Exit's reason, or None when it answered."""
        if self.env.turn is None:
            if self.env.implementor is not None:  # the cli backend: its task template, in the worktree
                before = git.git.branch_head(git.task_branch(self.task_id)) or ""
                self.env.implementor.run(self._request(git, self._coder_prompt(context), self.spec.persona),
                                         _ignore, token)
                made_by_agent: list[Event] = [
                    TaskCommitted(step_id=self.task_id, attempt=self.attempt, commit=made.sha,
                                  message=made.message.splitlines()[0], files=made.files,
                                  insertions=made.insertions, deletions=made.deletions, by="agent")
                    for made in git.commits_since(self.task_id, before)]
                if made_by_agent:  # the commits the command made itself, as the `commit` tool's are
                    self.append(made_by_agent)
            return None  # else the offline backend: a no-op implementor
        tools = TaskToolbox(git, self.task_id, self.allow,
                            task_caps=TaskCaps(run_timeout_s=self.env.run_timeout_s), env=self.env.git_env)
        observer = _Recorder(self, tools.signals)
        try:
            run_tool_loop(system=persona_text(self.spec.persona), prompt=self._coder_prompt(context),
                          model=self.model, tools=tools,
                          turn=self.env.turn, on_delta=_ignore, cancel=token, limits=self.env.limits,
                          observer=SafeExitObserver(observer, tools.signals), inbox=self.inbox,
                          call_id_prefix=f"{self.task_id}-{self.attempt}")
        except SafeExit as exc:
            observer.flush()  # the blocking call's turn, before TaskBlocked
            return exc.reason
        observer.flush()
        return None

    def _coder_prompt(self, context: str) -> str:
        prompt = (f"You are implementing task `{self.task_id}` ({self.spec.label or self.task_id}).\n\n"
                  f"{self.spec.prompt}")
        if context:
            prompt += f"\n\n## Context for this round\n\n{context}"
        return prompt

    def _request(self, git: RunWorktrees, prompt: str, persona: str) -> AgentRequest:
        """One command-line call, run with the task's worktree as its working directory."""
        return AgentRequest(run_id=self.run_id, step_id=self.task_id, attempt=self.attempt, persona=persona,
                            system=persona_text(persona), prompt=prompt, model=self.model,
                            workdir=str(git.task_path(self.task_id)))

    def _checks(self, git: RunWorktrees) -> str:
        """Run each check in the worktree; the first failing one's description and output ("" when all pass)."""
        for argv in self.spec.checks:
            if not allowed(list(argv), self.allow):
                result_text = f"`{' '.join(argv)}` is not on the project's allow-list"
                self.append([TaskChecked(step_id=self.task_id, attempt=self.attempt, argv=list(argv),
                                         exit_code=None, ok=False, output=result_text)])
                return result_text
            done = run_command(list(argv), git.task_path(self.task_id), timeout_s=self.env.run_timeout_s)
            self.append([TaskChecked(step_id=self.task_id, attempt=self.attempt, argv=list(argv),
                                     exit_code=done.exit_code, ok=done.ok, output=done.output or done.error,
                                     truncated=done.truncated, duration_s=round(done.duration_s, 3))])
            if not done.ok:
                why = done.error or ("timed out" if done.timed_out else f"exit code {done.exit_code}")
                return f"`{' '.join(argv)}`: {why}\n{done.output}"
        return ""

    def _closing_commit(self, git: RunWorktrees) -> None:
        try:
            made = git.commit(self.task_id, "what the implementor left uncommitted")
        except CommitRefused:
            return  # nothing to commit: fine
        self.append([TaskCommitted(step_id=self.task_id, attempt=self.attempt, commit=made.sha,
                                   message=made.message.splitlines()[0], files=made.files,
                                   insertions=made.insertions, deletions=made.deletions, by="baton")])

    def _review(self, git: RunWorktrees, token: CancelToken, round_: int) -> tuple[bool, str]:
        """The read-only reviewer's verdict on ``git diff integrate...task``."""
        diff = git.diff(self.task_id)
        if not diff.strip():
            return True, "nothing changed: nothing to review"
        if self.env.turn is None and self.env.reviewer is None:
            return True, "offline backend: approved without a model"
        prompt = (f"Review task `{self.task_id}` ({self.spec.label or self.task_id}), round {round_}.\n\n"
                  f"## The task\n\n{self.spec.prompt}\n\n## The change (git diff integrate...task)\n\n"
                  f"```diff\n{diff}\n```\n\nAnswer with frontmatter `recommendation: approve` or "
                  "`recommendation: changes_requested`, then your review.")
        if self.env.turn is None:
            assert self.env.reviewer is not None  # the cli backend: its plan-mode template, in the worktree
            output = self.env.reviewer.run(self._request(git, prompt, REVIEWER), _ignore, token).output
            return _verdict(output)
        tools = Toolbox(git.task_path(self.task_id), git=git.at(git.task_path(self.task_id)))
        observer = _Recorder(self, None, role=REVIEWER_ROLE)  # its read calls are recorded as the implementor's
        result = run_tool_loop(system=persona_text(REVIEWER), prompt=prompt, model=self.model, tools=tools,
                               turn=self.env.turn, on_delta=_ignore, cancel=token, limits=self.env.limits,
                               observer=observer, call_id_prefix=f"{self.task_id}-{self.attempt}-review{round_}")
        observer.flush()
        return _verdict(result.output)

    def _abandon(self, git: RunWorktrees) -> None:
        """After an abort: the worktree goes (its work salvaged onto the branch, which is kept)."""
        try:
            done = self.abandoned = git.remove_task(self.task_id, delete_branch=False, salvage=True)
            self.append([TaskCleanedUp(step_id=self.task_id, worktree_removed=done.worktree_removed,
                                       branch_deleted=False, branch_head=done.branch_head, salvaged=done.salvaged)])
        except Exception:  # noqa: BLE001  (the run ended, or git failed: reconciliation finishes the cleanup)
            return


class _Recorder(LoopObserver):
    """Turns an agent's calls into events (``ToolCalled``/``ToolResult`` as §11 records a step's, with the
    agent's ``role``; for the implementor also the commits and notices its calls made), appended once per turn
    before the model sees the results. The RunActor's anomaly watch reads each batch (``on_task_events``)."""

    def __init__(self, attempt: TaskAttempt, signals: TaskSignals | None, *, role: str = "") -> None:
        self.attempt = attempt
        self.signals = signals
        self.role = role
        self.commits = 0
        self.notices = 0
        self.pending: list[Event] = []

    def tool_called(self, call: CallRecord) -> None:
        """Keep the call (as made, a malformed one too) for the turn's append."""
        a = self.attempt
        self.pending.append(ToolCalled(step_id=a.task_id, attempt=a.attempt, call_id=call.call_id, tool=call.tool,
                                       arguments=call.arguments, turn=call.turn, seq=call.seq, role=self.role))

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        """Keep the result, and the commits and notices the call made, for the turn's append."""
        a = self.attempt
        self.pending.append(ToolResulted(step_id=a.task_id, attempt=a.attempt, call_id=call.call_id,
                                         tool=call.tool, ok=result.ok, outcome=result.outcome.value,
                                         result=result.text, sha256=result.sha256, bytes=result.bytes,
                                         truncated=result.truncated, error=result.error, role=self.role))
        signals = self.signals
        if signals is None:  # the reviewer's read tools make no commit and no notice
            return
        for made in signals.commits[self.commits:]:
            self.pending.append(TaskCommitted(step_id=a.task_id, attempt=a.attempt, commit=made.sha,
                                              message=made.message.splitlines()[0], files=made.files,
                                              insertions=made.insertions, deletions=made.deletions, by="agent"))
        for level, text in signals.notices[self.notices:]:
            self.pending.append(TaskNotified(step_id=a.task_id, attempt=a.attempt, level=level, message=text))
        self.commits, self.notices = len(signals.commits), len(signals.notices)

    def before_turn(self, turn: int) -> None:
        """What the model is about to read is durable first."""
        self.flush()

    def flush(self) -> None:
        """Append what is pending (raises, stopping the loop, when the run refuses it)."""
        if self.pending:
            batch, self.pending = self.pending, []
            self.attempt.append(batch)


def _verdict(output: str) -> tuple[bool, str]:
    """The reviewer's frontmatter ``recommendation``: approved or not, and the review."""
    fields, _ = parse_frontmatter(output)
    verdict = str(fields.get("recommendation", "")).strip().lower()
    return verdict == "approve", output.strip() or "(the reviewer said nothing)"


def _ignore(text: str) -> None:
    """Deltas of a task's turns are not streamed as frames (the events say what happened)."""


def task_env(config: Any, backend: Any) -> TaskEnv | None:
    """The task settings an engine gets by default: none without ``worktrees``; the model's turns from an
    ``openai`` backend (its server, key and timeout); for ``cli`` the task template
    (``BATON_CLI_TASK_COMMAND``, checked here: a bad one raises
    :class:`~actors.agents.BackendConfigError`, naming it) as implementor and the backend itself (plan mode)
    as reviewer; a no-op implementor for ``offline``."""
    if not getattr(config, "worktrees", ""):
        return None
    turn: TurnFn | None = None
    implementor: Backend | None = None
    reviewer: Backend | None = None
    refusal = ""
    name = getattr(backend, "name", "")
    if name == "openai":
        turn = ChatTurns(backend.base_url, getattr(backend, "api_key", ""),
                         read_timeout_s=getattr(backend, "read_timeout_s", 120.0))
    elif name == "cli":
        implementor = CliBackend(getattr(config, "cli_task_command", "") or DEFAULT_TASK_COMMAND,
                                 getattr(backend, "default_model", ""), task=True)
        reviewer = backend
    elif name != "offline":
        refusal = (f"the {name or 'configured'} backend cannot run a task's agent; use BATON_AGENT=openai "
                   "or BATON_AGENT=cli")
    return TaskEnv(worktrees_dir=Path(config.worktrees), turn=turn,
                   run_timeout_s=getattr(config, "task_run_timeout_s", 300.0), refusal=refusal,
                   implementor=implementor, reviewer=reviewer)


def check_inputs(inputs: dict[str, Any]) -> str:
    """Why a task run's pinned inputs cannot run an attempt ("" when they can)."""
    repo = inputs.get(REPO_INPUT)
    if not isinstance(repo, str) or not repo:
        return "a task run needs its repository (input 'repo')"
    if not Path(repo).is_dir():
        return f"the task run's repository {repo!r} is not a directory"
    allow = inputs.get(ALLOW_INPUT, [])
    if not isinstance(allow, Sequence) or not all(isinstance(a, Sequence) and not isinstance(a, str)
                                                  for a in allow):
        return "input 'allow' must be a list of argv lists"
    return ""


__all__ = ["ALLOW_INPUT", "BASE_INPUT", "REPO_INPUT", "REVIEWER", "TARGET_INPUT", "Append", "TaskAttempt",
           "TaskEnv", "check_inputs", "forget_machinery", "machinery", "task_env"]
