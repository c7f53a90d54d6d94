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
