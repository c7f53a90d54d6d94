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
from collections.abc import Callable, Sequence
from typing import Any

from actors.errors import FlowsModuleMissing
from api import failures
from api.cli import tasks as cli_tasks
from api.cli.commands import (
    cmd_cancel,
    cmd_decide,
    cmd_demo,
    cmd_flows,
    cmd_launch,
    cmd_nodes,
    cmd_plan,
    cmd_projects_add,
    cmd_projects_list,
    cmd_rebuild,
    cmd_replay,
    cmd_runs,
    cmd_serve,
    cmd_show,
    cmd_tail,
    cmd_tokens_create,
    cmd_tokens_list,
    cmd_tokens_revoke,
)
from api.cli.context import CliError, Interrupted
from api.cli.db import add_db_commands
from api.cli.escape import printable_line
from api.cli.forks import add_commands as add_fork_commands
from api.cli.seal import cmd_seal
from api.cli.targets import RunIdError
from api.failures import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail
from api.settings import Settings, from_env
from api.settings import check as check_settings
from flows.auth import ROLES
from flows.launch import DEFAULT_BAND
from flows.status import RUN_STATUSES

# -- settings, and where a command is carried out ------------------------------------------------


# `baton serve` takes a flag for every setting (DESIGN §9): (flag, setting, type, help); the flag wins
# over its BATON_* variable. Their argparse dests carry SETTING_FLAG so that no command's own option of
# the same name (`launch --model`: the model of one run) is taken for a setting.
SERVE_FLAGS: tuple[tuple[str, str, Callable[[str], Any], str, str], ...] = (
    ("--host", "host", str, "HOST", "address to listen on (BATON_HOST)"),
    ("--port", "port", int, "PORT", "port to listen on (BATON_PORT)"),
    ("--model", "model", str, "NAME", "default model of agent steps (BATON_MODEL)"),
    ("--openai-base-url", "openai_base_url", str, "URL", "OpenAI-compatible server (BATON_OPENAI_BASE_URL)"),
    ("--openai-api-key", "openai_api_key", str, "KEY",
     "bearer token (BATON_OPENAI_API_KEY; a flag shows in the process list, the variable does not)"),
    ("--cli-command", "cli_command", str, "TEMPLATE", "CLI backend command with {prompt} (BATON_CLI_COMMAND)"),
    ("--cli-task-command", "cli_task_command", str, "TEMPLATE",
     "CLI backend command of a task's implementor, run in its worktree (BATON_CLI_TASK_COMMAND)"),
    ("--max-active-runs", "max_active_runs", int, "N", "runs in progress at once, 0 = no limit "
     "(BATON_MAX_ACTIVE_RUNS)"),
    ("--agent-slots", "agent_slots", int, "N", "model calls at once, 0 = no limit (BATON_AGENT_SLOTS)"),
    ("--stall-s", "stall_s", float, "SECONDS", "silence before a running agent step is a stall (BATON_STALL_S)"),
    ("--node", "node", str, "NAME", "this process's unique name among those sharing the store (BATON_NODE)"),
    ("--openai-read-timeout-s", "openai_read_timeout_s", float, "SECONDS",
     "silence from the model server before a call fails (BATON_OPENAI_READ_TIMEOUT_S)"),
    ("--max-output-bytes", "max_output_bytes", int, "BYTES",
     "a step output larger than this fails the step (BATON_MAX_OUTPUT_BYTES)"),
    ("--max-connections", "max_connections", int, "N", "HTTP connections held at once (BATON_MAX_CONNECTIONS)"),
    ("--header-timeout-s", "header_timeout_s", float, "SECONDS", "time a client has to send a request head "
     "(BATON_HEADER_TIMEOUT_S)"),
    ("--body-timeout-s", "body_timeout_s", float, "SECONDS", "time a client has to send a request body "
     "(BATON_BODY_TIMEOUT_S)"),
    ("--token-file", "token_file", str, "PATH", "where the first start writes the admin token (BATON_TOKEN_FILE; "
     "default: beside a SQLite store, else under ~/.config/baton/)"),
    ("--allowed-hosts", "allowed_hosts", lambda raw: tuple(p.strip() for p in raw.split(",") if p.strip()),
     "NAME,NAME", "Host names served besides localhost, the bind address and IP literals (BATON_ALLOWED_HOSTS)"),
    ("--cors-origins", "cors_origins", lambda raw: tuple(p.strip() for p in raw.split(",") if p.strip()),
     "ORIGIN,ORIGIN", "origins allowed to call the API from a browser (BATON_CORS_ORIGINS; default: none)"),
    ("--session-ttl-s", "session_ttl_s", float, "SECONDS", "how long a console login lasts (BATON_SESSION_TTL_S)"),
    ("--worktrees", "worktrees", str, "DIR", "where task runs' git worktrees go (BATON_WORKTREES)"),
    ("--task-max-rounds", "task_max_rounds", int, "N", "review rounds before a task waits for a person "
     "(BATON_TASK_MAX_ROUNDS)"),
    ("--run-timeout-s", "run_timeout_s", float, "SECONDS", "the run tool and each check of a task "
     "(BATON_RUN_TIMEOUT_S)"),
    ("--seal-interval-s", "seal_interval_s", float, "SECONDS",
     "seal the log this often, and at shutdown; 0 = at shutdown only (BATON_SEAL_INTERVAL_S)"),
    ("--lease-ttl-s", "lease_ttl_s", float, "SECONDS", "a node silent this long loses its runs and slots to the "
     "others (BATON_LEASE_TTL_S)"),
)
SETTING_FLAG = "setting__"


