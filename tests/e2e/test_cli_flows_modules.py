"""Flows modules a person writes next to where they type ``baton``, and who may drive their runs.

``myflows.py`` in the working directory imports with ``--flows myflows`` as
``python -m`` would import it, without PYTHONPATH. A run whose code steps
live in such a module can only go on where that module imports: a command
typed elsewhere must not take the run over (its code steps would fail with
"No module named ..."); it is refused with one line saying where to go.
"""

from __future__ import annotations

from pathlib import Path

from baton_cli import Baton

GATED = '''
from flows import Flow, approval, code


def finish(ctx):
    return "finished by " + __name__


gated = Flow("gated-code", category="Review", description="an approval, then a code step of this module",
             steps=[approval("gate", prompt="Go on?"), code("after", fn=finish, deps=["gate"])])
'''


def flows_dir(tmp_path: Path, name: str = "myflows") -> Path:
    where = tmp_path / "work"
    where.mkdir()
    (where / f"{name}.py").write_text(GATED)
    return where


def test_a_flows_module_in_the_working_directory_imports_without_pythonpath(sqlite_url, tmp_path):
    b = Baton(sqlite_url, flows_dir(tmp_path))
    assert "gated-code" in b.ok("--flows", "myflows", "flows").out
    launched = b.ok("launch", "gated-code", "-q", "go?", BATON_FLOWS="myflows")
    assert f"run {launched.run_id} is paused" in launched.out


def test_approve_in_a_shell_without_the_flows_module_leaves_the_run_alone(sqlite_url, tmp_path):
    work = flows_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    here, there = Baton(sqlite_url, work), Baton(sqlite_url, elsewhere)
    run_id = here.ok("--flows", "myflows", "launch", "gated-code", "-q", "go?").run_id
    before = here.events(run_id)
    refused = there("approve", run_id, "gate")
    assert refused.code == 2, refused.out + refused.err
    lines = refused.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.err, refused.err
    assert lines[0] == (f"baton: error: run {run_id} needs flows module 'myflows', which this shell cannot import; "
                        f"start the command where 'myflows' imports, or send it to the server with --server / "
                        f"BATON_URL")
    assert here.events(run_id) == before  # not taken over, nothing failed
    done = here.ok("--flows", "myflows", "approve", run_id, "gate")
    assert f"run {run_id} completed" in done.out
    assert here.events(run_id)[-1].type == "RunCompleted"
