"""``baton --help`` and usage errors start light, and each command imports only what it uses.

The parser names each command's function (``api.cli.parser.Handler``) and
``api.failures`` names the error types, both instead of importing them: so
``baton --help`` takes ~0.1 s, not ~1.2 s (docs/PERFORMANCE.md, "CLI
start-up"). A command that only reads the log starts no engine and imports
none (nor the HTTP server or client); a command sent to a server imports the
HTTP client, not the store (SQLAlchemy) or the engine. These tests keep
each half honest: a command's imports are read in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.task_runs import DEFAULT_TASKS_DIR
from api import failures
from api.cli import parser as cli_parser
from flows.auth import ROLES
from flows.launch import DEFAULT_BAND
from flows.status import RUN_STATUSES


HEAVY = ("sqlalchemy", "actors", "eventstore", "starlette", "uvicorn", "httpx", "pykka", "psycopg", "rich")

PROBE = """
import json, sys
from api.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def imported(*argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """Run ``baton ARGV`` in a fresh interpreter: its exit status and every module it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120,
                          check=False, env=env)
    assert done.stdout.strip(), done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return seen["code"], set(seen["modules"])


def started(*argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """Run ``baton ARGV`` in a fresh interpreter: its exit status and the top-level packages it imported."""
    code, modules = imported(*argv, env=env)
    return code, {name.split(".")[0] for name in modules}


@pytest.mark.parametrize(("argv", "code"), [
    (["--help"], 0),
    (["runs", "--help"], 0),
    (["tasks", "run", "--help"], 0),
    (["lanuch", "research"], 2),             # a mistyped command
    (["runs", "--limit", "0"], 2),           # a bad value
    (["launch"], 2),                         # a missing argument
])
def test_help_and_usage_errors_import_none_of_the_engine(argv: list[str], code: int) -> None:
    status, packages = started(*argv)
    assert status == code
    assert not packages & set(HEAVY), f"baton {' '.join(argv)} imported {sorted(packages & set(HEAVY))}"


def test_copies_in_the_parser_match_the_core() -> None:
    assert cli_parser.ROLES == ROLES
    assert cli_parser.DEFAULT_BAND == DEFAULT_BAND
    assert cli_parser.RUN_STATUSES == tuple(s.value for s in RUN_STATUSES)
    assert cli_parser.DEFAULT_TASKS_DIR == DEFAULT_TASKS_DIR


def handlers(parser: argparse.ArgumentParser) -> list[object]:
    """Every handler the parser's commands and actions name."""
    found = [parser.get_default("handler")]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += handlers(sub)
    return found


def test_every_command_names_a_function_that_exists() -> None:
    named = [h for h in handlers(cli_parser.build_parser()) if isinstance(h, cli_parser.Handler)]
    assert len(named) > 20
    for handler in named:
        module, _, name = handler.where.partition(":")
        assert callable(getattr(importlib.import_module(module), name, None)), handler


def test_every_named_error_is_an_exception_class() -> None:
    for name in failures.INPUT_ERRORS + failures.RUNTIME_ERRORS:
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr, None)
        assert isinstance(cls, type) and issubclass(cls, BaseException), name
        assert f"{cls.__module__}.{cls.__qualname__}" == name  # where it is defined, as loaded() looks it up


# -- real commands -------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ("pykka", "actors.engine", "actors.agents", "psycopg")  # what drives runs (and its cluster)
HTTP_SERVER = ("starlette", "uvicorn", "api.http")
STORE = ("sqlalchemy", "eventstore.sql", "projections", "api.runtime", "api.cli.local")  # this process's store


def env_of(db: str, **extra: str) -> dict[str, str]:
    """The environment of a ``baton`` command on ``db``: no BATON_* of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update({"BATON_DB": db, "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra})
    return env


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (a package, or a module and its submodules) are among ``modules``."""
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def demo_store(folder: Path) -> tuple[str, str]:
    """A SQLite store holding one completed run (``baton demo``): its URL and the run's id."""
    db = f"sqlite:///{folder / 'baton.db'}"
    subprocess.run([sys.executable, "-m", "api.cli.main", "demo"], capture_output=True, text=True, timeout=120,
                   check=True, env=env_of(db, BATON_OFFLINE_DELAY_S="0.001"))
    listed = subprocess.run([sys.executable, "-m", "api.cli.main", "runs", "--json"], capture_output=True, text=True,
                            timeout=120, check=True, env=env_of(db))
    return db, json.loads(listed.stdout)[0]["run_id"]