def settings_of(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then the global flags (and the command's own)."""
    flows = tuple(p.strip() for p in args.flows.split(",") if p.strip()) if getattr(args, "flows", None) else None
    flagged = {name.removeprefix(SETTING_FLAG): value for name, value in vars(args).items()
               if name.startswith(SETTING_FLAG)}
    settings = from_env().replace(db=getattr(args, "db", None), flows=flows, agent=getattr(args, "agent", None),
                                  url=getattr(args, "server", None), personas=getattr(args, "personas", None),
                                  **flagged)
    return check_settings(settings)


# -- the parser and main -------------------------------------------------------------------------


def positive_int(raw: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the flag in its error)."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be at least 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with our one-line error (and exit 2) instead of the usage dump."""

    def error(self, message: str) -> Any:
        raise CliError(EXIT_USAGE, f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``baton`` parser; global flags are accepted before or after the command."""
    common = _Parser(add_help=False)  # a parent only: its arguments are copied, never parsed
    s = argparse.SUPPRESS
    common.add_argument("--db", metavar="URL", default=s, help="event store URL (BATON_DB)")
    common.add_argument("--flows", metavar="MOD,MOD", default=s, help="modules of extra flows (BATON_FLOWS)")
    common.add_argument("--agent", metavar="NAME", default=s, help="offline, openai or cli (BATON_AGENT)")
    common.add_argument("--personas", metavar="DIR", default=s,
                        help="a folder of your own persona files, NAME.md (BATON_PERSONAS)")
    common.add_argument("--server", metavar="URL", default=s,
                        help="send commands to the baton server at URL (BATON_URL); default: a live server of "
                             "the same store, when one answers")
    common.add_argument("--local", action="store_true", default=s,
                        help="carry the command out in this process, even when a server runs")
    common.add_argument("-v", "--verbose", action="store_true", default=s, help="log more, with tracebacks")
    parser = _Parser(prog="baton", parents=[common],
                     description="baton: event-sourced orchestrator for LLM agent flows.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    def add(name: str, handler: Callable[..., int], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(handler=handler)
        return p

    p = add("serve", cmd_serve, "serve the HTTP API and the frame stream")
    for flag, name, kind, metavar, text in SERVE_FLAGS:
        p.add_argument(flag, dest=SETTING_FLAG + name, type=kind, default=None, metavar=metavar, help=text)
    p.add_argument("--insecure-no-auth", dest=SETTING_FLAG + "insecure_no_auth", action="store_const", const=True,
                   default=None, help="serve without tokens (BATON_INSECURE_NO_AUTH): on a loopback host only, "
                                      "with a warning at every start")
    p.add_argument("--cluster", dest=SETTING_FLAG + "cluster", action=argparse.BooleanOptionalAction, default=None,
                   help="with a PostgreSQL store, share one queue and the capacity with the other nodes "
                        "(BATON_CLUSTER; on by default)")
    add("demo", cmd_demo, "run review-and-approve offline, approve it, print the report and verify the log")
    p = add("flows", cmd_flows, "list the flow catalogue")
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    p = add("plan", cmd_plan, "show the scheduler's plan: what runs, what waits and why")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p = add("nodes", cmd_nodes, "list the nodes sharing the store: their leases and the runs each drives")
    p.add_argument("--json", action="store_true", help="print the nodes as JSON")
    p = add("launch", cmd_launch, "launch a run and drive it until it ends or waits for approval")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("-q", "--question", metavar="TEXT", help="what the run is about (required)")
    p.add_argument("--band", default=DEFAULT_BAND, help=f"small, medium or large (default: {DEFAULT_BAND})")
    p.add_argument("--fast", action="store_true", help="ask every agent step for a concise answer")
    p.add_argument("--model", metavar="M", help="model name passed to the backend")
    p.add_argument("--project", metavar="P", help="project id")
    p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("runs", cmd_runs, "list runs, newest first")
    p.add_argument("--status", choices=[s.value for s in RUN_STATUSES], metavar="STATUS",
                   help=f"one of {', '.join(RUN_STATUSES)}")
    p.add_argument("--flow")
    p.add_argument("--project")
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N runs (default: 20)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p = add("show", cmd_show, "show a run, its steps and its report")
    p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
    p.add_argument("--report", action="store_true", help="print only the report, as markdown")
    p.add_argument("--json", action="store_true", help="print the run, its steps and its report as JSON")
    for name, text in (("approve", "approve a paused step and drive the run on"),
                       ("reject", "reject a paused step and drive the run on")):
        p = add(name, cmd_decide, text)
        p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
        p.add_argument("step", metavar="STEP", nargs="?",
                       help="the paused step (default: the run's one step waiting for a person)")
        p.add_argument("--comment", metavar="C", help="recorded with the decision (the step's output)")
        p.add_argument("--by", metavar="NAME", help="who decides (default: your login name)")
        p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("cancel", cmd_cancel, "cancel a run that has not ended")
    p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
    p.add_argument("--reason", metavar="R")
    p.add_argument("--by", metavar="NAME")
    add_fork_commands(add)
    p = add("tail", cmd_tail, "follow durable frames (of one run, until it ends)")
    p.add_argument("run", metavar="RUN", nargs="?")
    p.add_argument("--after", type=int, metavar="N", help="start after position N (default: the run's start, "
                   "or the head without RUN)")
    p.add_argument("--json", action="store_true", help="print each frame as JSON")
    p = add("replay", cmd_replay, "re-fold runs from the log; --verify checks it was not edited")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--run", metavar="RUN")
    p.add_argument("--seal", metavar="SEAL", help="with --verify: also check the log against a seal `baton seal` "
                   "printed (the line, or @FILE holding it): catches events cut from the end or rewritten before it")
    add_db_commands(sub, common, _Parser)
    add("seal", cmd_seal, "seal the log up to now and print the seal to keep elsewhere (see replay --seal)")
    p = add("tokens", lambda a, s: EXIT_USAGE, "manage access tokens (DESIGN §13): create, list, revoke")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    t = actions.add_parser("create", parents=[common], help="make a token; printed once, only its hash is kept")
    t.set_defaults(handler=cmd_tokens_create)
    t.add_argument("name", metavar="NAME", help="who the token acts as (recorded in the log)")
    t.add_argument("--role", choices=ROLES, default="viewer", help="viewer (reads), operator (+ launch, cancel), "
                   "approver (+ approve, reject), admin (+ tokens); default: viewer")
    t = actions.add_parser("list", parents=[common], help="the valid tokens (never a token itself)")
    t.set_defaults(handler=cmd_tokens_list)
    t.add_argument("--json", action="store_true", help="print the tokens as JSON")
    t = actions.add_parser("revoke", parents=[common], help="revoke a token by name")
    t.set_defaults(handler=cmd_tokens_revoke)
    t.add_argument("name", metavar="NAME")
    p = add("projects", cmd_projects_list, "list the projects (git repositories runs may read); add one")
    p.add_argument("--json", action="store_true", help="print the projects as JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    t = actions.add_parser("add", parents=[common], help="register the git work tree at PATH as project NAME")
    t.set_defaults(handler=cmd_projects_add)
    t.add_argument("name", metavar="NAME", help="the project id (lowercase letters, digits, '.', '_', '-')")
    t.add_argument("path", metavar="PATH", help="the top level of a git work tree")
    t = actions.add_parser("list", parents=[common], help="the registered projects")
    t.set_defaults(handler=cmd_projects_list)
    t.add_argument("--json", action="store_true", help="print the projects as JSON")
    cli_tasks.add_parser(sub, common)
    p = add("projections", lambda a, s: EXIT_USAGE, "manage the read tables")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    actions.add_parser("rebuild", parents=[common], help="rebuild the read tables from position 0").set_defaults(
        handler=cmd_rebuild)
    return parser


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
    except FlowsModuleMissing as exc:
        return fail(EXIT_USAGE, f"run {exc.run_id} needs flows module {exc.module!r}, which this shell cannot "
                                f"import; start the command where {exc.module!r} imports, or send it to the server "
                                f"with --server / BATON_URL")
    except RunIdError as exc:
        return fail(EXIT_USAGE, printable_line(str(exc)))
    except failures.INPUT_ERRORS + failures.RUNTIME_ERRORS as exc:
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
