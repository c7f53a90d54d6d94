"""``baton --help`` and usage errors start light; what the parser names lazily exists.

The parser names each command's function (``api.cli.parser.Handler``) and
``api.failures`` names the error types, both instead of importing them: so
``baton --help`` takes ~0.1 s, not ~1.2 s (docs/PERFORMANCE.md, "CLI
start-up"). These tests keep both halves honest.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

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


def started(*argv: str) -> tuple[int, set[str]]:
    """Run ``baton ARGV`` in a fresh interpreter: its exit status and the top-level packages it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60,
                          check=False)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return seen["code"], {name.split(".")[0] for name in seen["modules"]}


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
