"""Bad input: one clear ``baton: error:`` line on stderr, the right exit code, and nothing appended."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
import sqlalchemy as sa

from actors.errors import LaunchInProgress, RunBusy, RunOwnedElsewhere
from api.cli import commands as cli_commands
from api.cli import main as cli
from api.cli.local import caught_up
from api.runtime import Runtime
from api.settings import Settings
from eventstore import NewEvent
from projections import Projector, ReadModel
from baton_cli import Baton, Result


def refused(b: Baton, *args: str, code: int = 2, **env: str) -> Result:
    """Run a command that must be refused; check the log did not move and the message is one line."""
    head = b.head()
    result = b(*args, **env)
    assert result.code == code, f"baton {' '.join(args)} -> {result.code}\n{result.out}\n{result.err}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("baton: error: "), result.err
    assert "Traceback" not in result.err
    assert b.head() == head, "a refused command appended events"
    return result


def test_unknown_flow_lists_the_known_ones(shared):
    err = refused(shared, "launch", "no-such-flow", "-q", "anything").err
    assert "unknown flow 'no-such-flow'" in err and "review-and-approve" in err and "research" in err


def test_missing_question(shared):
    assert "question" in refused(shared, "launch", "research").err
    assert "question" in refused(shared, "launch", "research", "-q", "   ").err


def test_unknown_band(shared):
    err = refused(shared, "launch", "research", "-q", "why?", "--band", "huge").err
    assert "unknown band 'huge'" in err and "small, medium, large" in err


@pytest.mark.parametrize("command", [
    ("approve", "01NOSUCHRUN0000000000000000", "approve"),
    ("reject", "01NOSUCHRUN0000000000000000", "approve"),
    ("cancel", "01NOSUCHRUN0000000000000000"),
    ("show", "01NOSUCHRUN0000000000000000"),
    ("tail", "01NOSUCHRUN0000000000000000"),
    ("replay", "--run", "01NOSUCHRUN0000000000000000"),
])
def test_unknown_run(shared, command):
    assert "no run '01NOSUCHRUN0000000000000000'" in refused(shared, *command).err


def test_unknown_step(shared):
    err = refused(shared, "approve", shared.paused, "no-such-step").err
    assert f"run {shared.paused} has no step 'no-such-step'" in err


def test_approving_a_step_that_is_not_waiting(shared):
    err = refused(shared, "approve", shared.paused, "review").err
    assert "step 'review'" in err and "not waiting for approval (it is completed)" in err


def test_approve_twice(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 9").run_id
    baton.ok("approve", run_id, "approve")
    err = refused(baton, "approve", run_id, "approve").err
    assert f"run {run_id} has already ended (completed)" in err
    err = refused(baton, "reject", run_id, "approve").err
    assert "already ended" in err


def test_cancel_twice(baton):
    run_id = baton.ok("launch", "review-and-approve", "-q", "Review PR 10").run_id
    baton.ok("cancel", run_id)
    assert f"run {run_id} has already ended (cancelled)" in refused(baton, "cancel", run_id).err
    assert "already ended (cancelled)" in refused(baton, "approve", run_id, "approve").err


def test_cancel_of_a_finished_run(shared):
    assert "already ended (completed)" in refused(shared, "cancel", shared.completed).err


def test_a_flows_module_that_is_missing(shared):
    err = refused(shared, "--flows", "no_such_module_anywhere", "launch", "research", "-q", "x").err
    assert "cannot import flows module 'no_such_module_anywhere'" in err


def test_a_flows_module_that_fails_to_import(shared, tmp_path):
    (tmp_path / "broken_flows_mod.py").write_text("raise RuntimeError('broken on purpose')\n")
    err = refused(shared, "launch", "research", "-q", "x", BATON_FLOWS="broken_flows_mod",
                  PYTHONPATH=str(tmp_path)).err
    assert "broken_flows_mod" in err and "broken on purpose" in err


def test_an_unreachable_postgresql_hides_the_password(tmp_path):
    b = Baton("postgresql+psycopg://baton:s3cret-pw@127.0.0.1:9/baton", tmp_path)
    result = b("runs")
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("baton: error: cannot reach the event store at ")
    assert "127.0.0.1:9" in result.err and "s3cret-pw" not in result.err + result.out
    assert "Traceback" not in result.err


def test_an_unreachable_sqlite_file(tmp_path):
    b = Baton(f"sqlite:///{tmp_path}/no/such/dir/baton.db", tmp_path)
    result = b("launch", "research", "-q", "x")
    assert result.code == 1 and result.err.startswith("baton: error: ")
    assert "no/such/dir/baton.db" in result.err and len(result.err.strip().splitlines()) == 1


def test_an_unsupported_url(tmp_path):
    result = Baton("mysql://u@h/db", tmp_path)("runs")
    assert result.code == 2 and result.err.startswith("baton: error: ") and "mysql" in result.err


def test_bad_settings_and_usage(shared):
    assert "BATON_AGENT" in refused(shared, "launch", "research", "-q", "x", BATON_AGENT="gpt").err
    assert "BATON_AGENT_SLOTS" in refused(shared, "runs", BATON_AGENT_SLOTS="many").err
    assert "--approval-mode plan" in refused(shared, "launch", "research", "-q", "x", BATON_AGENT="cli",
                                             BATON_CLI_COMMAND="qwen -p {prompt}").err
    assert "invalid choice" in refused(shared, "frobnicate").err
    assert "has no step waiting for a person: nothing to approve" in refused(shared, "approve", shared.completed).err
    assert "--limit" in refused(shared, "runs", "--limit", "lots").err


@pytest.mark.parametrize("error,code", [
    (RunBusy("01BUSY"), 1),  # passes on its own: try again
    (LaunchInProgress("01LAUNCHING"), 2),  # the same launch, sent twice
    (RunOwnedElsewhere("01ELSEWHERE", "host:1"), 2),  # send it to that process
])
def test_engine_refusals_exit_with_their_class(monkeypatch, capsys, error, code):
    """In-process: main() turns each typed engine error into one line and its exit code."""
    def refuse(args, settings):
        raise error

    monkeypatch.setattr(cli_commands, "cmd_flows", refuse)  # the parser imports it when `flows` runs
    monkeypatch.setattr(cli, "configure_logging", lambda verbose: None)  # keep pytest's logging as it is
    for var in [v for v in os.environ if v.startswith("BATON_")]:
        monkeypatch.delenv(var)
    assert cli.main(["flows"]) == code
    err = capsys.readouterr().err
    assert err == f"baton: error: {error}\n"


@pytest.mark.parametrize("args,flag", [
    (("runs", "--status", "bogus"), "--status"),
    (("runs", "--limit", "0"), "--limit"),
    (("runs", "--limit", "-1"), "--limit"),
])
def test_bad_list_parameters_are_refused_naming_the_flag(shared, args, flag):
    err = refused(shared, *args).err
    assert flag in err and args[-1] in err


NOT_UTF8 = "\udcff"  # an argument holding the byte 0xff, as Python hands it over (surrogateescape)


@pytest.mark.parametrize("args,field", [
    (("launch", "research", "-q", f"why{NOT_UTF8}?"), "question"),
    (("launch", "research", "-q", "why?", "--project", f"p{NOT_UTF8}"), "project_id"),
    (("launch", "research", "-q", "why?", "--model", NOT_UTF8), "model"),
    (("approve", "PAUSED", "approve", "--comment", f"ok{NOT_UTF8}"), "comment"),
    (("reject", "PAUSED", "approve", "--by", NOT_UTF8), "by"),
    (("cancel", "PAUSED", "--reason", f"stop{NOT_UTF8}"), "reason"),
    (("show", f"01{NOT_UTF8}"), "RUN"),
    (("cancel", f"01{NOT_UTF8}"), "RUN"),
])
def test_text_that_cannot_be_stored_is_refused_naming_it(shared, args, field):
    """Before: the launch reached the store's encoder ('surrogates not allowed', exit 1), a RUN
    argument the database driver; now one line naming the field, exit 2, nothing appended."""
    args = tuple(shared.paused if a == "PAUSED" else a for a in args)
    err = refused(shared, *args).err
    assert f"baton: error: {field}: holds a lone surrogate (U+DCFF)" in err


def test_runs_and_show_stop_waiting_for_a_projector_that_is_stuck(sqlite_url, capsys):
    """The wait for the read tables has a deadline, shorter when the projector keeps failing
    without moving, and says what it waited for: it never hangs a command."""
    def database_away(conn):
        raise sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error"))

    rt = Runtime(Settings(db=sqlite_url))
    try:
        head = rt.store.append("run-x", [NewEvent("RunRecovered", {"at": 1.0})], 0)[0].position
        rt.projector = Projector(rt.store, _before_commit=database_away).start()
        rt.read_model = ReadModel(rt.store.database, rt.projector)
        began = time.monotonic()
        caught_up(rt, timeout=30, stuck=1)
        assert time.monotonic() - began < 10
    finally:
        rt.stop()
    err = capsys.readouterr().err
    assert "waited" in err and f"(position {head})" in err and "they are at 0" in err and "disk I/O error" in err