@pytest.fixture(scope="module")
def store_with_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A store no server serves."""
    return demo_store(tmp_path_factory.mktemp("start"))


@pytest.fixture(scope="module")
def served_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A store a server serves (``server``)."""
    return demo_store(tmp_path_factory.mktemp("served"))


@pytest.mark.parametrize("argv", [["runs"], ["show", "RUN"], ["show", "RUN", "--report"], ["replay", "--verify"],
                                  ["replay", "--run", "RUN"], ["flows"], ["plan"], ["tokens", "list"]])
def test_a_command_that_reads_starts_no_engine_and_no_http(argv: list[str], store_with_runs: tuple[str, str]) -> None:
    db, run_id = store_with_runs
    argv = [run_id[:10] if a == "RUN" else a for a in argv]
    code, modules = imported(*argv, env=env_of(db))
    assert code == 0
    unused = ENGINE + HTTP_SERVER + ("httpx",) + (() if argv[0] in ("runs", "show") else ("projections",))
    assert not heavy(modules, unused), f"baton {' '.join(argv)} imported {heavy(modules, unused)}"


@pytest.fixture(scope="module")
def server(served_store: tuple[str, str]):  # type: ignore[no-untyped-def]
    from tests.api.server import ApiServer

    with ApiServer(served_store[0], BATON_OFFLINE_DELAY_S="0") as served:
        yield served


def test_a_command_sent_to_a_server_imports_neither_the_store_nor_the_engine(
        served_store: tuple[str, str], server) -> None:  # type: ignore[no-untyped-def]
    db = served_store[0]
    env = env_of(db, BATON_URL=server.url)
    code, modules = imported("launch", "review-and-approve", "-q", "Review PR 15", env=env)
    assert code == 0
    assert not heavy(modules, ENGINE + HTTP_SERVER + STORE), heavy(modules, ENGINE + HTTP_SERVER + STORE)
    waiting = json.loads(subprocess.run([sys.executable, "-m", "api.cli.main", "runs", "--status", "paused",
                                         "--json"], capture_output=True, text=True, timeout=120, check=True,
                                        env=env).stdout)
    run_id = waiting[0]["run_id"]
    for argv in (["approve", run_id, "--comment", "ok"], ["runs"], ["show", run_id], ["flows"], ["plan"],
                 ["tokens", "list"]):
        code, modules = imported(*argv, env=env)
        assert code == 0, argv
        assert not heavy(modules, ENGINE + HTTP_SERVER + STORE), (argv, heavy(modules, ENGINE + HTTP_SERVER + STORE))
    shown = subprocess.run([sys.executable, "-m", "api.cli.main", "show", run_id, "--json"], capture_output=True,
                           text=True, timeout=120, check=True, env=env)
    assert json.loads(shown.stdout)["run"]["status"] == "completed"  # the approval went through the server


def test_a_command_that_finds_the_server_on_the_store_starts_no_engine(
        served_store: tuple[str, str], server) -> None:  # type: ignore[no-untyped-def]
    env = env_of(served_store[0])  # no BATON_URL: the server is found by its lease on the store
    code, modules = imported("launch", "review-and-approve", "-q", "Review PR 16", env=env)
    assert code == 0
    assert "httpx" in modules  # it went through the server
    assert not heavy(modules, ENGINE + HTTP_SERVER + ("projections",)), heavy(modules, ENGINE + HTTP_SERVER)
    paused = subprocess.run([sys.executable, "-m", "api.cli.main", "runs", "--status", "paused", "--json"],
                            capture_output=True, text=True, timeout=120, check=True, env=env)
    run_id = json.loads(paused.stdout)[0]["run_id"]
    code, modules = imported("approve", run_id[:12], env=env)
    assert code == 0
    assert not heavy(modules, ENGINE + HTTP_SERVER + ("projections",)), heavy(modules, ENGINE + HTTP_SERVER)
