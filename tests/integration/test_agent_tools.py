"""Agent steps that read a project (DESIGN §11), end to end: engine, store, a scripted vLLM-style server, real git.

The server streams tool calls the way vLLM does (arguments in pieces across
chunks, parallel calls interleaved); the repository is a real temporary git
work tree with every confinement trap (``workspace_repo``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actors.agents import OpenAIBackend
from actors.agents.toolcalls import ModelTurn
from actors.clock import RealClock
from actors.config import EngineConfig
from actors.engine import Engine
from actors.workspace.tools import TOOL_SCHEMA_HASH
from eventstore import open_store
from flows import Flow, agent
from flows.catalog import FlowRegistry
from flows.events import stream_of
from tests.integration.scripted_llm import (
    Call,
    ScriptedLLM,
    TextTurn,
    ToolTurn,
    usage_of,
)
from tests.integration.workspace_repo import SECRET, make_repo

READ = Call("read_file", {"path": "src/app.py", "start_line": 10, "end_line": 11})
SEARCH = Call("search", {"pattern": r"retries\s*=", "path": "src"})
LOG = Call("git_log", {"max_count": 1})
ANSWER = 'It retries three times.\n\nE1: "retries = 3" (source: src/app.py:11; trust: direct)\n'


def explore_flow(name: str, **options: Any) -> Flow:
    policy = options.pop("on_anomaly", "")
    return Flow(name, on_anomaly=policy, steps=[
        agent("explore", persona="codebase-explorer", prompt="Explore: $input.question", tools=True, **options)])


REGISTRY = FlowRegistry([
    explore_flow("explore"),
    explore_flow("explore-short", max_turns=1),
    explore_flow("explore-abort", on_anomaly="abort"),
    Flow("merge", steps=[agent("merge", persona="synthesizer", prompt="Merge: $input.question")]),
])


class Spy:
    """Stands in for the backend's turns: before each turn, notes the tool events the log already has."""

    def __init__(self, inner: Any, store: Any) -> None:
        self.inner, self.store, self.seen = inner, store, []
        self.run_id = ""

    def __call__(self, request: Any, on_delta: Any, cancel: Any) -> ModelTurn:
        if self.run_id:
            types = [r.type for r in self.store.read_stream(stream_of(self.run_id))]
            self.seen.append((request.turn, types.count("ToolCalled"), types.count("ToolResult")))
        return self.inner(request, on_delta, cancel)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def setup(llm, store_url, tmp_path):
    with llm._lock:  # each test (and store) reads only its own requests
        llm.requests.clear()
        llm.arrived.clear()
    store = open_store(store_url)
    backend = OpenAIBackend(llm.base_url, model="unused", read_timeout_s=10)
    spy = Spy(backend._chat_turns(), store)
    backend._turns = spy  # type: ignore[assignment]
    engine = Engine(store, REGISTRY, EngineConfig(backend="openai", agent_slots=2), backend=backend,
                    clock=RealClock()).start()
    repo = make_repo(tmp_path)
    engine.projects.add("demo", repo.root, by="test")
    try:
        yield engine, store, spy, repo
    finally:
        engine.stop()
        store.close()


def events(store, run_id) -> list[Any]:
    return store.read_stream(stream_of(run_id))


def of(store, run_id, type_name) -> list[dict[str, Any]]:
    return [r.data for r in events(store, run_id) if r.type == type_name]


def launch(engine, spy, flow: str, model: str, project: str = "demo") -> str:
    run_id = engine.launch(flow, "How often does handle_request retry?", model=model, project_id=project).run_id
    spy.run_id = run_id
    return run_id


