"""How a baton process tells a person it cannot go on: one line, no password, an exit code.

Every command and ``baton serve`` alike print ``baton: error: <what>`` on
stderr and exit 2 when what the person typed or configured is wrong (fix the
input and run it again), 1 when something failed at run time (an unreachable
store, an engine that cannot start, a run being handed over: it may pass on
its own).

The error types are named by where they are defined, not imported: importing
them all pulled the engine, SQLAlchemy and the HTTP client into every
``baton --help`` (~0.8 s of its ~1.2 s). An exception can only be an instance
of a class whose module has run, so matching against the classes of the
modules already imported (``loaded``) is ``isinstance`` against them all.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Errors a person fixes by changing what they typed (or where they send it), and errors of the
# environment, which may pass on their own (an unreachable store, a run being handed over): MODULE.CLASS
# where each is defined (tests/api/test_failures.py checks every name against the class).
INPUT_ERRORS = ("flows.catalog.UnknownFlow", "flows.launch.LaunchError", "flows.text.UnstorableText",
                "flows.errors.UnknownRun", "flows.errors.UnknownStep", "flows.errors.NotWaiting",
                "actors.errors.RunOwnedElsewhere", "actors.errors.LaunchInProgress", "flows.errors.RunFinished",
                "api.runtime.FlowsImportError", "api.settings.SettingsError", "actors.agents.base.BackendConfigError",
                "flows.auth.AccessError", "flows.projects.ProjectError", "actors.workspace.errors.WorkspaceError",
                "flows.fork.NotRetryable", "actors.errors.TaskCommandRefused",
                "flows.tasks.lifecycle.TaskTransitionError", "actors.task_runs.LandingNotReady")
RUNTIME_ERRORS = ("eventstore.store.StoreError", "actors.errors.EngineTimeout", "actors.errors.EngineUnavailable",
                  "actors.errors.RunBusy", "api.runtime.StartError", "builtins.TimeoutError")


def loaded(names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The classes of ``names`` whose modules are imported: the only ones a live exception can be of."""
    found = []
    for name in names:
        module, _, attr = name.rpartition(".")
        cls = getattr(sys.modules.get(module), attr, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def known(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the errors above (its message is for a person as it stands)."""
    return isinstance(exc, loaded(INPUT_ERRORS + RUNTIME_ERRORS))


def exit_code(exc: BaseException) -> int:
    """2 for an error of the input, 1 for anything else (a failure at run time, or unforeseen)."""
    return EXIT_USAGE if isinstance(exc, loaded(INPUT_ERRORS)) else EXIT_FAILED


def describe(exc: BaseException, db: str) -> str:
    """What went wrong, on one line and without the store's password; unforeseen errors name their type."""
    from api.settings import safe_url, scrub  # an error's path only: api.settings imports SQLAlchemy

    if db and isinstance(exc, loaded(("eventstore.store.StoreError",))) and safe_url(db) not in str(exc):
        return f"{safe_url(db)}: {scrub(str(exc), db)}"  # which store, when the store did not say
    if known(exc):
        return scrub(str(exc), db)
    return f"unexpected {type(exc).__name__}: {scrub(str(exc), db)} (run with -v for the traceback)"


def fail(code: int, message: str) -> int:
    """Print the one error line and return the exit status."""
    print(f"baton: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code
