"""flows.decide: each decision function by example, driven the way the RunActor drives it.

``Sim`` below plays the engine: it appends what a decision returns (giving
each event the next position) and folds it, so every test sees the same
state a replay of its log would give.
"""

from __future__ import annotations

from typing import Any

import pytest
from msgspec.structs import replace

from flows import Flow, agent, approval, code
from flows.decide import (
    Decision,
    cancel,
    complete,
    decide,
    fail,
    finish,
    leaves,
    outcome,
    recover,
    resume,
    start,
)
from flows.errors import NotWaiting, RunFinished, UnknownRun, UnknownStep
from flows.events import (
    AnomalyDetected,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunLaunched,
    RunRecovered,
    RunRejected,
    RunStarted,
    StepCancelled,
    StepCompleted,
    StepPaused,
    StepResumed,
    StepSkipped,
    StepStarted,
)
from flows.state import RunState, evolve, fold, status_counts

T0 = 1_000.0


def tally(ctx: Any) -> str:
    """A code step's function; decide only names it, never calls it."""
    return "tallied"


class Sim:
    """A run's log and folded state, advanced the way the engine advances it."""

    def __init__(self, flow: Flow, *, band: str = "medium", inputs: dict[str, Any] | None = None,
                 now: float = T0, started: bool = True, fast: bool = False) -> None:
        self.history: list[tuple[int, Event]] = []
        self.state = RunState()
        self.apply([RunLaunched(run_id="r1", flow=flow.name, snapshot=flow.snapshot(band), band=band,
                                model="qwen", backend="offline", input={"question": "Why?", **(inputs or {})},
                                fast=fast, at=now)])
        if started:
            self.apply([RunStarted(run_id="r1", at=now)])

    def apply(self, events: list[Event]) -> list[Event]:
        for event in events:
            position = len(self.history) + 1
            self.history.append((position, event))
            self.state = evolve(self.state, event, position)
        return events

    def decide(self, now: float) -> Decision:
        decision = decide(self.state, now)
        self.apply(decision.events)
        return decision

    def start(self, *step_ids: str, now: float) -> list[Event]:
        return self.apply(start(self.state, step_ids, now))

    def complete(self, step_id: str, output: str, now: float, **kw: Any) -> list[Event]:
        return self.apply(complete(self.state, step_id, self.state.steps[step_id].attempt, output, now, **kw))

    def fail(self, step_id: str, error: str, now: float, **kw: Any) -> list[Event]:
        return self.apply(fail(self.state, step_id, self.state.steps[step_id].attempt, error, now, **kw))

    def resume(self, step_id: str, decision: str, now: float, **kw: Any) -> list[Event]:
        return self.apply(resume(self.state, step_id, decision, now, **kw))

    def finish(self, now: float) -> Event:
        decision = decide(self.state, now)
        assert decision.finished and not decision.events
        return self.apply([finish(self.state, self.history, now)])[0]

    def status(self, step_id: str) -> str:
        return self.state.steps[step_id].status


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(type(e).__name__, getattr(e, "step_id", "")) for e in events]


# --- starting steps -------------------------------------------------------------

def test_code_steps_start_in_decide_and_agent_steps_wait_for_a_slot() -> None:
    sim = Sim(Flow("f", [agent("a", persona="investigator", prompt="Look: $input.question"),
                         code("c", fn=tally)]))
    d = sim.decide(T0 + 1)
    assert kinds(d.events) == [("StepStarted", "c")]
    assert d.events[0].backend == "code" and d.events[0].attempt == 1
    assert d.ready == ["a"] and sim.status("a") == "pending"
    assert not d.finished and d.wake_at is None

    [started] = sim.start("a", now=T0 + 2)
    assert isinstance(started, StepStarted)
    assert (started.attempt, started.persona, started.backend, started.model) == (1, "investigator", "offline", "qwen")
    assert started.prompt == "Look: Why?" and started.unresolved == []
    assert sim.start("a", now=T0 + 3) == []  # already running: a second slot must not start it twice


def test_start_starts_an_id_given_twice_once() -> None:
    """Regression: each copy of the id got its own StepStarted for the same attempt."""
    sim = Sim(Flow("f", [agent("a", persona="investigator", prompt="x"),
                         agent("b", persona="investigator", prompt="y")]))
    d = sim.decide(T0)
    assert kinds(sim.start(*d.ready, *d.ready, now=T0)) == [("StepStarted", "a"), ("StepStarted", "b")]