def test_a_tool_step_reads_the_project_and_every_call_is_logged_before_the_next_turn(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-read", [ToolTurn([READ, SEARCH], interleave=True), ToolTurn([LOG]), TextTurn(ANSWER)])
    run_id = launch(engine, spy, "explore", "m-read")
    assert engine.wait(run_id).status == "completed"
    started = of(store, run_id, "StepStarted")[0]
    assert started["system"].startswith("# Codebase explorer")
    assert started["tool_schema_hash"] == TOOL_SCHEMA_HASH
    assert started["tools"] == ["list_files", "read_file", "search", "git_diff", "git_log"]
    assert started["limits"] == {"max_turns": 20, "max_tool_calls": 50}
    calls = of(store, run_id, "ToolCalled")
    assert [(c["tool"], c["turn"], c["seq"]) for c in calls] == [("read_file", 1, 1), ("search", 1, 2),
                                                                  ("git_log", 2, 3)]
    assert calls[0]["arguments"] == READ.raw()  # reassembled from the streamed pieces
    results = of(store, run_id, "ToolResult")
    assert [r["ok"] for r in results] == [True, True, True]
    assert "11\t    retries = 3" in results[0]["result"] and "src/app.py:11:     retries = 3" in results[1]["result"]
    # Turn 2 was asked only once turn 1's calls and results were in the log; turn 3 once turn 2's were.
    assert [s for s in spy.seen if s[0] > 1] == [(2, 2, 2), (3, 3, 3)]
    usage = of(store, run_id, "StepCompleted")[0]["usage"]
    assert usage["prompt_tokens"] == sum(usage_of(n)["prompt_tokens"] for n in (1, 2, 3))
    assert [t["prompt_tokens"] for t in usage["turns"]] == [100, 200, 300]
    assert (usage["tool_calls"], usage["tool_errors"], usage["malformed_calls"]) == (3, 0, 0)
    sent = llm.requests_for("m-read")
    assert [t["function"]["name"] for t in sent[0]["tools"]] == started["tools"]
    assert sent[0]["messages"][0] == {"role": "system", "content": started["system"]}


def test_without_a_project_the_step_runs_on_the_question_alone(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-alone", [TextTurn("No workspace: answering from the question alone.")])
    run_id = launch(engine, spy, "explore", "m-alone", project="")
    assert engine.wait(run_id).status == "completed"
    started = of(store, run_id, "StepStarted")[0]
    assert (started.get("tools", []), started.get("tool_schema_hash", "")) == ([], "")
    assert "tools" not in llm.requests_for("m-alone")[0]


def test_a_coordinator_persona_is_sent_and_recorded_with_temperature_0_2(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-merge", [TextTurn("merged")])
    run_id = launch(engine, spy, "merge", "m-merge", project="")
    assert engine.wait(run_id).status == "completed"
    assert of(store, run_id, "StepStarted")[0]["sampling"] == {"temperature": 0.2}
    assert llm.requests_for("m-merge")[0]["temperature"] == 0.2


def test_malformed_calls_are_answered_recorded_and_raise_degradation_at_the_first(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-bad", [ToolTurn([Call("open_file", {"path": "x"}), Call("read_file", "{not json")]),
                         ToolTurn([Call("read_file", {"path": "src/app.py", "lines": 3})]),
                         TextTurn("E1: none")])
    run_id = launch(engine, spy, "explore", "m-bad")
    assert engine.wait(run_id).status == "completed"
    results = of(store, run_id, "ToolResult")
    assert [(r["outcome"], r["error"]) for r in results] == [
        ("malformed", "unknown-tool"), ("malformed", "not-json"), ("malformed", "bad-arguments")]
    assert "unknown tool 'open_file'" in results[0]["result"]
    anomalies = of(store, run_id, "AnomalyDetected")
    assert [(a["kind"], a["severity"], a["action"]) for a in anomalies] == [("degradation", "high", "notify")]
    assert of(store, run_id, "StepCompleted")[0]["usage"]["malformed_calls"] == 3


def test_more_than_five_tool_errors_is_an_errors_anomaly_and_nothing_outside_the_root_is_logged(llm, setup):
    engine, store, spy, repo = setup
    escapes = [Call("read_file", {"path": p}) for p in ("../outside/secret.txt", str(repo.outside / "secret.txt"),
                                                          "secret_link.txt", "escape/secret.txt", ".git/config",
                                                          "image.png")]
    llm.script("m-escape", [ToolTurn(escapes), TextTurn("No evidence found.")])
    run_id = launch(engine, spy, "explore", "m-escape")
    assert engine.wait(run_id).status == "completed"
    results = of(store, run_id, "ToolResult")
    assert [r["error"] for r in results] == ["outside-root", "absolute-path", "symlink-out", "symlink-out",
                                             "git-dir", "binary"]
    anomalies = of(store, run_id, "AnomalyDetected")
    assert [(a["kind"], a["severity"]) for a in anomalies] == [("errors", "medium")]
    assert "6 tool errors" in anomalies[0]["detail"]
    for recorded in events(store, run_id):
        assert SECRET not in str(recorded.data)


def test_a_model_that_keeps_calling_tools_past_the_limit_fails_the_step_naming_it(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-loop", [ToolTurn([LOG]), ToolTurn([LOG])])
    run_id = launch(engine, spy, "explore-short", "m-loop")
    assert engine.wait(run_id).status == "failed"
    failed = of(store, run_id, "StepFailed")[0]
    assert "max_turns=1" in failed["error"]
    closing = llm.requests_for("m-loop")[-1]
    assert closing["tool_choice"] == "none" and "Tool limit reached (max_turns = 1)" in closing["messages"][-1][
        "content"]


def test_under_the_abort_policy_a_malformed_call_cancels_the_step(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-abort", [ToolTurn([Call("nope", {})]), TextTurn("never asked")])
    run_id = launch(engine, spy, "explore-abort", "m-abort")
    state = engine.wait(run_id)
    assert state.status == "failed" and state.steps["explore"].status == "cancelled"
    assert [a["action"] for a in of(store, run_id, "AnomalyDetected")] == ["abort"]
    assert len(llm.requests_for("m-abort")) == 1  # the loop stopped: the model was not asked again


def test_the_report_checks_evidence_against_the_pinned_commit_and_counts_tools_and_tokens(llm, setup):
    engine, _, spy, _ = setup
    answer = ("Retries are fixed.\n\n"
              'E1: "retries = 3" (source: src/app.py:11; trust: direct)\n'
              'E2: "retries = 5" (source: src/app.py:11; trust: direct)\n'
              'E3: "def handle_request(req):" (source: src/app.py:1-3; trust: direct)\n'
              "E4: the README says so (source: README.md:1; trust: reported)\n")
    llm.script("m-report", [ToolTurn([READ]), TextTurn(answer)])
    run_id = launch(engine, spy, "explore", "m-report")
    state = engine.wait(run_id)
    assert state.status == "completed"
    report = state.report
    head = report.split("## ")[0]
    assert "**Evidence: 1 verified, 2 not found, 1 unchecked (of 4 items)**" in head
    assert f"checked against commit `{state.launched.workspace.commit[:12]}` of `demo`" in head
    assert "**Workspace:** project `demo`" in head
    assert 'E1: "retries = 3" (source: src/app.py:11; trust: direct) **[verified]**' in report
    assert "E3: \"def handle_request(req):\" (source: src/app.py:1-3; trust: direct) **[not found: the quote is at " \
           "line 10 of src/app.py, not in lines 1-3]**" in report
    assert "E4: the README says so (source: README.md:1; trust: reported) **[unchecked: no quoted snippet]**" in report
    row = next(line for line in report.splitlines() if line.startswith("| explore |"))
    assert "| 1 | 300 + 23 |" in row  # one tool call; tokens of turns 1 and 2: (100 + 200) + (11 + 12)
    assert "| **total** | | | | | | 1 | 300 + 23 | |" in report


def test_without_a_project_the_report_says_the_agents_read_no_file(llm, setup):
    engine, _, spy, _ = setup
    llm.script("m-noproj", [TextTurn('E1: "retries = 3" (source: src/app.py:11; trust: reported)')])
    run_id = launch(engine, spy, "explore", "m-noproj", project="")
    report = engine.wait(run_id).report
    assert "**Workspace:** none. This run was launched without a project" in report
    assert "**Evidence: 0 verified, 0 not found, 1 unchecked (of 1 items)**" in report


@pytest.mark.parametrize("shape", [{"same_index": True}, {"ids": False}], ids=["one-index", "no-ids"])
def test_ollama_style_calls_whole_in_one_chunk_are_all_answered(llm, setup, shape):
    engine, store, spy, _ = setup
    llm.script("m-ollama", [ToolTurn([READ, LOG], style="ollama", finish_reason="stop", **shape),
                            ToolTurn([SEARCH], style="ollama", ids=False), TextTurn(ANSWER)])
    run_id = launch(engine, spy, "explore", "m-ollama")
    assert engine.wait(run_id).status == "completed"
    calls = of(store, run_id, "ToolCalled")
    assert [c["tool"] for c in calls] == ["read_file", "git_log", "search"]
    assert len({c["call_id"] for c in calls}) == 3  # ids made up where the server sent none: unique in the step
    sent = llm.requests_for("m-ollama")
    answered = [m["tool_call_id"] for m in sent[-1]["messages"] if m["role"] == "tool"]
    assert answered == [c["call_id"] for c in calls]


def test_the_tokens_of_an_attempt_that_hit_its_limit_are_recorded_with_its_failure(llm, setup):
    engine, store, spy, _ = setup
    llm.script("m-cost", [ToolTurn([LOG]), ToolTurn([LOG])])
    run_id = launch(engine, spy, "explore-short", "m-cost")
    state = engine.wait(run_id)
    usage = of(store, run_id, "StepFailed")[0]["usage"]
    assert usage["prompt_tokens"] == 100 + 200 and [t["turn"] for t in usage["turns"]] == [1, 2]
    row = next(line for line in state.report.splitlines() if line.startswith("| explore |"))
    assert "| 1 | 300 + 23 |" in row


def test_text_utf8_cannot_carry_is_recorded_as_its_characters_not_left_to_fail_the_append(llm, setup):
    """A file name that is not UTF-8 (as git lists it) and an answer whose surrogate pair the server split
    across two chunks (each decoded apart): the pair is joined into its character, the lone byte shown as
    U+FFFD, and the step completes. Before, the store could not encode either: the append failed, and the
    run was driven again, asked the model again, and failed the same way, for ever."""
    import os

    from tests.integration.workspace_repo import git

    engine, store, spy, repo = setup
    os.close(os.open(os.fsencode(repo.root) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY))
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-q", "-m", "a latin-1 file name")
    text = "Done \ud83d\ude00 here"  # two code points; in two pieces, one in each chunk
    llm.script("m-bytes", [ToolTurn([Call("list_files", {"path": "."})]), TextTurn(text, pieces=2)])
    run_id = launch(engine, spy, "explore", "m-bytes")
    state = engine.wait(run_id, timeout=20)
    assert state.status == "completed", state.steps["explore"].error
    listed = of(store, run_id, "ToolResult")[0]
    assert listed["ok"] and "caf\ufffd.txt" in listed["result"]
    assert of(store, run_id, "StepCompleted")[0]["output"].startswith("Done \U0001F600 here")
