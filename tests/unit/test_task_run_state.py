"""A task run in the pure core: RunState folds its tasks, decide schedules them, the guard holds (flows.tasks.run)."""

from __future__ import annotations

from flows.decide import decide, recover, start
from flows.events import (
    Phase,
    RunStarted,
    TaskBlocked,
    TaskDone,
    TaskMerged,
    TaskPhaseChanged,
    TaskReviewed,
    TaskStarted,
)
from flows.state import fold
from flows.tasks import load_task_graph
from flows.tasks.launch import task_run_launched
from flows.tasks.run import refusal


def task(tid: str, deps: str = "") -> str:
    dep = f"depends_on: {deps}\n" if deps else ""
    return f"---\nid: {tid}\ntitle: Task {tid}\nagent: implementation-specialist\n{dep}---\nDo {tid}.\n"


DIAMOND = {"tasks/a.md": task("a"), "tasks/b.md": task("b", "[a]"), "tasks/c.md": task("c", "[a]"),
           "tasks/d.md": task("d", "[b, c]")}


def launched(max_rounds: int = 3, target: str = "main", land_timeout_s: float = 0.0):
    graph = load_task_graph(DIAMOND.items())
    return task_run_launched(graph, run_id="R", now=1.0, project_id="p", repo="/repo", allow=[["pytest"]],
                             base="main", target=target, max_rounds=max_rounds, land_timeout_s=land_timeout_s)


def test_a_task_run_pins_its_graph_and_folds_every_task_as_new_queued():
    event = launched(max_rounds=2)
    assert [s.id for s in event.snapshot.steps] == ["a", "b", "c", "d", "land"]
    assert event.snapshot.step("d").deps == ("b", "c") and event.input["allow"] == [["pytest"]]
    gate = event.snapshot.step("land")  # the landing gate: an approval after the leaf tasks
    assert gate.kind == "approval" and gate.deps == ("d",)
    assert [s.id for s in launched(target="").snapshot.steps] == ["a", "b", "c", "d"]  # nothing to land on
    state = fold([event, RunStarted(run_id="R", at=1.0)])
    assert state.tasks is not None and state.tasks.max_rounds == 2
    assert {t.status.value for t in state.tasks.tasks.values()} == {"new_queued"}


def test_decide_plans_the_tasks_and_only_the_first_wave_is_ready():
    state = fold([launched(), RunStarted(run_id="R", at=1.0)])
    decision = decide(state, 2.0)
    assert [type(e).__name__ for e in decision.events] == ["TasksPlanned"]
    assert decision.ready == ["a"] and not decision.finished
    state = fold(decision.events, state)
    [started] = start(state, ["a", "b"], 3.0)  # b was not ready: the guard leaves it out
    assert (started.step_id, started.attempt) == ("a", 1)
    state = fold([started], state)
    assert state.steps["a"].status == "running" and state.status == "running"


def test_the_guard_refuses_an_early_start_and_a_merge_without_an_approving_review():
    state = fold([launched(), RunStarted(run_id="R", at=1.0)])
    state = fold(decide(state, 2.0).events, state)
    assert state.tasks is not None
    assert "a not done" in (refusal(state.tasks, [TaskStarted(step_id="b", attempt=1)]) or "")
    state = fold(start(state, ["a"], 3.0), state)
    assert state.tasks is not None
    to_merge = [TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.CODER),
                TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.CHECKS),
                TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.REVIEW),
                TaskPhaseChanged(step_id="a", attempt=1, phase=Phase.MERGE)]
    assert "did not approve" in (refusal(state.tasks, to_merge) or "")


def test_a_blocked_task_pauses_its_step_and_recovery_fails_lost_attempts_for_a_retry():
    state = fold([launched(), RunStarted(run_id="R", at=1.0)])
    state = fold(decide(state, 2.0).events, state)
    state = fold(start(state, ["a"], 3.0), state)
    events = recover(state, 4.0, node="n")
    assert [type(e).__name__ for e in events] == ["TaskFailed", "RunRecovered"]
    assert events[0].lost and events[0].will_retry  # type: ignore[attr-defined]
    blocked = fold([TaskBlocked(step_id="a", attempt=1, reason="which key?")], state)
    assert blocked.steps["a"].status == "paused" and blocked.status == "paused"
    assert blocked.steps["a"].detail == "which key?"


