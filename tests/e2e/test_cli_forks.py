"""``baton fork`` and ``baton retry`` as a person runs them (DESIGN §15)."""

from __future__ import annotations

from baton_cli import FIXTURE_FLOWS


def test_fork_keeps_what_came_before_and_retry_refuses_a_completed_step(baton):
    parent = baton.ok("--flows", FIXTURE_FLOWS, "launch", "e2e-quick", "-q", "What is quick?").run_id
    forked = baton.ok("--flows", FIXTURE_FLOWS, "fork", parent[:12], "join", "--input", "extra=3")
    child = forked.run_id
    assert f"forked at step 'join' of run {parent}" in forked.out and f"run {child} completed" in forked.out
    events = baton.events(child)
    assert [e.type for e in events[:2]] == ["RunLaunched", "RunForked"]
    assert events[0].data["input"] == {"question": "What is quick?", "extra": 3}
    assert events[1].data["copied_steps"] == ["prep", "a1", "a2"]
    assert [e.data["step_id"] for e in events if e.type == "StepStarted"] == ["prep", "a1", "a2", "join"]
    shown = baton.ok("show", child).out
    kept = [line for line in shown.splitlines() if f"kept from run {parent}" in line]
    assert [line.split()[1] for line in kept] == ["prep", "a1", "a2"], shown

    head = baton.head()
    refused = baton("--flows", FIXTURE_FLOWS, "retry", parent, "join")
    assert refused.code == 2 and "cannot be retried: it is completed" in refused.err
    assert baton("--flows", FIXTURE_FLOWS, "fork", parent, "join", "--input", "oops").code == 2
    assert baton.head() == head


def test_retry_reruns_a_failed_step(baton):
    parent = baton("--flows", FIXTURE_FLOWS, "launch", "e2e-failing", "-q", "x").run_id
    retried = baton("--flows", FIXTURE_FLOWS, "retry", parent, "broken")
    assert retried.code == 1  # it fails again: broken always raises
    child = retried.run_id
    assert f"retried step 'broken' of run {parent}" in retried.out
    events = baton.events(child)
    assert events[1].type == "RunForked" and events[1].data["retry"] is True
    assert events[-1].type == "RunFailed" and f"Retried from run `{parent}`" in events[-1].data["report"]


def test_show_names_the_parent_and_the_children(baton):
    parent = baton("--flows", FIXTURE_FLOWS, "launch", "e2e-failing", "-q", "x").run_id
    child = baton("--flows", FIXTURE_FLOWS, "retry", parent, "broken").run_id
    assert f"retry of run {parent} at step broken" in baton.ok("show", child).out
    assert f"retry: run {child} (e2e-failing, failed) from step broken" in baton.ok("show", parent).out
