"""Running ``baton`` as a user does: a real subprocess of the console script, on a database of the test's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventstore import open_store

REPO = Path(__file__).resolve().parents[2]
BATON = Path(sys.executable).with_name("baton")
RUN_ID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")
FIXTURE_FLOWS = "tests.e2e.flows_fixture"


@dataclass
class Result:
    """A finished ``baton`` command."""

    code: int
    out: str
    err: str

    @property
    def run_id(self) -> str:
        """The first run id the command printed."""
        found = RUN_ID.search(self.out)
        assert found, f"no run id in: {self.out!r}"
        return found.group(0)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any BATON_* setting of the developer's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["PYTHONPATH"] = str(REPO)  # so --flows tests.e2e.flows_fixture imports
    env["COLUMNS"] = "160"
    env.update(extra)
    return env


class Baton:
    """Runs ``baton`` commands against one database."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd
        self.paused = ""  # run ids a fixture prepared, when it did
        self.completed = ""

    def __call__(self, *args: str, timeout: float = 60, db: bool = True, **env: str) -> Result:
        extra = {"BATON_DB": self.url} if db else {}
        proc = subprocess.run([str(BATON), *args], cwd=self.cwd, env=clean_env(**extra, **env),
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, preexec_fn: Any = None) -> subprocess.Popen:
        """A command left running (``tail``); ``preexec_fn`` runs in the child before baton starts."""
        return subprocess.Popen([str(BATON), *args], cwd=self.cwd, env=clean_env(BATON_DB=self.url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)

    def ok(self, *args: str, **kw: str) -> Result:
        """Run a command that must succeed."""
        result = self(*args, **kw)
        assert result.code == 0, f"baton {' '.join(args)} -> {result.code}\n{result.out}\n{result.err}"
        assert "Traceback" not in result.err, result.err
        return result

    def head(self) -> int:
        """The store's head, read directly."""
        with open_store(self.url) as store:
            return store.head()

    def events(self, run_id: str) -> list:
        """A run's recorded events, read directly."""
        with open_store(self.url) as store:
            return store.read_stream(f"run-{run_id}")