def test_start_skips_steps_that_are_not_pending_and_runs_that_ended() -> None:
    sim = Sim(Flow("f", [agent("a", persona="investigator", prompt="x")]))
    sim.decide(T0)
    assert start(sim.state, ["nope"], T0) == []
    sim.apply(cancel(sim.state, sim.history, T0 + 1))
    assert start(sim.state, ["a"], T0 + 2) == []


def test_decide_does_nothing_before_the_run_starts_or_after_it_ends() -> None:
    flow = Flow("f", [code("c", fn=tally)])
    queued = Sim(flow, started=False)
    assert queued.state.status == "queued"
    assert decide(queued.state, T0) == Decision([], [], None, False)
    assert decide(RunState(), T0) == Decision([], [], None, False)
    sim = Sim(flow)
    sim.decide(T0)
    sim.complete("c", "done", T0 + 1)
    sim.finish(T0 + 2)
    assert decide(sim.state, T0 + 3) == Decision([], [], None, False)


def test_decide_is_deterministic() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("b", fn=tally, deps=["a"], when="$a.output.n > 1"),
                         agent("c", persona="reviewer", prompt="$a.output", deps=["a"])]))
    sim.decide(T0)
    sim.complete("a", "---\nn: 1\n---\nbody", T0 + 1)
    assert decide(sim.state, T0 + 2) == decide(sim.state, T0 + 2)


def test_unresolved_refs_are_listed_in_step_started() -> None:
    sim = Sim(Flow("f", [
        code("a", fn=tally),
        code("b", fn=tally),
        agent("w", persona="writer", deps=["a", "b"], trigger_rule="all_done",
              prompt="A: $a.output. B: $b.output.verdict. Mode: $input.mode. Cost: $$5."),
    ]), inputs={"mode": "fast"})
    sim.decide(T0)
    sim.fail("a", "boom", T0 + 1)
    sim.complete("b", "---\nother: 1\n---\n", T0 + 1)
    d = sim.decide(T0 + 2)
    assert d.ready == ["w"]
    [started] = sim.start("w", now=T0 + 3)
    assert started.prompt == "A: . B: . Mode: fast. Cost: $5."  # exactly what is sent
    assert started.unresolved == ["$a.output", "$b.output.verdict"]


# --- skips, conditions and cascades ---------------------------------------------

def test_a_false_when_skips_with_the_expression_and_the_values_it_saw() -> None:
    sim = Sim(Flow("f", [
        agent("classify", persona="triager", prompt="Classify"),
        agent("security", persona="security-reviewer", prompt="Review", deps=["classify"],
              when="$classify.output.severity in ['high', 'critical']"),
    ]))
    sim.decide(T0)
    sim.start("classify", now=T0)
    sim.complete("classify", "---\nseverity: low\n---\nMinor.", T0 + 1)
    d = sim.decide(T0 + 2)
    [skip] = d.events
    assert isinstance(skip, StepSkipped) and skip.step_id == "security" and skip.reason == "condition"
    assert "$classify.output.severity in ['high', 'critical']" in skip.detail
    assert "false" in skip.detail and "$classify.output.severity = 'low'" in skip.detail
    assert d.finished


def test_a_true_when_lets_the_step_run() -> None:
    sim = Sim(Flow("f", [
        code("classify", fn=tally),
        code("security", fn=tally, deps=["classify"], when="$classify.output.severity in ['high', 'critical']"),
    ]))
    sim.decide(T0)
    sim.complete("classify", "---\nseverity: high\n---\n", T0 + 1)
    assert kinds(sim.decide(T0 + 2).events) == [("StepStarted", "security")]


def test_skips_cascade_in_one_decide_call() -> None:
    """A branch switched off by its condition skips everything below it that needs it,
    in one decision (one append), and a join that tolerates skips runs in the same call."""
    sim = Sim(Flow("f", [
        code("a", fn=tally),
        code("b", fn=tally, deps=["a"], when="$a.output.go == true"),
        code("c", fn=tally, deps=["b"]),
        agent("d", persona="reviewer", prompt="x", deps=["c"]),
        code("join", fn=tally, deps=["a", "d"], trigger_rule="none_failed_min_one_success"),
    ]))
    sim.decide(T0)
    sim.complete("a", '{"go": false}', T0 + 1)
    d = sim.decide(T0 + 2)
    assert kinds(d.events) == [("StepSkipped", "b"), ("StepSkipped", "c"), ("StepSkipped", "d"),
                               ("StepStarted", "join")]
    assert [e.reason for e in d.events[:3]] == ["condition", "upstream_skipped", "upstream_skipped"]


