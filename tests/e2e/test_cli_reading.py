"""Reading runs from the command line: full ids, id prefixes, JSON, the plan, and a store that is not there."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from api.cli import progress
from baton_cli import Baton


def test_runs_never_cuts_a_run_id(shared):
    """Before: ``01M94NEKG0KZ8QJJQT0D4…`` at 80 and at 120 columns."""
    rows = json.loads(shared.ok("runs", "--json").out)
    rows = [{**r, "flow": r["flow"] * 3, "question": r["question"] * 20} for r in rows]  # crowd the table
    for width in (80, 120):
        out = io.StringIO()
        Console(file=out, width=width, force_terminal=True, color_system=None).print(progress.runs_table(rows, width))
        for r in rows:
            assert r["run_id"] in out.getvalue(), f"{r['run_id']} cut at {width} columns:\n{out.getvalue()}"
    printed = shared.ok("runs", COLUMNS="80").out
    assert shared.paused in printed and shared.completed in printed


def test_a_long_child_run_id_folds_instead_of_pushing_every_status_out():
    """Before: one run 10 subflows deep (a 116-character id) left the table only its run column."""
    base = {"flow": "loop-a", "band": "small", "steps_done": 1, "steps_total": 1, "launched_at": 1.8e9,
            "project_id": "", "question": "how deep", "queue_reason": ""}
    deep = "01M994K196QQVHN3MN5P7M7JAV" + "-deeper-1" * 10
    rows = [{**base, "run_id": deep, "status": "failed"}, {**base, "run_id": "01M994K196QQVHN3MN5P7M7JAW",
                                                           "status": "completed"}]
    out = io.StringIO()
    Console(file=out, width=120, force_terminal=True, color_system=None).print(progress.runs_table(rows, 120))
    text = out.getvalue()
    assert "status" in text and "failed" in text and "completed" in text and "how deep" in text
    assert "01M994K196QQVHN3MN5P7M7JAW" in text  # an ordinary id stays on one line
    folded = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)
    assert deep in folded  # the long one is whole, over several lines


def test_every_command_taking_a_run_accepts_a_unique_prefix(shared):
    prefix = shared.completed[:18]
    assert f"run {shared.completed}" in shared.ok("show", prefix).out
    assert shared.ok("show", prefix.lower(), "--report").out.startswith("# e2e-quick: completed")
    assert shared.ok("replay", "--run", prefix).out.startswith(shared.completed)
    assert shared.ok("tail", prefix).out.splitlines()[0].split()[2] == shared.completed
    err = shared("cancel", prefix).err
    assert f"run {shared.completed} has already ended (completed)" in err  # resolved, then refused by the run


def test_an_ambiguous_prefix_lists_the_candidates_and_an_unknown_one_is_named(shared):
    common = next(i for i, (a, b) in enumerate(zip(shared.paused, shared.completed)) if a != b)
    prefix = shared.paused[:common]
    for command in (("show", prefix), ("approve", prefix, "approve"), ("cancel", prefix), ("tail", prefix)):
        result = shared(*command)
        assert result.code == 2, result
        assert "more than one run" in result.err and shared.paused in result.err and shared.completed in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert "no run 'ZZZZ'" in shared("show", "ZZZZ").err


def test_json_output_of_runs_show_plan_and_flows(shared):
    runs = json.loads(shared.ok("runs", "--json").out)
    assert {r["run_id"] for r in runs} >= {shared.paused, shared.completed}
    shown = json.loads(shared.ok("show", shared.completed, "--json").out)
    assert shown["run"]["run_id"] == shared.completed and shown["report"].startswith("# e2e-quick")
    assert [s["step_id"] for s in shown["steps"]] == ["prep", "a1", "a2", "join"]
    plan = json.loads(shared.ok("plan", "--json").out)
    assert [(p["run_id"], p["reason"]) for p in plan["planned_queued"]] == [(shared.paused, "approval")]
    assert plan["in_progress"] == [] and "max_active_runs" in plan
    flows = json.loads(shared.ok("flows", "--json").out)
    assert {"review-and-approve", "research"} <= {f["name"] for f in flows}
    assert all({"name", "category", "bands", "steps", "description"} <= set(f) for f in flows)


def test_plan_says_what_waits_and_why(shared):
    out = shared.ok("plan").out
    assert "plan from the log" in out and shared.paused in out and "approval" in out


def test_nodes_lists_no_live_node_when_no_server_runs(shared):
    assert json.loads(shared.ok("nodes", "--json").out) == []  # a command's engine gives its lease up as it ends
    assert "0 live node(s) of 0 known" in shared.ok("nodes").out


@pytest.mark.parametrize("command", [("runs",), ("show", "01ABC"), ("tail",), ("replay",), ("plan",),
                                     ("projections", "rebuild"), ("approve", "01ABC", "gate"), ("cancel", "01ABC")])
def test_a_command_on_a_store_that_does_not_exist_says_so_and_creates_nothing(tmp_path, command):
    path = tmp_path / "typo.db"
    result = Baton(f"sqlite:///{path}", tmp_path)(*command)
    assert result.code == 2, result
    assert result.err.startswith(f"baton: error: no store at {path} (set BATON_DB or run a command that creates "
                                 f"one, e.g. ") and result.err.endswith("launch FLOW -q TEXT)\n"), result.err
    assert not path.exists()


def test_flows_needs_no_store(tmp_path):
    path = tmp_path / "none.db"
    assert "review-and-approve" in Baton(f"sqlite:///{path}", tmp_path).ok("flows").out
    assert not path.exists()
