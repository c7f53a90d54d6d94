"""What a new user read wrong on the command line: the default band, fast mode, the approver twice, "1 runs"."""

from __future__ import annotations

from flows.decide import FAST_NOTE


def test_launch_defaults_to_the_small_band_and_fast_asks_every_agent_step_for_a_concise_answer(baton):
    result = baton.ok("launch", "research", "-q", "Why is the build slow?", "--fast")
    assert "band small, fast" in result.out
    events = baton.events(result.run_id)
    launched = events[0].data
    assert (launched["band"], launched["fast"]) == ("small", True)
    prompts = [e.data["prompt"] for e in events if e.type == "StepStarted" and e.data["kind"] == "agent"]
    assert prompts and all(p.endswith(FAST_NOTE) for p in prompts)
    assert "| small, fast |" in events[-1].data["report"]
    plain = baton.ok("launch", "research", "-q", "Why is the build slow?")
    assert baton.events(plain.run_id)[0].data["fast"] is False
    assert not any(FAST_NOTE in e.data.get("prompt", "") for e in baton.events(plain.run_id))


def test_a_rejected_run_names_its_approver_once(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 43").run_id
    baton.ok("reject", run_id, "approve", "--comment", "not like this", "--by", "rootie")
    out = baton.ok("show", run_id).out
    (reason,) = [line for line in out.splitlines() if line.startswith("reason:")]
    assert reason.count("rootie") == 1, reason
    report = baton.ok("show", run_id, "--report").out
    (outcome,) = [line for line in report.splitlines() if line.startswith("**Outcome:**")]
    assert outcome == "**Outcome:** rejected by rootie at step 'approve': not like this"


def test_replay_counts_one_run_in_the_singular(baton):
    baton.ok("launch", "research", "-q", "Why?")
    out = baton.ok("replay", "--verify").out
    assert ", 1 run, hash chains intact" in out
