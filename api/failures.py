"""How a baton process tells a person it cannot go on: one line, no password, an exit code.

Every command and ``baton serve`` alike print ``baton: error: <what>`` on
stderr and exit 2 when what the person typed or configured is wrong (fix the
input and run it again), 1 when something failed at run time (an unreachable
store, an engine that cannot start, a run being handed over: it may pass on
its own).
"""

from __future__ import annotations

import sys

from actors.agents.base import BackendConfigError
from actors.errors import (
    EngineTimeout,
    EngineUnavailable,
    LaunchInProgress,
    RunBusy,
    RunOwnedElsewhere,
    TaskCommandRefused,
)
from actors.task_runs import LandingNotReady
from actors.workspace.errors import WorkspaceError
from api.runtime import FlowsImportError, StartError
from api.settings import SettingsError, safe_url, scrub
from eventstore import StoreError
from flows import errors
from flows.auth import AccessError
from flows.catalog import UnknownFlow
from flows.fork import NotRetryable
from flows.launch import LaunchError
from flows.projects import ProjectError
from flows.tasks.lifecycle import TaskTransitionError
from flows.text import UnstorableText

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Errors a person fixes by changing what they typed (or where they send it), and errors of the
# environment, which may pass on their own (an unreachable store, a run being handed over).
INPUT_ERRORS = (UnknownFlow, LaunchError, UnstorableText, errors.UnknownRun, errors.UnknownStep, errors.NotWaiting,
                RunOwnedElsewhere, LaunchInProgress, errors.RunFinished, FlowsImportError, SettingsError,
                BackendConfigError, AccessError, ProjectError, WorkspaceError, NotRetryable, TaskCommandRefused,
                TaskTransitionError, LandingNotReady)
RUNTIME_ERRORS = (StoreError, EngineTimeout, EngineUnavailable, RunBusy, StartError, TimeoutError)


def exit_code(exc: BaseException) -> int:
    """2 for an error of the input, 1 for anything else (a failure at run time, or unforeseen)."""
    return EXIT_USAGE if isinstance(exc, INPUT_ERRORS) else EXIT_FAILED


def describe(exc: BaseException, db: str) -> str:
    """What went wrong, on one line and without the store's password; unforeseen errors name their type."""
    if db and isinstance(exc, StoreError) and safe_url(db) not in str(exc):
        return f"{safe_url(db)}: {scrub(str(exc), db)}"  # which store, when the store did not say
    if isinstance(exc, INPUT_ERRORS + RUNTIME_ERRORS):
        return scrub(str(exc), db)
    return f"unexpected {type(exc).__name__}: {scrub(str(exc), db)} (run with -v for the traceback)"


def fail(code: int, message: str) -> int:
    """Print the one error line and return the exit status."""
    print(f"baton: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code
