"""The task lifecycle: the guard's rules one by one, then random task runs driven through the pure core.

The property test plays a coordinator (``decide_tasks``) against a random
world: agents commit, block or fail; checks pass or fail; reviewers approve
or reject; merges succeed or conflict; people answer, message or abort.
Every event goes through the guard (``apply``) and is also checked by an
independent reading of DESIGN §12 and seed 001:

- a task never starts before all its deps are done;
- a task is never merged twice (the world tries; the guard must refuse);
- every task has exactly one lifecycle status, with a reason from the right set;
- no planned task is ready while a slot is free after a decision (no starvation);
- no more tasks in progress than slots; every run ends with every task ended;
- ``fold(log)`` equals the live state, also after a JSON round trip of the log.
"""

from __future__ import annotations

from typing import Union

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.events import Event
from flows.tasks.events import (
    TASK_EVENTS,
    Answer,
    NotifyLevel,
    Phase,
    TaskAborted,
    TaskBlocked,
    TaskChecked,
    TaskCleanedUp,
    TaskCommitted,
    TaskDone,
    TaskFailed,
    TaskMergeConflicted,
    TaskMerged,
    TaskMessaged,
    TaskNotified,
    TaskPhaseChanged,
    TaskRebased,
    TaskReviewed,
    TaskStarted,
    TaskStatus,
    TaskWorktreeCreated,
    WaitReason,
)
from flows.tasks.files import TASK_KIND, TaskStepSpec
from flows.tasks.lifecycle import (
    TaskRunState,
    TaskTransitionError,
    answer_events,
    apply,
    check,
    decide_tasks,
    fold,
    lifecycle,
    plan,
    ready,
    start_state,
)

AnyTaskEvent = Union[tuple(TASK_EVENTS)]


def steps(deps: dict[str, tuple[str, ...]], retries: int = 1) -> list[TaskStepSpec]:
    return [TaskStepSpec(id=tid, kind=TASK_KIND, deps=d, retries=retries) for tid, d in deps.items()]


DIAMOND = steps({"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")})


def run_to(state: TaskRunState, tid: str, phase: Phase) -> TaskRunState:
    """Drive task ``tid`` (already started) forward to ``phase`` along the happy path."""
    t = state.tasks[tid]
    path = [Phase.CODER, Phase.CHECKS, Phase.REVIEW, Phase.MERGE, Phase.CLEANUP]
    if t.phase is Phase.WORKTREE:
        state = apply(state, TaskWorktreeCreated(step_id=tid, attempt=t.attempt, path=f"/w/{tid}",
                                                 branch=f"baton/r/{tid}", base="b0"))
    while state.tasks[tid].phase is not phase:
        cur = state.tasks[tid].phase
        nxt = path[path.index(cur) + 1] if cur in path else Phase.CODER
        if nxt is Phase.CHECKS:
            state = apply(state, TaskCommitted(step_id=tid, attempt=t.attempt, commit=f"c-{tid}"))
        if nxt is Phase.MERGE:
            state = apply(state, TaskReviewed(step_id=tid, attempt=t.attempt, round=state.tasks[tid].round + 1,
                                              approved=True))
        if nxt is Phase.CLEANUP:
            state = apply(state, TaskMerged(step_id=tid, attempt=t.attempt, task_head=f"c-{tid}",
                                            merge_commit=f"m-{tid}"))
        state = apply(state, TaskPhaseChanged(step_id=tid, attempt=t.attempt, phase=nxt))
    return state


def finish(state: TaskRunState, tid: str) -> TaskRunState:
    state = run_to(state, tid, Phase.CLEANUP)
    attempt = state.tasks[tid].attempt
    state = apply(state, TaskCleanedUp(step_id=tid))
    return apply(state, TaskDone(step_id=tid, attempt=attempt))


def decided(state: TaskRunState, slots: int) -> TaskRunState:
    for event in decide_tasks(state, slots):
        state = apply(state, event)
    return state


# -- the rules one by one ----------------------------------------------------------


def test_a_task_cannot_start_before_its_deps_are_done_and_the_reason_names_them():
    state = decided(start_state(DIAMOND), slots=4)
    assert state.inprogress() == ["a"]
    with pytest.raises(TaskTransitionError, match="task 'b' cannot start: a not done"):
        apply(state, TaskStarted(step_id="b", attempt=1))
    assert lifecycle(state, "d", 3).waiting_on == ("b", "c")
    assert lifecycle(state, "d", 3).reason == WaitReason.DEPS.value