def test_a_failure_cascades_as_upstream_failed_and_fails_the_run() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("b", fn=tally, deps=["a"]), code("c", fn=tally, deps=["b"])]))
    sim.decide(T0)
    sim.fail("a", "boom", T0 + 1)
    d = sim.decide(T0 + 2)
    assert [(e.step_id, e.reason) for e in d.events] == [("b", "upstream_failed"), ("c", "upstream_failed")]
    assert d.finished
    end = sim.finish(T0 + 3)
    assert isinstance(end, RunFailed) and "'a' failed: boom" in end.reason
    assert sim.state.status == "failed"


def test_the_outcome_does_not_depend_on_which_parallel_step_ends_first() -> None:
    """Regression: a skipped dep used to skip an all_success leaf as upstream_skipped at once,
    so a sibling that failed afterwards no longer failed the run."""
    flow = Flow("f", [
        code("check", fn=tally, when="$input.strict == true"),
        code("fetch", fn=tally),
        code("publish", fn=tally, deps=["check", "fetch"]),
    ])
    sim = Sim(flow, inputs={"strict": False})
    d = sim.decide(T0)
    assert kinds(d.events) == [("StepSkipped", "check"), ("StepStarted", "fetch")]  # publish waits for fetch
    sim.fail("fetch", "timeout", T0 + 1)
    assert [(e.step_id, e.reason) for e in sim.decide(T0 + 2).events] == [("publish", "upstream_failed")]
    assert isinstance(sim.finish(T0 + 3), RunFailed)


# --- approvals ------------------------------------------------------------------

def gated_flow() -> Flow:
    return Flow("gated", [
        agent("draft", persona="writer", prompt="Draft for $input.question"),
        approval("gate", deps=["draft"], prompt="Publish this? $draft.output", on_reject=["notify"]),
        code("publish", fn=tally, deps=["gate"]),
        agent("announce", persona="writer", prompt="Announce: $gate.output", deps=["publish"]),
        code("notify", fn=tally, deps=["gate"]),
    ])


def paused_at_gate() -> Sim:
    sim = Sim(gated_flow())
    sim.decide(T0)
    sim.start("draft", now=T0)
    sim.complete("draft", "The draft E1", T0 + 1)
    d = sim.decide(T0 + 2)
    [paused] = d.events
    assert isinstance(paused, StepPaused) and paused.prompt == "Publish this? The draft E1"
    assert sim.state.status == "paused" and sim.status("gate") == "paused"
    assert d.ready == [] and not d.finished
    return sim


def test_an_approval_pauses_then_approved_its_dependents_run() -> None:
    sim = paused_at_gate()
    sim.resume("gate", "approved", T0 + 10, by="ana", comment="ship it")
    assert sim.status("gate") == "completed" and sim.state.status == "running"
    assert sim.state.steps["gate"].output == "ship it" and sim.state.steps["gate"].decided_by == "ana"
    d = sim.decide(T0 + 11)
    assert kinds(d.events) == [("StepStarted", "publish"), ("StepStarted", "notify")]
    sim.complete("publish", "ok", T0 + 12)
    sim.complete("notify", "ok", T0 + 12)
    assert sim.decide(T0 + 13).ready == ["announce"]
    [started] = sim.start("announce", now=T0 + 13)
    assert started.prompt == "Announce: ship it"  # $gate.output is the approver's comment
    sim.complete("announce", "done E1", T0 + 14)
    assert isinstance(sim.finish(T0 + 15), RunCompleted)


def test_a_rejection_skips_dependents_except_on_reject_steps_and_rejects_the_run() -> None:
    sim = paused_at_gate()
    [resumed] = sim.resume("gate", "rejected", T0 + 10, by="bo", comment="too risky")
    assert isinstance(resumed, StepResumed) and resumed.decision == "rejected"
    assert sim.status("gate") == "rejected"
    d = sim.decide(T0 + 11)
    assert kinds(d.events) == [("StepSkipped", "publish"), ("StepSkipped", "announce"), ("StepStarted", "notify")]
    assert [e.reason for e in d.events if isinstance(e, StepSkipped)] == ["rejected", "rejected"]
    sim.complete("notify", "told them", T0 + 12)
    end = sim.finish(T0 + 13)
    assert isinstance(end, RunRejected) and end.by == "bo"
    assert end.reason == "step 'gate' was rejected: too risky"  # who rejected is `by`, said once
    assert sim.state.status == "rejected"


