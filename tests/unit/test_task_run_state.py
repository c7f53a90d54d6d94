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


def launched(max_rounds: int = 3):
    graph = load_task_graph(DIAMOND.items())
    return task_run_launched(graph, run_id="R", now=1.0, project_id="p", repo="/repo", allow=[["pytest"]],
                             base="main", target="main", max_rounds=max_rounds)


def test_a_task_run_pins_its_graph_and_folds_every_task_as_new_queued():
    event = launched(max_rounds=2)
    assert [s.id for s in event.snapshot.steps] == ["a", "b", "c", "d"]
    assert event.snapshot.step("d").deps == ("b", "c") and event.input["allow"] == [["pytest"]]
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
    state = fold([launched(), RunStarted(run_id="R", at=1.0)])
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