def test_a_task_is_never_merged_twice():
    state = run_to(decided(start_state(DIAMOND), 1), "a", Phase.CLEANUP)
    assert state.tasks["a"].merges == 1
    again = TaskMerged(step_id="a", attempt=1, task_head="c-a", merge_commit="m2")
    assert check(state, again) is not None
    state = apply(state, TaskCleanedUp(step_id="a"))
    state = apply(state, TaskDone(step_id="a", attempt=1))
    for event in (again, TaskStarted(step_id="a", attempt=2)):
        with pytest.raises(TaskTransitionError):
            apply(state, event)


def test_a_merge_needs_an_approving_review_of_what_is_on_the_branch_now():
    state = run_to(decided(start_state(DIAMOND), 1), "a", Phase.REVIEW)
    with pytest.raises(TaskTransitionError, match="last review did not approve"):
        apply(state, TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.MERGE))
    state = run_to(state, "a", Phase.MERGE)
    # A conflict sends it back to the coder: the resolution must be reviewed again.
    state = apply(state, TaskMergeConflicted(step_id="a", attempt=1, files=["x.py"]))
    state = apply(state, TaskRebased(step_id="a", attempt=1, onto="m0", head="c2", conflicts=["x.py"]))
    state = apply(state, TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.CODER))
    state = apply(state, TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.CHECKS))
    state = apply(state, TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.REVIEW))
    with pytest.raises(TaskTransitionError):
        apply(state, TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.MERGE))
    assert lifecycle(state, "a", 0).reason == Phase.REVIEW.value


def test_each_waiting_reason():
    state = start_state(DIAMOND, max_rounds=1)
    assert lifecycle(state, "a", 1).status is TaskStatus.NEW_QUEUED
    state = decided(state, slots=0)
    assert lifecycle(state, "a", 0).reason == WaitReason.CAPACITY.value
    state = finish(decided(state, slots=1), "a")
    state = decided(state, slots=2)
    assert sorted(state.inprogress()) == ["b", "c"]
    state = run_to(state, "b", Phase.CODER)
    state = apply(state, TaskBlocked(step_id="b", attempt=1, reason="no schema for the table"))
    assert lifecycle(state, "b", 1).status is TaskStatus.BLOCKED
    assert lifecycle(state, "b", 1).detail == "no schema for the table"
    assert (lifecycle(state, "d", 1).reason, lifecycle(state, "d", 1).waiting_on) == ("blocked", ("b",))
    state = run_to(state, "c", Phase.REVIEW)
    state = apply(state, TaskReviewed(step_id="c", attempt=1, round=1, approved=False, review="no tests"))
    c = lifecycle(state, "c", 1)
    assert (c.status, c.reason) == (TaskStatus.PLANNED_QUEUED, WaitReason.REVIEW.value)
    assert "c" not in ready(state)
    with pytest.raises(TaskTransitionError, match="a person answers first"):
        apply(state, TaskStarted(step_id="c", attempt=2))
    for event in answer_events(state, "c", Answer.RETRY, context="add a test for the empty case", by="ana"):
        state = apply(state, event)
    [started] = decide_tasks(state, slots=2)
    assert isinstance(started, TaskStarted) and started.context == "add a test for the empty case"


def test_a_failed_task_aborts_what_depends_on_it_and_the_run_can_end():
    state = decided(start_state(DIAMOND, max_rounds=1), 1)
    state = apply(state, TaskFailed(step_id="a", attempt=1, error="boom", will_retry=False))
    events = decide_tasks(state, slots=2)
    assert [(type(e).__name__, getattr(e, "step_id", "")) for e in events] == [
        ("TaskAborted", "b"), ("TaskAborted", "c"), ("TaskAborted", "d")]
    assert "upstream a" in events[0].reason


def test_skip_and_abort_answers():
    state = run_to(decided(start_state(DIAMOND), 1), "a", Phase.CODER)
    state = apply(state, TaskBlocked(step_id="a", attempt=1, reason="stuck"))
    skipped = answer_events(state, "a", Answer.SKIP, by="ana")
    assert [type(e).__name__ for e in skipped] == ["TaskAnswered", "TaskAborted"]
    aborted = answer_events(state, "a", Answer.ABORT, by="ana")
    assert sorted(e.step_id for e in aborted if isinstance(e, TaskAborted)) == ["a", "b", "c", "d"]
    with pytest.raises(TaskTransitionError, match="no question to answer"):
        answer_events(decided(start_state(DIAMOND), 1), "a", Answer.RETRY)