def test_on_reject_steps_run_when_they_also_wait_on_a_rejected_sibling_or_sit_further_down() -> None:
    """Regression: a step named in on_reject was skipped as rejected unless the approval
    was its only route to the rejection."""
    sim = Sim(Flow("f", [
        approval("gate", prompt="Go?", on_reject=["cleanup", "report"]),
        code("work", fn=tally, deps=["gate"]),
        code("cleanup", fn=tally, deps=["gate", "work"]),
        code("more", fn=tally, deps=["work"]),
        code("report", fn=tally, deps=["more"]),
        code("other", fn=tally, deps=["more"]),
    ]))
    sim.decide(T0)
    sim.resume("gate", "rejected", T0 + 1)
    d = sim.decide(T0 + 2)
    assert kinds(d.events) == [("StepSkipped", "work"), ("StepStarted", "cleanup"), ("StepSkipped", "more"),
                               ("StepStarted", "report"), ("StepSkipped", "other")]


def test_approval_with_a_false_when_is_skipped_without_pausing() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), approval("gate", deps=["a"], prompt="ok?", when="$a.output.risky")]))
    sim.decide(T0)
    sim.complete("a", '{"risky": false}', T0 + 1)
    d = sim.decide(T0 + 2)
    assert [(e.step_id, e.reason) for e in d.events] == [("gate", "condition")]


def test_resume_refuses_what_is_not_waiting_and_appends_nothing() -> None:
    sim = paused_at_gate()
    before = list(sim.history)
    with pytest.raises(NotWaiting) as info:
        resume(sim.state, "publish", "approved", T0)
    assert (info.value.step_id, info.value.status) == ("publish", "pending")
    assert "not waiting for approval (it is pending)" in str(info.value)
    with pytest.raises(UnknownStep) as unknown:
        resume(sim.state, "nope", "approved", T0)
    assert str(unknown.value) == "run r1 has no step 'nope'"
    with pytest.raises(UnknownRun):
        resume(RunState(run_id="ghost"), "gate", "approved", T0)
    with pytest.raises(ValueError, match="'approved' or 'rejected'"):
        resume(sim.state, "gate", "maybe", T0)  # would be logged, then fail to decode on replay
    assert sim.history == before

    sim.resume("gate", "approved", T0 + 1)
    with pytest.raises(NotWaiting):  # a second click, or a second approver
        resume(sim.state, "gate", "rejected", T0 + 2)


def test_commands_on_a_finished_run_raise_run_finished() -> None:
    sim = paused_at_gate()
    sim.apply(cancel(sim.state, sim.history, T0 + 5))
    with pytest.raises(RunFinished) as info:
        resume(sim.state, "gate", "approved", T0 + 6)
    assert info.value.status == "cancelled" and "already ended (cancelled)" in str(info.value)
    with pytest.raises(RunFinished):
        cancel(sim.state, sim.history, T0 + 6)
    with pytest.raises(UnknownRun):
        cancel(RunState(), [], T0)


# --- attempts: results, retries, recovery ----------------------------------------

def test_complete_records_output_fields_and_usage() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("b", fn=tally)]))
    sim.decide(T0)
    [done] = sim.complete("a", "---\nscore: 7\n---\nbody", T0 + 2, duration_s=2.0, usage={"tokens": 3})
    assert isinstance(done, StepCompleted)
    assert (done.fields, done.fields_error, done.duration_s, done.usage) == ({"score": 7}, "", 2.0, {"tokens": 3})
    [done] = sim.complete("b", "not: [frontmatter", T0 + 2, fields={"n": 1})
    assert done.fields == {"n": 1}  # a code step's dict wins over parsing its text
    sim2 = Sim(Flow("f", [code("a", fn=tally)]))
    sim2.decide(T0)
    [broken] = sim2.complete("a", "---\nkey: [unclosed\n---\n", T0 + 1)
    assert broken.fields == {} and "does not parse" in broken.fields_error


