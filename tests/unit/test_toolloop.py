"""The tool loop's rules with an in-process turn function (the HTTP side is in tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.agents.base import CancelToken, DeltaCallback
from actors.agents.toolcalls import ModelTurn, ToolCall
from actors.agents.toolloop import CallRecord, LoopObserver, TurnRequest, run_tool_loop
from actors.workspace.results import ToolResult, make_result


class Turns:
    """Answers from a list, keeping every request it got."""

    def __init__(self, *answers: ModelTurn) -> None:
        self.answers = list(answers)
        self.requests: list[TurnRequest] = []

    def __call__(self, request: TurnRequest, on_delta: DeltaCallback, cancel: CancelToken) -> ModelTurn:
        self.requests.append(request)
        return self.answers.pop(0)


class Tools:
    """Counts calls; answers with the tool's name."""

    schemas: list[dict[str, Any]] = [{"type": "function", "function": {"name": "git_log"}}]

    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, name: str, arguments: str) -> ToolResult:
        self.calls.append(name)
        return make_result(f"ran {name}")


def loop(turns: Turns, tools: Tools, observer: LoopObserver | None = None) -> Any:
    return run_tool_loop(system="sys", prompt="go", model="m", tools=tools, turn=turns,
                         on_delta=lambda _: None, cancel=CancelToken(), observer=observer)


def test_a_call_that_cannot_be_recorded_is_not_run():
    class StoreDown(LoopObserver):
        def tool_called(self, call: CallRecord) -> None:
            raise RuntimeError("store unavailable")

    tools = Tools()
    turns = Turns(ModelTurn(calls=(ToolCall("a", "git_log", "{}"),)), ModelTurn(text="never"))
    with pytest.raises(RuntimeError, match="store unavailable"):
        loop(turns, tools, StoreDown())
    assert tools.calls == [] and len(turns.requests) == 1


def test_each_request_is_a_snapshot_of_the_conversation():
    turns = Turns(ModelTurn(calls=(ToolCall("a", "git_log", "{}"),)), ModelTurn(text="done"))
    result = loop(turns, Tools())
    first, second = turns.requests
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "tool"]
    assert [m["role"] for m in result.messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_usage_is_summed_over_turns_whatever_keys_each_reports():
    turns = Turns(ModelTurn(calls=(ToolCall("a", "git_log", "{}"),), usage={"prompt_tokens": 5}),
                  ModelTurn(text="done", usage={"prompt_tokens": 7, "completion_tokens": 2, "note": "x"}))
    assert loop(turns, Tools()).usage == {"prompt_tokens": 12, "completion_tokens": 2}


def test_text_beside_calls_is_kept_in_the_conversation_but_the_answer_is_the_last_text():
    turns = Turns(ModelTurn(text="Let me look.", calls=(ToolCall("a", "git_log", "{}"),)), ModelTurn(text="Found."))
    result = loop(turns, Tools())
    assert result.output == "Found."
    assert result.messages[2]["content"] == "Let me look."