def test_a_lost_attempt_keeps_its_retry_budget():
    state = decided(start_state(steps({"a": ()}, retries=1)), 1)
    state = apply(state, TaskFailed(step_id="a", attempt=1, error="worktree gone", will_retry=True, lost=True))
    assert state.tasks["a"].retries_left == 1 and state.tasks["a"].status is TaskStatus.PLANNED_QUEUED
    state = decided(state, 1)
    state = apply(state, TaskFailed(step_id="a", attempt=2, error="crashed", will_retry=True))
    assert state.tasks["a"].retries_left == 0


def test_the_plan_has_one_status_per_task():
    state = decided(start_state(DIAMOND), 2)
    shown = plan(state, 1)
    assert {k: v.status for k, v in shown.items()} == {"a": TaskStatus.INPROGRESS, "b": TaskStatus.PLANNED_QUEUED,
                                                        "c": TaskStatus.PLANNED_QUEUED, "d": TaskStatus.PLANNED_QUEUED}


# -- random runs ---------------------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn) -> list[TaskStepSpec]:
    n = draw(st.integers(1, 7))
    deps: dict[str, tuple[str, ...]] = {}
    for i in range(n):
        earlier = [f"t{j}" for j in range(i)]
        deps[f"t{i}"] = tuple(draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3))) if earlier else ()
    return steps(deps, retries=draw(st.integers(0, 2)))


class Drive:
    """Appends events through the guard and checks every invariant after each one."""

    def __init__(self, specs: list[TaskStepSpec], slots: int, max_rounds: int) -> None:
        self.start = start_state(specs, max_rounds=max_rounds)
        self.state = self.start
        self.slots = slots
        self.log: list[Event] = []

    def append(self, event: Event) -> None:
        pre = self.state
        if isinstance(event, TaskStarted):
            assert all(pre.tasks[d].status is TaskStatus.DONE for d in pre.deps(event.step_id)), event
        if isinstance(event, TaskMerged):
            assert pre.tasks[event.step_id].merges == 0
        self.state = apply(pre, event)
        self.log.append(event)
        self.invariants()

    def invariants(self) -> None:
        state = self.state
        free = self.slots - len(state.inprogress())
        assert len(state.inprogress()) <= self.slots
        for tid, t in state.tasks.items():
            life = lifecycle(state, tid, free)
            assert life.status is t.status and life.reason
            if life.status is TaskStatus.PLANNED_QUEUED:
                assert life.reason in {r.value for r in WaitReason}
            if life.status is TaskStatus.INPROGRESS:
                assert life.reason in {p.value for p in Phase}
                assert all(state.tasks[d].status is TaskStatus.DONE for d in state.deps(tid))
            assert t.merges <= 1
            if t.status is TaskStatus.DONE:
                assert t.merges == 1

    def decide(self) -> None:
        for event in decide_tasks(self.state, self.slots):
            self.append(event)
        # Seed 001: planned work that could start does start while a slot is free.
        assert not (ready(self.state) and len(self.state.inprogress()) < self.slots)