def test_retries_back_off_exponentially_then_give_up() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally, retries=2, retry_delay_s=2.0)]))
    sim.decide(T0)
    [f1] = sim.fail("a", "boom", T0 + 1)
    assert (f1.will_retry, f1.retry_at) == (True, T0 + 3)
    assert sim.status("a") == "pending" and sim.state.status == "running"  # a retry is pending, not paused

    early = sim.decide(T0 + 2)
    assert early.events == [] and early.wake_at == T0 + 3 and not early.finished
    [s2] = sim.decide(T0 + 3).events
    assert isinstance(s2, StepStarted) and s2.attempt == 2

    [f2] = sim.fail("a", "boom", T0 + 4)
    assert (f2.will_retry, f2.retry_at) == (True, T0 + 8)  # 2 s, then 4 s
    assert sim.decide(T0 + 5).wake_at == T0 + 8
    sim.decide(T0 + 8)
    [f3] = sim.fail("a", "boom", T0 + 9)
    assert (f3.will_retry, f3.retry_at) == (False, 0.0)
    assert sim.status("a") == "failed" and sim.state.steps["a"].failures == 3
    assert sim.decide(T0 + 10).finished
    assert isinstance(sim.finish(T0 + 10), RunFailed)


def test_an_agent_retry_comes_back_as_ready_when_due() -> None:
    sim = Sim(Flow("f", [agent("a", persona="investigator", prompt="x", retries=1, retry_delay_s=5)]))
    sim.decide(T0)
    sim.start("a", now=T0)
    sim.fail("a", "timeout", T0 + 1)
    assert sim.decide(T0 + 2).ready == []
    assert sim.decide(T0 + 6).ready == ["a"]
    [again] = sim.start("a", now=T0 + 6)
    assert again.attempt == 2


def test_a_lost_attempt_is_retried_without_using_a_retry() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), agent("b", persona="investigator", prompt="x"),
                         approval("gate", prompt="ok?")]))
    sim.decide(T0)
    sim.start("b", now=T0)
    events = sim.apply(recover(sim.state, T0 + 50, node="n2"))
    assert kinds(events) == [("StepFailed", "a"), ("StepFailed", "b"), ("RunRecovered", "")]
    assert all(e.lost and e.will_retry and e.retry_at == T0 + 50 for e in events[:2])
    assert isinstance(events[-1], RunRecovered) and events[-1].steps == ["a", "b"] and events[-1].node == "n2"
    assert sim.state.steps["a"].failures == 0 and sim.status("gate") == "paused"  # a person is still awaited
    d = sim.decide(T0 + 50)
    assert kinds(d.events) == [("StepStarted", "a")] and d.events[0].attempt == 2 and d.ready == ["b"]
    # The lost attempt used no retry: with retries=0 the next real failure is final and the first counted.
    [gave_up] = sim.fail("a", "boom", T0 + 51)
    assert not gave_up.will_retry and sim.state.steps["a"].failures == 1


def test_recover_on_an_ended_run_does_nothing() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally)]))
    sim.decide(T0)
    sim.complete("a", "x", T0)
    sim.finish(T0)
    assert recover(sim.state, T0 + 1) == []
    assert recover(RunState(), T0) == []


def test_stale_results_are_ignored() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally, retries=1, retry_delay_s=0)]))
    sim.decide(T0)
    sim.fail("a", "boom", T0 + 1)
    sim.decide(T0 + 1)  # attempt 2 starts
    assert complete(sim.state, "a", 1, "late answer from attempt 1", T0 + 2) == []
    assert fail(sim.state, "a", 1, "late error from attempt 1", T0 + 2) == []
    assert complete(sim.state, "a", 3, "from the future", T0 + 2) == []
    assert complete(sim.state, "ghost", 1, "x", T0 + 2) == []
    sim.complete("a", "ok", T0 + 3)
    assert complete(sim.state, "a", 2, "duplicate delivery", T0 + 4) == []


def test_guidance_from_an_anomaly_is_appended_to_the_next_attempt() -> None:
    sim = Sim(Flow("f", [agent("a", persona="investigator", prompt="Look", retries=1, retry_delay_s=0)]))
    sim.decide(T0)
    sim.start("a", now=T0)
    sim.apply([AnomalyDetected(step_id="a", attempt=1, kind="stall", action="nudge", guidance="Be brief.", at=T0)])
    sim.fail("a", "stalled", T0 + 1)
    sim.decide(T0 + 1)
    [again] = sim.start("a", now=T0 + 1)
    assert again.prompt == "Look\n\nBe brief."