def test_done_tasks_complete_their_steps_and_the_run_finishes_when_every_task_ended():
    state = fold([launched(target=""), RunStarted(run_id="R", at=1.0)])  # no target: no landing gate
    state = fold(decide(state, 2.0).events, state)
    for tid in "abcd":
        state = fold(start(state, [tid], 3.0), state)
        state = fold([TaskPhaseChanged(step_id=tid, attempt=1, phase=p)
                      for p in (Phase.CODER, Phase.CHECKS, Phase.REVIEW)], state)
        state = fold([TaskReviewed(step_id=tid, attempt=1, round=1, approved=True),
                      TaskPhaseChanged(step_id=tid, attempt=1, phase=Phase.MERGE),
                      TaskMerged(step_id=tid, attempt=1, task_head="h", merge_commit="m" + tid),
                      TaskPhaseChanged(step_id=tid, attempt=1, phase=Phase.CLEANUP),
                      TaskDone(step_id=tid, attempt=1, merge_commit="m" + tid)], state)
        assert state.steps[tid].status == "completed"
    assert decide(state, 5.0).finished


def all_done(state, merged: str = "abcd"):
    """Every task of the diamond done; those in ``merged`` changed something."""
    state = fold(decide(state, 2.0).events, state)
    for tid in "abcd":
        state = fold(start(state, [tid], 3.0), state)
        state = fold([TaskPhaseChanged(step_id=tid, attempt=1, phase=p)
                      for p in (Phase.CODER, Phase.CHECKS, Phase.REVIEW)], state)
        commit = "m" + tid if tid in merged else ""
        state = fold([TaskReviewed(step_id=tid, attempt=1, round=1, approved=True),
                      TaskPhaseChanged(step_id=tid, attempt=1, phase=Phase.MERGE),
                      TaskMerged(step_id=tid, attempt=1, task_head="h" + tid, merge_commit=commit),
                      TaskPhaseChanged(step_id=tid, attempt=1, phase=Phase.CLEANUP),
                      TaskDone(step_id=tid, attempt=1, merge_commit=commit)], state)
    return state


def test_the_run_waits_at_its_landing_gate_once_every_task_merged_and_lands_when_approved():
    from flows.decide import finish, has_work, outcome, resume, settled
    from flows.events import RunLanded, StepPaused

    state = all_done(fold([launched(), RunStarted(run_id="R", at=1.0)]), merged="abd")
    decision = decide(state, 5.0)
    [paused] = decision.events
    assert isinstance(paused, StepPaused) and paused.step_id == "land" and not decision.finished
    assert "baton/R/integrate" in paused.prompt and "md" in paused.prompt  # the branch and its head (d's merge)
    state = fold([paused], state)
    assert state.status == "paused" and state.steps["land"].status == "paused" and settled(state, 6.0)
    state = fold(resume(state, "land", "approved", 7.0, by="ann"), state)
    decision = decide(state, 7.0)
    assert decision.land and not decision.finished and not decision.events and has_work(state, 7.0)
    assert state.status == "running" and not settled(state, 7.0)  # approved, not landed: not settled
    state = fold([RunLanded(target="main", commit="md", at=8.0)], state)
    decision = decide(state, 8.0)
    assert decision.finished and not decision.land
    assert outcome(state)[0] == "completed"
    assert "Landed: main fast-forwarded to `md`" in finish(state, [(9, paused), (10, RunLanded(target="main",
                                                                                              commit="md"))],
                                                            9.0).report  # type: ignore[attr-defined]


def test_a_rejected_gate_ends_the_run_rejected_without_landing():
    from flows.decide import finish, outcome, resume
    from flows.events import RunRejected

    state = all_done(fold([launched(), RunStarted(run_id="R", at=1.0)]))
    state = fold(decide(state, 5.0).events, state)
    state = fold(resume(state, "land", "rejected", 6.0, by="ann", comment="not this week"), state)
    decision = decide(state, 6.0)
    assert decision.finished and not decision.land
    status, reason = outcome(state)
    assert status == "rejected" and "'land'" in reason and "not this week" in reason
    ended = finish(state, [], 7.0)
    assert isinstance(ended, RunRejected) and ended.by == "ann"