def world_step(drive: Drive, draw: st.DrawFn, calm: bool) -> None:
    """One random thing happening: an actor reporting, a person answering, an abort."""
    state = drive.state
    running = state.inprogress()
    waiting = [tid for tid, t in state.tasks.items() if t.status is TaskStatus.BLOCKED or t.review_capped]
    if waiting and (calm or not running or draw(st.booleans())):
        tid = draw(st.sampled_from(waiting))
        answer = Answer.SKIP if calm else draw(st.sampled_from(list(Answer)))
        for event in answer_events(state, tid, answer, context="more context", by="p"):
            drive.append(event)
        return
    tid = draw(st.sampled_from(running))
    t = state.tasks[tid]
    a = t.attempt
    if not calm and draw(st.integers(0, 30)) == 0:
        drive.append(TaskAborted(step_id=tid, reason="aborted by a person", by="p"))
        drive.append(TaskCleanedUp(step_id=tid, branch_deleted=False))
        return
    if not calm and draw(st.integers(0, 10)) == 0:
        drive.append(TaskMessaged(step_id=tid, text="how is it going?", by="p"))
        return
    phase = t.phase
    if phase is Phase.WORKTREE:
        drive.append(TaskWorktreeCreated(step_id=tid, attempt=a, path=f"/w/{tid}", branch=f"b/{tid}", base="m0",
                                         reused=a > 1))
        drive.append(TaskPhaseChanged(step_id=tid, attempt=a, phase=Phase.CODER))
    elif phase is Phase.CODER:
        what = "commit" if calm else draw(st.sampled_from(["commit", "commit", "commit", "block", "fail", "notify"]))
        if what == "commit":
            drive.append(TaskCommitted(step_id=tid, attempt=a, commit=f"c-{tid}-{len(drive.log)}"))
            drive.append(TaskPhaseChanged(step_id=tid, attempt=a, phase=Phase.CHECKS))
        elif what == "block":
            drive.append(TaskBlocked(step_id=tid, attempt=a, reason="missing credentials"))
        elif what == "fail":
            retry = t.retries_left > 0 and draw(st.booleans())
            drive.append(TaskFailed(step_id=tid, attempt=a, error="model unreachable", will_retry=retry))
        else:
            drive.append(TaskNotified(step_id=tid, attempt=a, level=NotifyLevel.INFO, message="halfway"))
    elif phase is Phase.CHECKS:
        ok = calm or draw(st.booleans())
        drive.append(TaskChecked(step_id=tid, attempt=a, argv=["pytest"], exit_code=0 if ok else 1, ok=ok))
        drive.append(TaskPhaseChanged(step_id=tid, attempt=a, phase=Phase.REVIEW if ok else Phase.CODER))
    elif phase is Phase.REVIEW:
        approved = calm or draw(st.booleans())
        drive.append(TaskReviewed(step_id=tid, attempt=a, round=t.round + 1, approved=approved))
        if drive.state.tasks[tid].status is TaskStatus.INPROGRESS:
            drive.append(TaskPhaseChanged(step_id=tid, attempt=a, phase=Phase.MERGE if approved else Phase.CODER))
    elif phase is Phase.MERGE:
        if not calm and draw(st.booleans()):
            drive.append(TaskMergeConflicted(step_id=tid, attempt=a, files=["shared.py"]))
            drive.append(TaskRebased(step_id=tid, attempt=a, onto="m1", head="c9", conflicts=["shared.py"]))
            drive.append(TaskPhaseChanged(step_id=tid, attempt=a, phase=Phase.CODER))
            return
        head = drive.state.tasks[tid].branch_head
        drive.append(TaskMerged(step_id=tid, attempt=a, task_head=head, merge_commit=f"m-{tid}"))
        twice = TaskMerged(step_id=tid, attempt=a, task_head=head, merge_commit=f"m2-{tid}")
        with pytest.raises(TaskTransitionError, match="never merged twice"):
            apply(drive.state, twice)  # a retried merge after a crash must be refused by the log
        drive.append(TaskPhaseChanged(step_id=tid, attempt=a, phase=Phase.CLEANUP))
    else:
        drive.append(TaskCleanedUp(step_id=tid))
        drive.append(TaskDone(step_id=tid, attempt=a, merge_commit=f"m-{tid}"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=graphs(), slots=st.integers(1, 3), max_rounds=st.integers(1, 3), data=st.data())
def test_random_task_runs_keep_every_invariant_and_end(specs, slots, max_rounds, data):
    drive = Drive(specs, slots, max_rounds)
    budget = data.draw(st.integers(0, 120))
    for step in range(2_000):
        drive.decide()
        state = drive.state
        waiting = any(t.status is TaskStatus.BLOCKED or t.review_capped for t in state.tasks.values())
        if not state.inprogress() and not waiting:
            break
        world_step(drive, data.draw, calm=step >= budget)
    else:
        pytest.fail("the run did not end")
    assert all(t.status.terminal for t in drive.state.tasks.values())
    # The fold is the only reader: the log alone gives the same state, also after a JSON round trip.
    assert fold(drive.log, drive.start) == drive.state
    raw = [msgspec.json.encode(e) for e in drive.log]
    assert fold([msgspec.json.decode(b, type=AnyTaskEvent) for b in raw], drive.start) == drive.state
    assert decide_tasks(drive.state, slots) == []


def test_every_proposed_event_round_trips_through_json_as_one_tagged_union():
    from flows.tasks.events import (
        GitCompensated,
        IntegrationCreated,
        IntegrationRemoved,
        LandingRefused,
        RunLanded,
        TaskAnswered,
    )

    samples = [GitCompensated(action="delete-branch", target="baton/R/x", reason="orphan", head="ab" * 20),
               IntegrationCreated(branch="baton/R/integrate", path="/w/R/integrate", base="cd" * 20),
               RunLanded(target="main", commit="ef" * 20), LandingRefused(target="main", reason="not a fast-forward"),
               IntegrationRemoved(branch="baton/R/integrate", path="/w/R/integrate", head="ef" * 20),
               TaskAnswered(step_id="a", answer=Answer.RETRY, context="use port 8080", by="ana")]
    names = {type(s).__name__ for s in samples}
    assert names <= {cls.__name__ for cls in TASK_EVENTS}
    for sample in samples:
        assert msgspec.json.decode(msgspec.json.encode(sample), type=AnyTaskEvent) == sample