# --- cancel ---------------------------------------------------------------------

def test_cancel_stops_running_skips_the_rest_and_ends_the_run() -> None:
    sim = Sim(Flow("f", [
        code("a", fn=tally),
        agent("b", persona="investigator", prompt="x"),
        approval("gate", prompt="ok?"),
        code("c", fn=tally, deps=["a"]),
        code("done", fn=tally),
    ]))
    sim.decide(T0)
    sim.complete("done", "ok", T0)
    events = sim.apply(cancel(sim.state, sim.history, T0 + 1, reason="user asked", by="ana"))
    assert kinds(events) == [("StepCancelled", "a"), ("StepSkipped", "b"), ("StepSkipped", "gate"),
                             ("StepSkipped", "c"), ("RunCancelled", "")]
    assert isinstance(events[0], StepCancelled) and events[0].attempt == 1
    assert all(e.reason == "cancelled" and e.detail == "user asked" for e in events[1:4])
    end = events[-1]
    assert isinstance(end, RunCancelled) and end.by == "ana" and end.reason == "user asked"
    assert end.report.startswith("# f: cancelled")
    assert sim.state.status == "cancelled" and all(s.terminal for s in sim.state.steps.values())
    assert sim.status("done") == "completed"
    assert complete(sim.state, "a", 1, "too late", T0 + 2) == []  # the cancelled attempt's answer


# --- outcome (DESIGN §3: leaves decide) ------------------------------------------

def test_leaves_are_the_steps_nothing_depends_on() -> None:
    snap = gated_flow().snapshot()
    assert leaves(snap) == ["announce", "notify"]


def test_a_failed_middle_step_does_not_fail_the_run_when_an_all_done_leaf_completes() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("b", fn=tally, deps=["a"], trigger_rule="all_done")]))
    sim.decide(T0)
    sim.fail("a", "boom", T0 + 1)
    sim.decide(T0 + 2)
    sim.complete("b", "summary", T0 + 3)
    assert outcome(sim.state) == ("completed", "")
    assert isinstance(sim.finish(T0 + 4), RunCompleted)


@pytest.mark.parametrize(
    ("leaf_rule", "a_ends", "expected"),
    [
        ("all_success", "fail", "failed"),  # leaf skipped as upstream_failed
        ("all_done", "fail", "completed"),  # the leaf tolerated it
        ("one_failed", "complete", "completed"),  # leaf skipped by its rule: a handler not needed
        ("all_failed", "fail", "completed"),  # the handler ran
    ],
)
def test_outcome_follows_the_leaves(leaf_rule: str, a_ends: str, expected: str) -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("leaf", fn=tally, deps=["a"], trigger_rule=leaf_rule)]))
    sim.decide(T0)
    sim.fail("a", "boom", T0) if a_ends == "fail" else sim.complete("a", "ok", T0)
    sim.decide(T0 + 1)
    if sim.status("leaf") == "running":
        sim.complete("leaf", "ok", T0 + 2)
    assert outcome(sim.state)[0] == expected


def test_a_failed_leaf_fails_the_run() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("b", fn=tally)]))
    sim.decide(T0)
    sim.complete("a", "ok", T0)
    sim.fail("b", "disk full", T0)
    assert outcome(sim.state) == ("failed", "step 'b' failed: disk full")


def test_a_failure_outweighs_a_rejection() -> None:
    sim = Sim(Flow("f", [approval("gate", prompt="ok?"), code("b", fn=tally)]))
    sim.decide(T0)
    sim.resume("gate", "rejected", T0)
    sim.fail("b", "boom", T0)
    assert outcome(sim.state)[0] == "failed"


def test_a_rejection_on_the_way_rejects_the_run_even_with_every_leaf_fine() -> None:
    sim = Sim(Flow("f", [approval("gate", prompt="ok?", on_reject=["after"]),
                         code("after", fn=tally, deps=["gate"])]))
    sim.decide(T0)
    sim.resume("gate", "rejected", T0, by="bo")
    sim.decide(T0)
    sim.complete("after", "ok", T0)
    assert outcome(sim.state) == ("rejected", "step 'gate' was rejected")