def test_the_gate_is_not_asked_when_a_task_did_not_finish_or_nothing_changed():
    from flows.decide import outcome
    from flows.events import StepSkipped, TaskAborted

    nothing = all_done(fold([launched(), RunStarted(run_id="R", at=1.0)]), merged="")
    decision = decide(nothing, 5.0)
    [skipped] = decision.events
    assert isinstance(skipped, StepSkipped) and skipped.reason == "condition" and "nothing to land" in skipped.detail
    assert decision.finished and outcome(fold([skipped], nothing))[0] == "completed"

    state = fold([launched(), RunStarted(run_id="R", at=1.0)])
    state = fold(decide(state, 2.0).events, state)
    state = fold([TaskAborted(step_id="a", reason="no", by="ann")], state)
    decision = decide(state, 3.0)  # b, c, d aborted by the coordinator, and the gate skipped, in one decision
    *aborted, skipped = decision.events
    assert [e.step_id for e in aborted] == ["b", "c", "d"]  # type: ignore[attr-defined]
    assert isinstance(skipped, StepSkipped) and skipped.reason == "upstream_failed"
    assert "a, b, c, d did not finish" in skipped.detail and decision.finished
    status, reason = outcome(fold(decision.events, state))
    assert status == "failed" and "'land'" not in reason  # a task is the culprit, not the gate


def test_the_gate_times_out_as_a_rejection_when_it_has_a_timer():
    from flows.events import StepResumed

    state = all_done(fold([launched(land_timeout_s=60.0), RunStarted(run_id="R", at=1.0)]))
    decision = decide(state, 5.0)
    state = fold(decision.events, state)
    assert decision.timer_at == 65.0 and decide(state, 64.0).timer_at == 65.0
    due = decide(state, 65.0)
    [resumed] = due.events
    assert isinstance(resumed, StepResumed) and resumed.decision == "rejected" and resumed.timer
    assert due.finished and not due.land


def test_a_run_without_a_target_completes_after_its_last_task():
    state = all_done(fold([launched(target=""), RunStarted(run_id="R", at=1.0)]))
    decision = decide(state, 5.0)
    assert decision.finished and not decision.events and not decision.land


def test_the_projectors_rule_from_the_event_alone_agrees_with_the_fold_on_every_task_event():
    """flows.tasks.run.step_move (what the projector applies) against the fold's mirror of the task state."""
    from flows.events import Answer, TaskAborted, TaskAnswered, TaskFailed
    from flows.tasks.run import step_move

    state = fold([launched(max_rounds=1), RunStarted(run_id="R", at=1.0)])
    state = fold(decide(state, 2.0).events, state)
    a = [*start(state, ["a"], 3.0), TaskFailed(step_id="a", attempt=1, error="git", will_retry=True)]
    script = [
        a,
        lambda s: start(s, ["a"], 4.0),
        lambda s: [TaskPhaseChanged(step_id="a", attempt=2, phase=Phase.CODER),
                   TaskBlocked(step_id="a", attempt=2, reason="which key?"),
                   TaskAnswered(step_id="a", answer=Answer.RETRY, context="this one")],
        lambda s: start(s, ["a"], 5.0),
        lambda s: [TaskPhaseChanged(step_id="a", attempt=3, phase=p) for p in (Phase.CODER, Phase.CHECKS,
                                                                                  Phase.REVIEW)]
        + [TaskReviewed(step_id="a", attempt=3, round=1, approved=False, review="no", capped=True)],
        lambda s: [TaskAnswered(step_id="a", answer=Answer.SKIP, by="ann"),
                   TaskAborted(step_id="a", reason="skipped by ann", by="ann")],
        lambda s: decide(s, 6.0).events,  # b, c, d are aborted by the coordinator: upstream a did not finish
    ]
    moved = 0
    for step in script:
        events = step if isinstance(step, list) else step(state)
        for event in events:
            state = fold([event], state)
            move = step_move(event)
            if move is not None:
                sid = event.step_id  # type: ignore[attr-defined]
                assert (state.steps[sid].status, state.steps[sid].skip_reason) == move, (event, state.steps[sid])
                moved += 1
    assert moved >= 10 and state.steps["d"].skip_reason == "upstream_failed"
    assert state.steps["a"].status == "cancelled"
