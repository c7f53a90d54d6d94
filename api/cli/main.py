"""``baton``: the command line (DESIGN §9).

Every command reads its settings once (``BATON_*``, then the flags). Where
it is carried out is decided once (``target``): through a ``baton serve``
of the same store when one runs and answers (found by its ``server-<url>``
lease, or named with ``--server`` / ``BATON_URL``), whose engine then
drives the run; else in this process, on ``BATON_DB`` (``--local`` forces
this). Either way the command prints the same output (``api.cli.targets``).

In this process, commands that change a run (launch, approve, reject,
cancel, demo) start an engine that drives that run only (``recover=False``)
for as long as the command runs: a launch until the run ends or waits for a
person. While it runs, its engine follows its inbox, so a command for that
run sent to a server (or typed in another shell) reaches it and takes
effect here. A run this process leaves unfinished (Ctrl-C) stays in the
log: a ``baton serve`` takes it up when it starts, or at its next heartbeat
once this process's lease is gone if it saw this process alive, and a
later command aimed at that run (``baton cancel RUN``) takes it up too.
Queries (runs, show) start only the projector and wait for it to reach the
store's head, so they see every command that returned before them.

A RUN argument is a run id or the start of exactly one. Bad input is
checked against the log *before* an engine starts, so a refused command
appends nothing. Each error prints one line, ``baton: error: ...``, and
exits 2 (the input is wrong) or 1 (something failed at run time). Text a
person or a model wrote is printed with its control characters escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from api import failures
from api.cli.errors import CliError, Interrupted, RunIdError
from api.cli.escape import printable_line
from api.cli.parser import SETTING_FLAG, build_parser
from api.failures import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail

if TYPE_CHECKING:
    from api.settings import Settings

__all__ = ["build_parser", "main", "settings_of"]

# -- settings ------------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the global flags (and the command's own)."""
    from api.settings import check as check_settings  # once a command runs: api.settings imports SQLAlchemy
    from api.settings import from_env

    flows = tuple(p.strip() for p in args.flows.split(",") if p.strip()) if getattr(args, "flows", None) else None
    flagged = {name.removeprefix(SETTING_FLAG): value for name, value in vars(args).items()
               if name.startswith(SETTING_FLAG)}
    settings = from_env().replace(db=getattr(args, "db", None), flows=flows, agent=getattr(args, "agent", None),
                                  url=getattr(args, "server", None), personas=getattr(args, "personas", None),
                                  **flagged)
    return check_settings(settings)


# -- main ----------------------------------------------------------------------------------------


class _OneLineFormatter(logging.Formatter):
    """Log records as single lines without tracebacks (``-v`` keeps them)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return " ".join(super().format(record).split())


def configure_logging(verbose: bool) -> None:
    """Warnings (info with -v) on stderr; tracebacks only with -v."""
    handler = logging.StreamHandler(sys.stderr)
    fmt = "baton: %(levelname)s: %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbose else _OneLineFormatter(fmt))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


def reader_gone() -> int:
    """The command's output went to a reader that stopped reading (``baton tail | head -1``): end quietly.

    stdout is pointed at /dev/null first, so the interpreter's last flush
    at exit does not fail again (that was the traceback).
    """
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_OK


def flows_module_missing(exc: BaseException) -> str:
    """The error line of a run whose flows module this shell cannot import."""
    from actors.errors import FlowsModuleMissing  # imported already: one was raised

    assert isinstance(exc, FlowsModuleMissing)
    return (f"run {exc.run_id} needs flows module {exc.module!r}, which this shell cannot import; start the "
            f"command where {exc.module!r} imports, or send it to the server with --server / BATON_URL")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``baton`` command; returns the exit status."""
    verbose, db = False, ""
    try:
        args = build_parser().parse_args(argv)
        verbose = bool(getattr(args, "verbose", False))
        configure_logging(verbose)
        settings = settings_of(args)
        db = settings.db
        status: int = args.handler(args, settings)
        return status
    except CliError as exc:
        return fail(exc.code, printable_line(str(exc)))
    except failures.loaded(("actors.errors.FlowsModuleMissing",)) as exc:  # by name, as the next ones (--help)
        return fail(EXIT_USAGE, flows_module_missing(exc))
    except RunIdError as exc:
        return fail(EXIT_USAGE, printable_line(str(exc)))
    except failures.loaded(failures.INPUT_ERRORS + failures.RUNTIME_ERRORS) as exc:
        return fail(failures.exit_code(exc), printable_line(failures.describe(exc, db)))
    except BrokenPipeError:
        return reader_gone()
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("baton: interrupted; a run this command was driving stays in the log, unfinished: baton serve "
              "takes it up when it next starts (so does a command aimed at that run, e.g. baton cancel RUN)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if verbose:
            raise
        return fail(EXIT_FAILED, printable_line(failures.describe(exc, db)))


if __name__ == "__main__":
    sys.exit(main())
