"""``baton tail`` and ``baton show`` put each tool call and result on one compact line (DESIGN §11)."""

from __future__ import annotations

from rich.console import Console

from api.cli.progress import frame_line, print_map_items, print_tool_calls


def test_tail_lines_of_tool_frames():
    call = {"id": 41, "type": "tool_call", "run_id": "R1", "step_id": "explore", "seq": 3, "tool": "read_file",
            "arguments": '{"path": "src/app.py",\n "start_line": 10}'}
    assert frame_line(call) == '41 tool_call R1 explore #3 read_file {"path": "src/app.py", "start_line": 10}'
    ok = {"id": 42, "type": "tool_result", "run_id": "R1", "step_id": "explore", "tool": "read_file", "ok": True,
          "outcome": "ok", "error": "", "bytes": 1234, "truncated": True}
    assert frame_line(ok) == "42 tool_result R1 explore read_file ok 1,234 B cut"
    refused = {**ok, "id": 43, "ok": False, "outcome": "error", "error": "outside-root"}
    assert frame_line(refused) == "43 tool_result R1 explore read_file error outside-root"
    long = {**call, "arguments": '{"pattern": "' + "x" * 200 + '"}'}
    assert frame_line(long).endswith("…") and len(frame_line(long)) < 140


def test_show_lists_each_steps_calls_with_its_tokens():
    console = Console(record=True, width=200)
    calls = [{"seq": 1, "turn": 1, "tool": "search", "arguments": '{"pattern": "retries"}', "ok": True,
              "outcome": "ok", "error": "", "bytes": 88, "truncated": False},
             {"seq": 2, "turn": 2, "tool": "nope", "arguments": "{}", "ok": False, "outcome": "malformed",
              "error": "unknown-tool", "bytes": 60, "truncated": False}]
    steps = [{"step_id": "explore", "tool_calls": calls,
              "usage": {"prompt_tokens": 300, "completion_tokens": 23, "turns": [{}, {}, {}]}},
             {"step_id": "fold", "tool_calls": [], "usage": {}}]
    print_tool_calls(console, steps)
    assert console.export_text().splitlines() == [
        "tool calls of 'explore': 2, 300 prompt + 23 completion tokens in 3 turns",
        '  #1 t1 search {"pattern": "retries"}  -> ok 88 B',
        "  #2 t2 nope {}  -> malformed unknown-tool",
    ]


def test_show_counts_a_maps_items_and_lists_the_failed_ones():
    console = Console(record=True, width=200)
    items = [{"index": 0, "item": "a", "status": "completed", "output": "ok", "error": ""},
             {"index": 1, "item": {"file": "x.py"}, "status": "failed", "output": "", "error": "timeout after 1 s"},
             {"index": 2, "item": "c", "status": "pending", "output": "", "error": ""}]
    print_map_items(console, [{"step_id": "list"}, {"step_id": "each", "items": items}])
    assert console.export_text().splitlines() == [
        "items of 'each': 1 of 3 done, 1 failed, 1 not ended",
        '  #1 {"file": "x.py"}: timeout after 1 s',
    ]
