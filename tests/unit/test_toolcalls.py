"""Assembling tool calls from stream chunks shaped as vLLM, Ollama and llama.cpp send them."""

from __future__ import annotations

import json
from typing import Any

from actors.agents.toolcalls import ToolCall, ToolCallAccumulator


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                           "model": "qwen2.5-coder", **extra}
    doc["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish}]
    return doc


def feed(chunks: list[dict[str, Any]], prefix: str = "call") -> tuple[ToolCallAccumulator, list[str]]:
    acc = ToolCallAccumulator(prefix)
    deltas = [d for c in chunks if (d := acc.feed(c))]
    return acc, deltas


# A vLLM 0.6 stream (hermes tool parser, Qwen2.5), two calls one after the other:
# a head chunk per call with id, type, name and empty arguments, then the
# arguments in pieces that cut through keys and strings.
VLLM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"tool_calls": [{"id": "chatcmpl-tool-5a1c", "type": "function", "index": 0,
                           "function": {"name": "read_file", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": "'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "src/"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'app.py", "start_'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'line": 10}'}}]}),
    chunk({"tool_calls": [{"id": "chatcmpl-tool-77b2", "type": "function", "index": 1,
                           "function": {"name": "search", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"pattern": "def '}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'handle_\\\\w+"}'}}]}),
    chunk({}, "tool_calls"),
    chunk(None, usage={"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853}),
]


def test_vllm_pieces_assemble_into_whole_calls():
    acc, deltas = feed(VLLM)
    turn = acc.turn()
    assert deltas == []
    assert turn.calls == (
        ToolCall("chatcmpl-tool-5a1c", "read_file", '{"path": "src/app.py", "start_line": 10}'),
        ToolCall("chatcmpl-tool-77b2", "search", '{"pattern": "def handle_\\\\w+"}'),
    )
    assert json.loads(turn.calls[1].arguments) == {"pattern": "def handle_\\w+"}
    assert turn.finish_reason == "tool_calls"
    assert turn.usage == {"prompt_tokens": 812, "completion_tokens": 41, "total_tokens": 853}
    assert turn.model == "qwen2.5-coder"


def test_interleaved_calls_are_kept_apart_by_index():
    heads = [chunk({"tool_calls": [{"id": f"c{i}", "type": "function", "index": i,
                                    "function": {"name": "read_file", "arguments": ""}}]}) for i in (0, 1)]
    pieces = [('{"path": ', '"a.py"}'), ('{"path": ', '"b.py"}')]
    body = [chunk({"tool_calls": [{"index": i, "function": {"arguments": pieces[i][k]}}]})
            for k in (0, 1) for i in (0, 1)]
    turn = feed([*heads, *body, chunk({}, "tool_calls")])[0].turn()
    assert [(c.id, c.arguments) for c in turn.calls] == [("c0", '{"path": "a.py"}'), ("c1", '{"path": "b.py"}')]


# Ollama 0.5 on /v1: every call whole, all in one chunk, then "stop".
OLLAMA = [
    chunk({"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_x1", "index": 0, "type": "function",
         "function": {"name": "list_files", "arguments": '{"path":"src"}'}},
        {"id": "call_x2", "index": 1, "type": "function",
         "function": {"name": "git_log", "arguments": '{"max_count":3}'}},
    ]}),
    chunk({"role": "assistant", "content": ""}, "stop"),
]


def test_ollama_whole_calls_in_one_chunk():
    turn = feed(OLLAMA)[0].turn()
    assert turn.calls == (ToolCall("call_x1", "list_files", '{"path":"src"}'),
                          ToolCall("call_x2", "git_log", '{"max_count":3}'))
    assert turn.finish_reason == "stop"  # still a tool turn: the calls decide


def test_older_ollama_gives_every_call_index_zero():
    chunks = [chunk({"tool_calls": [{"id": "a", "index": 0, "function": {"name": "read_file", "arguments": '{"path":"x"}'}}]}),
              chunk({"tool_calls": [{"id": "b", "index": 0, "function": {"name": "read_file", "arguments": '{"path":"y"}'}}]})]
    turn = feed(chunks)[0].turn()
    assert [(c.id, c.arguments) for c in turn.calls] == [("a", '{"path":"x"}'), ("b", '{"path":"y"}')]


def test_calls_without_index_or_id_get_made_up_ids():
    chunks = [chunk({"tool_calls": [{"function": {"name": "read_file", "arguments": '{"path":'}}]}),
              chunk({"tool_calls": [{"function": {"arguments": '"x"}'}}]}),
              chunk({"tool_calls": [{"function": {"name": "git_log", "arguments": "{}"}}]})]
    turn = feed(chunks, prefix="s1-t2")[0].turn()
    assert turn.calls == (ToolCall("s1-t2-1", "read_file", '{"path":"x"}'), ToolCall("s1-t2-2", "git_log", "{}"))


def test_arguments_sent_as_an_object_are_kept_as_json_text():
    chunks = [chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "git_log",
                                                                         "arguments": {"max_count": 2}}}]})]
    assert feed(chunks)[0].turn().calls[0].arguments == '{"max_count": 2}'


def test_a_name_repeated_in_every_piece_is_not_doubled():
    chunks = [chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "search", "arguments": '{"pat'}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"name": "search", "arguments": 'tern":"x"}'}}]})]
    call = feed(chunks)[0].turn().calls[0]
    assert (call.name, call.arguments) == ("search", '{"pattern":"x"}')


def test_text_deltas_and_text_beside_calls():
    chunks = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Let me "}), chunk({}),
              chunk({"content": "look."}), chunk({"content": None}),
              chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "list_files", "arguments": "{}"}}]})]
    acc, deltas = feed(chunks)
    assert deltas == ["Let me ", "look."]
    turn = acc.turn()
    assert turn.text == "Let me look." and len(turn.calls) == 1


def test_a_plain_text_answer_has_no_calls():
    acc, _ = feed([chunk({"content": "The answer."}), chunk({}, "stop")])
    assert acc.turn().calls == () and acc.turn().text == "The answer."


def test_other_choices_are_ignored():
    doc = chunk({"content": "A"})
    doc["choices"].append({"index": 1, "delta": {"content": "B"}, "finish_reason": None})
    assert feed([doc])[0].turn().text == "A"


def test_a_whole_non_streamed_completion():
    acc = ToolCallAccumulator()
    text = acc.feed_message({"model": "m", "usage": {"total_tokens": 3}, "choices": [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": None, "tool_calls": [
            {"id": "q", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a"}'}}]}}]})
    turn = acc.turn()
    assert text == "" and turn.calls == (ToolCall("q", "read_file", '{"path":"a"}'),)
    assert turn.usage == {"total_tokens": 3} and turn.finish_reason == "tool_calls"