def test_a_leaf_skipped_by_its_condition_is_a_branch_not_taken() -> None:
    sim = Sim(Flow("f", [code("a", fn=tally), code("b", fn=tally, deps=["a"], when="$a.output.n > 5")]))
    sim.decide(T0)
    sim.complete("a", '{"n": 1}', T0)
    sim.decide(T0)
    assert outcome(sim.state) == ("completed", "")


def test_finish_carries_the_report() -> None:
    sim = Sim(Flow("f", [agent("a", persona="investigator", prompt="x")]))
    sim.decide(T0)
    sim.start("a", now=T0)
    sim.complete("a", "Found it. E1: src/x.py:3", T0 + 2, duration_s=2)
    end = sim.finish(T0 + 3)
    assert isinstance(end, RunCompleted) and "# f: completed" in end.report and "Found it." in end.report
    assert sim.state.report == end.report


def test_the_state_the_engine_kept_equals_a_fold_of_its_log() -> None:
    sim = paused_at_gate()
    sim.resume("gate", "rejected", T0 + 10)
    sim.decide(T0 + 11)
    assert fold(sim.history) == sim.state


def test_an_on_reject_step_waits_for_its_approval_before_a_rejection_elsewhere_skips_it() -> None:
    """Regression: whether a dep skipped as 'rejected' counts for an on_reject step depends
    on its own approval's decision; deciding before that decision made the result depend on
    which approval a person answered first."""
    def run(first: str, second: str) -> tuple[str, str]:
        sim = Sim(Flow("f", [
            approval("g1", prompt="ok?", on_reject=["x"]),
            approval("g2", prompt="ok?"),
            code("b", fn=tally, deps=["g1"], trigger_rule="always"),
            code("a", fn=tally, deps=["g2"]),
            code("x", fn=tally, deps=["a", "b"]),
        ]))
        sim.decide(T0)
        sim.complete("b", "ok", T0 + 1)
        for gate in (first, second):
            sim.resume(gate, "rejected", T0 + 2)
            sim.decide(T0 + 2)
        return sim.status("x"), sim.state.steps["x"].skip_reason

    assert run("g1", "g2") == run("g2", "g1") == ("running", "")


def test_fast_mode_asks_every_agent_step_for_a_concise_answer_in_the_prompt_it_records() -> None:
    from flows.decide import FAST_NOTE

    flow = Flow("f", [code("prep", fn=tally), agent("a", persona="investigator", prompt="Look at $input.question",
                                                    deps=["prep"], retries=1, retry_delay_s=0)])
    sim = Sim(flow, fast=True)
    [prep] = sim.decide(T0).events
    assert isinstance(prep, StepStarted) and prep.prompt == ""  # a code step has no prompt to shorten
    sim.complete("prep", "ok", T0)
    assert sim.decide(T0).ready == ["a"]
    [first] = sim.start("a", now=T0)
    assert first.prompt == f"Look at Why?\n\n{FAST_NOTE}"
    slow = Sim(flow)
    slow.decide(T0)
    slow.complete("prep", "ok", T0)
    slow.decide(T0)
    assert slow.start("a", now=T0)[0].prompt == "Look at Why?"


def test_a_decision_carries_the_state_its_events_lead_to() -> None:
    """``Decision.state`` is the fold of its events over the state decided on (the RunActor takes it
    rather than folding them again): through skips, starts, pauses and a timer's resume."""
    flow = Flow("mixed", [
        code("a", fn=tally),
        code("b", fn=tally, when="$input.go == 'yes'"),
        code("c", fn=tally, deps=["b"]),
        approval("gate", deps=["a"], prompt="ok? $a.output", timeout_s=5),
        agent("d", persona="writer", prompt="after $gate.output", deps=["gate"]),
    ])
    sim = Sim(flow, inputs={"go": "no"})
    seen = 0
    for now in (T0, T0 + 2, T0 + 10, T0 + 11):
        before = sim.state
        decision = decide(before, now)
        folded = fold(decision.events, before)
        assert decision.state == folded and status_counts(decision.state) == status_counts(replace(folded))
        seen += len(decision.events)
        sim.apply(decision.events)
        if sim.status("a") == "running":
            sim.complete("a", "done", now + 1)
    assert seen >= 4 and sim.status("gate") in ("completed", "rejected")
