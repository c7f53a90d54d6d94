"""The tool loop against a real streaming server and a real git repository."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.agents.base import AgentError, Cancelled, CancelToken
from actors.agents.chat_turn import ChatTurns
from actors.agents.toolloop import (
    CLOSING_MESSAGE,
    CallRecord,
    Limit,
    LoopLimits,
    LoopObserver,
    PersonMessage,
    Sampling,
    ToolLimitExceeded,
    TurnRecord,
    run_tool_loop,
)
from actors.workspace.results import Outcome, ToolResult
from actors.workspace.tools import TOOL_SCHEMAS, Toolbox
from tests.integration.scripted_llm import (
    Call,
    ScriptedLLM,
    TextTurn,
    ToolTurn,
    usage_of,
)
from tests.integration.workspace_repo import SECRET, DemoRepo, make_repo

READ = Call("read_file", {"path": "src/app.py", "start_line": 10, "end_line": 11})
SEARCH = Call("search", {"pattern": r"retries\s*=", "path": "src"})
LOG = Call("git_log", {"max_count": 1})


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as srv:
        yield srv


@pytest.fixture
def turns(server: ScriptedLLM) -> Iterator[ChatTurns]:
    t = ChatTurns(server.base_url, read_timeout_s=10)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def repo(tmp_path: Path) -> DemoRepo:
    return make_repo(tmp_path)


class Recorder(LoopObserver):
    """Keeps every callback, with how many requests the server had seen at that moment."""

    def __init__(self, server: ScriptedLLM, model: str) -> None:
        self.server = server
        self.model = model
        self.log: list[tuple[str, Any, int]] = []

    def seen(self) -> int:
        return len(self.server.requests_for(self.model))

    def tool_called(self, call: CallRecord) -> None:
        self.log.append(("called", call, self.seen()))

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        self.log.append(("result", (call, result), self.seen()))

    def turn_finished(self, turn: TurnRecord) -> None:
        self.log.append(("turn", turn, self.seen()))

    def message_delivered(self, message: PersonMessage, turn: int) -> None:
        self.log.append(("message", (message, turn), self.seen()))

    def before_turn(self, turn: int) -> None:
        self.log.append(("before", turn, self.seen()))

    def results(self) -> list[tuple[CallRecord, ToolResult]]:
        return [item for kind, item, _ in self.log if kind == "result"]


def run(server: ScriptedLLM, turns: ChatTurns, repo: DemoRepo, model: str, script: list, *,
        limits: LoopLimits = LoopLimits(), cancel: CancelToken | None = None,
        observer: LoopObserver | None = None, inbox: queue.SimpleQueue | None = None,
        deltas: list[str] | None = None):
    server.script(model, script)
    return run_tool_loop(system="You are an investigator.", prompt="How often does it retry?", model=model,
                         tools=Toolbox(repo.root), turn=turns, on_delta=(deltas if deltas is not None else []).append,
                         cancel=cancel or CancelToken(), limits=limits, sampling=Sampling(temperature=0.2),
                         observer=observer, inbox=inbox, call_id_prefix="s1-a1")


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def test_vllm_pieces_then_text(server, turns, repo):
    deltas: list[str] = []
    result = run(server, turns, repo, "vllm-1", [ToolTurn([READ], pieces=7),
                                                TextTurn("It retries 3 times (E1).", pieces=4)],
                 deltas=deltas)
    assert result.output == "It retries 3 times (E1)."
    assert "".join(deltas) == result.output and len(deltas) == 4
    first, second = server.requests_for("vllm-1")
    assert first["tools"] == TOOL_SCHEMAS and first["tool_choice"] == "auto"
    assert first["temperature"] == 0.2 and first["stream"] is True
    [answer] = tool_messages(second)
    assert answer == {"role": "tool", "tool_call_id": "call_1_0",
                      "content": "10\tdef handle_request(req):\n11\t    retries = 3"}
    assistant = second["messages"][2]
    assert assistant["tool_calls"][0]["function"] == {"name": "read_file", "arguments": json.dumps(READ.arguments)}
    assert [t.usage for t in result.turns] == [usage_of(1), usage_of(2)]
    assert result.usage == {k: usage_of(1)[k] + usage_of(2)[k] for k in usage_of(1)}
    assert result.tool_calls == 1 and result.errors == 0 and result.malformed == 0


def test_parallel_calls_ollama_whole_and_vllm_interleaved_are_all_answered_in_order(server, turns, repo):
    script = [ToolTurn([READ, SEARCH], style="ollama", finish_reason="stop"),
              ToolTurn([LOG, SEARCH, READ], interleave=True, pieces=3),
              TextTurn("done")]
    result = run(server, turns, repo, "parallel", script)
    assert result.output == "done" and result.tool_calls == 5
    bodies = server.requests_for("parallel")
    assert [m["tool_call_id"] for m in tool_messages(bodies[1])] == ["call_1_0", "call_1_1"]
    third = tool_messages(bodies[2])
    assert [m["tool_call_id"] for m in third] == ["call_1_0", "call_1_1", "call_2_0", "call_2_1", "call_2_2"]
    assert third[2]["content"].endswith("Test Person: second commit: traps")
    assert third[3]["content"] == "src/app.py:11:     retries = 3"
    assert third[4]["content"].startswith("10\tdef handle_request")


def test_every_call_and_result_is_observed_before_the_next_model_turn(server, turns, repo):
    recorder = Recorder(server, "ordered")
    run(server, turns, repo, "ordered", [ToolTurn([READ, LOG]), ToolTurn([SEARCH]), TextTurn("ok")],
        observer=recorder)
    kinds = [(kind, seen) for kind, _, seen in recorder.log]
    assert kinds == [("before", 0), ("turn", 1), ("called", 1), ("result", 1), ("called", 1), ("result", 1),
                     ("before", 1), ("turn", 2), ("called", 2), ("result", 2), ("before", 2), ("turn", 3)]
    calls = [item for kind, item, _ in recorder.log if kind == "called"]
    assert [(c.turn, c.seq, c.call_id, c.tool) for c in calls] == [
        (1, 1, "call_1_0", "read_file"), (1, 2, "call_1_1", "git_log"), (2, 3, "call_2_0", "search")]
    assert calls[0].arguments == json.dumps(READ.arguments)


def test_max_turns_reached_the_model_is_told_and_answers(server, turns, repo):
    script = [ToolTurn([LOG]), ToolTurn([LOG]), TextTurn("answer with what I have")]
    result = run(server, turns, repo, "turns-ok", script, limits=LoopLimits(max_turns=2))
    assert result.output == "answer with what I have"
    assert result.limit_reached is Limit.MAX_TURNS
    last = server.requests_for("turns-ok")[-1]
    assert last["tool_choice"] == "none"
    assert last["messages"][-1] == {"role": "user",
                                    "content": CLOSING_MESSAGE.format(limit="max_turns", value=2)}


def test_still_calling_tools_after_the_limit_fails_naming_it(server, turns, repo):
    script = [ToolTurn([LOG]), ToolTurn([LOG]), ToolTurn([SEARCH])]
    with pytest.raises(ToolLimitExceeded) as err:
        run(server, turns, repo, "turns-bad", script, limits=LoopLimits(max_turns=2))
    assert err.value.limit is Limit.MAX_TURNS
    assert "max_turns=2" in str(err.value) and "(search)" in str(err.value)
    assert isinstance(err.value, AgentError)
    assert len(server.requests_for("turns-bad")) == 3


def test_max_tool_calls_answers_the_rest_not_run_then_closes(server, turns, repo):
    recorder = Recorder(server, "calls")
    script = [ToolTurn([LOG, LOG]), ToolTurn([READ, SEARCH]), TextTurn("enough")]
    result = run(server, turns, repo, "calls", script, limits=LoopLimits(max_tool_calls=3), observer=recorder)
    assert result.output == "enough" and result.tool_calls == 3
    assert result.limit_reached is Limit.MAX_TOOL_CALLS
    outcomes = [res.outcome for _, res in recorder.results()]
    assert outcomes == [Outcome.OK, Outcome.OK, Outcome.OK, Outcome.NOT_RUN]
    last = server.requests_for("calls")[-1]
    not_run = tool_messages(last)[-1]["content"]
    assert not_run.startswith("error: not-run: not run: the limit max_tool_calls=3 was reached")
    assert last["messages"][-1]["content"] == CLOSING_MESSAGE.format(limit="max_tool_calls", value=3)

    with pytest.raises(ToolLimitExceeded, match="max_tool_calls=3"):
        run(server, turns, repo, "calls-bad", [ToolTurn([LOG, LOG, LOG]), ToolTurn([LOG])],
            limits=LoopLimits(max_tool_calls=3))


def test_malformed_calls_are_answered_recorded_and_counted(server, turns, repo):
    recorder = Recorder(server, "malformed")
    bad = [Call("read_files", {"path": "a"}), Call("read_file", '{"path": "src/app.py"'),
           Call("read_file", {"path": "src/app.py", "start_line": "ten"}), Call("read_file", {"path": "../x"})]
    result = run(server, turns, repo, "malformed", [ToolTurn(bad, pieces=2), TextTurn("sorry")],
                 observer=recorder)
    assert (result.malformed, result.errors, result.tool_calls) == (3, 1, 4)
    assert [(r.outcome, r.error) for _, r in recorder.results()] == [
        (Outcome.MALFORMED, "unknown-tool"), (Outcome.MALFORMED, "not-json"),
        (Outcome.MALFORMED, "bad-arguments"), (Outcome.ERROR, "outside-root")]
    second = server.requests_for("malformed")[1]
    echoed = [c["function"]["arguments"] for c in second["messages"][2]["tool_calls"]]
    assert echoed[1] == "{}"  # not JSON: echoed as {} so the server's template can parse it
    called = [item for kind, item, _ in recorder.log if kind == "called"]
    assert called[1].arguments == '{"path": "src/app.py"'  # the log keeps what the model sent


def test_cancel_during_tools_stops_before_the_next_turn(server, turns, repo):
    token = CancelToken()

    class CancelOnResult(LoopObserver):
        def tool_result(self, call: CallRecord, result: ToolResult) -> None:
            token.cancel()

    with pytest.raises(Cancelled):
        run(server, turns, repo, "cancel", [ToolTurn([LOG, LOG]), TextTurn("never")], cancel=token,
            observer=CancelOnResult())
    assert len(server.requests_for("cancel")) == 1


def test_a_persons_message_reaches_the_next_turn(server, turns, repo):
    inbox: queue.SimpleQueue[PersonMessage] = queue.SimpleQueue()

    class SendOnResult(Recorder):
        def tool_result(self, call: CallRecord, result: ToolResult) -> None:
            super().tool_result(call, result)
            inbox.put(PersonMessage("focus on the retry count", by="ada"))

    recorder = SendOnResult(server, "message")
    run(server, turns, repo, "message", [ToolTurn([LOG]), TextTurn("ok")], observer=recorder, inbox=inbox)
    second = server.requests_for("message")[1]
    assert second["messages"][-1] == {"role": "user", "content": "Message from ada: focus on the retry count"}
    delivered = [item for kind, item, _ in recorder.log if kind == "message"]
    assert [(m.text, turn) for m, turn in delivered] == [("focus on the retry count", 2)]


def test_calls_without_ids_get_step_unique_ids(server, turns, repo):
    run(server, turns, repo, "no-ids", [ToolTurn([LOG], ids=False), ToolTurn([LOG], ids=False), TextTurn("ok")])
    third = server.requests_for("no-ids")[2]
    assert [m["tool_call_id"] for m in tool_messages(third)] == ["s1-a1-t1-1", "s1-a1-t2-1"]


def test_nothing_outside_the_root_reaches_an_event_or_the_model(server, turns, repo):
    recorder = Recorder(server, "escape")
    calls = [Call("read_file", {"path": p}) for p in
             ("../outside/secret.txt", str(repo.outside / "secret.txt"), "escape/secret.txt", "secret_link.txt")]
    calls += [Call("search", {"pattern": "SECRET", "path": p}) for p in ("escape", "..", "secret_link.txt")]
    calls += [Call("list_files", {"path": "escape"}), Call("git_diff", {"path": "../outside"})]
    run(server, turns, repo, "escape", [ToolTurn(calls, pieces=3), TextTurn("nothing")], observer=recorder)
    for call, result in recorder.results():
        assert SECRET not in result.text and SECRET not in call.arguments
        assert result.outcome is Outcome.ERROR, (call, result)
    for body in server.requests_for("escape"):
        assert SECRET not in json.dumps(body)


def test_a_server_error_is_an_agent_error(server, turns, repo):
    with pytest.raises(AgentError, match="HTTP 404"):
        run_tool_loop(system="", prompt="x", model="no-such-model", tools=Toolbox(repo.root), turn=turns,
                      on_delta=lambda _: None, cancel=CancelToken())


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_turns must be a whole number >= 1"):
        LoopLimits(max_turns=0)


def test_cancel_during_a_silent_turn_wakes_the_read_at_once(server, repo):
    """The server goes quiet mid-answer; a cancel must not wait for the 30 s read timeout."""
    import threading
    import time

    from tests.integration.scripted_llm import StallTurn

    slow = ChatTurns(server.base_url, read_timeout_s=30)
    token = CancelToken()
    first_delta = threading.Event()
    server.disconnected.clear()
    canceller = threading.Thread(target=lambda: first_delta.wait(5) and token.cancel())
    canceller.start()
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled):
            run(server, slow, repo, "stall", [ToolTurn([LOG]), StallTurn()], cancel=token,
                deltas=_SetOnAppend(first_delta))
    finally:
        slow.close()
        canceller.join(5)
    assert time.monotonic() - started < 5
    assert server.disconnected.wait(5), "the server never saw the client leave"


class _SetOnAppend(list):
    """A delta list that sets an event at the first delta."""

    def __init__(self, event) -> None:
        super().__init__()
        self.event = event

    def append(self, item) -> None:
        super().append(item)
        self.event.set()
