"""The ``baton`` parser: every command, flag and help text, built without importing what the commands run.

``baton --help``, ``baton CMD --help`` and a mistyped command need only this
module: a command's function is named where it lives (``Handler``) and
imported when the command runs. Importing the commands to build the parser
cost ~1 s a start (the engine, SQLAlchemy, the HTTP stack, pykka); see
docs/PERFORMANCE.md, "CLI start-up". The few values of the core the help
text shows are copied below for the same reason, and
tests/api/test_cli_start.py checks each against its original.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from api.cli.errors import CliError
from api.failures import EXIT_USAGE

# Copies of the core's values (one home each: flows.auth, flows.launch, flows.status, actors.task_runs),
# kept so the help needs none of flows' imports (~0.1 s); a test checks them against the originals.
ROLES = ("viewer", "operator", "approver", "admin")
DEFAULT_BAND = "small"
RUN_STATUSES = ("queued", "running", "paused", "completed", "failed", "rejected", "cancelled")
DEFAULT_TASKS_DIR = "tasks"


class Handler:
    """A command's function, ``MODULE:NAME``, imported when the command runs (not when the parser is built)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(self, args: argparse.Namespace, settings: Any) -> int:
        module, _, name = self.where.partition(":")
        status: int = getattr(importlib.import_module(module), name)(args, settings)
        return status

    def __repr__(self) -> str:
        return f"Handler({self.where!r})"


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

    p = add("serve", Handler("api.cli.commands:cmd_serve"), "serve the HTTP API and the frame stream")
    for flag, name, kind, metavar, text in SERVE_FLAGS:
        p.add_argument(flag, dest=SETTING_FLAG + name, type=kind, default=None, metavar=metavar, help=text)
    p.add_argument("--insecure-no-auth", dest=SETTING_FLAG + "insecure_no_auth", action="store_const", const=True,
                   default=None, help="serve without tokens (BATON_INSECURE_NO_AUTH): on a loopback host only, "
                                      "with a warning at every start")
    p.add_argument("--cluster", dest=SETTING_FLAG + "cluster", action=argparse.BooleanOptionalAction, default=None,
                   help="with a PostgreSQL store, share one queue and the capacity with the other nodes "
                        "(BATON_CLUSTER; on by default)")
    p.add_argument("--one-cpu", dest=SETTING_FLAG + "one_cpu", action=argparse.BooleanOptionalAction, default=None,
                   help="the server's threads on one CPU, the processes it starts on all (BATON_ONE_CPU; on by "
                        "default): less CPU per request on a machine of several")
    add("demo", Handler("api.cli.commands:cmd_demo"), "run review-and-approve offline, approve it, print the report and verify the log")
    p = add("flows", Handler("api.cli.commands:cmd_flows"), "list the flow catalogue")
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    p = add("plan", Handler("api.cli.commands:cmd_plan"), "show the scheduler's plan: what runs, what waits and why")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p = add("nodes", Handler("api.cli.commands:cmd_nodes"), "list the nodes sharing the store: their leases and the runs each drives")
    p.add_argument("--json", action="store_true", help="print the nodes as JSON")
    p = add("launch", Handler("api.cli.commands:cmd_launch"), "launch a run and drive it until it ends or waits for approval")
    p.add_argument("flow", metavar="FLOW")
    p.add_argument("-q", "--question", metavar="TEXT", help="what the run is about (required)")
    p.add_argument("--band", default=DEFAULT_BAND, help=f"small, medium or large (default: {DEFAULT_BAND})")
    p.add_argument("--fast", action="store_true", help="ask every agent step for a concise answer")
    p.add_argument("--model", metavar="M", help="model name passed to the backend")
    p.add_argument("--project", metavar="P", help="project id")
    p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("runs", Handler("api.cli.commands:cmd_runs"), "list runs, newest first")
    p.add_argument("--status", choices=list(RUN_STATUSES), metavar="STATUS",
                   help=f"one of {', '.join(RUN_STATUSES)}")
    p.add_argument("--flow")
    p.add_argument("--project")
    p.add_argument("--limit", type=positive_int, default=20, metavar="N", help="at most N runs (default: 20)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p = add("show", Handler("api.cli.commands:cmd_show"), "show a run, its steps and its report")
    p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
    p.add_argument("--report", action="store_true", help="print only the report, as markdown")
    p.add_argument("--json", action="store_true", help="print the run, its steps and its report as JSON")
    for name, text in (("approve", "approve a paused step and drive the run on"),
                       ("reject", "reject a paused step and drive the run on")):
        p = add(name, Handler("api.cli.commands:cmd_decide"), text)
        p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
        p.add_argument("step", metavar="STEP", nargs="?",
                       help="the paused step (default: the run's one step waiting for a person)")
        p.add_argument("--comment", metavar="C", help="recorded with the decision (the step's output)")
        p.add_argument("--by", metavar="NAME", help="who decides (default: your login name)")
        p.add_argument("--follow", action="store_true", help="show the live progress table and the report")
    p = add("cancel", Handler("api.cli.commands:cmd_cancel"), "cancel a run that has not ended")
    p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
    p.add_argument("--reason", metavar="R")
    p.add_argument("--by", metavar="NAME")
    add_fork_commands(add)
    p = add("tail", Handler("api.cli.commands:cmd_tail"), "follow durable frames (of one run, until it ends)")
    p.add_argument("run", metavar="RUN", nargs="?")
    p.add_argument("--after", type=int, metavar="N", help="start after position N (default: the run's start, "
                   "or the head without RUN)")
    p.add_argument("--json", action="store_true", help="print each frame as JSON")
    p = add("replay", Handler("api.cli.commands:cmd_replay"), "re-fold runs from the log; --verify checks it was not edited")
    p.add_argument("--verify", action="store_true")
    p.add_argument("--run", metavar="RUN")
    p.add_argument("--seal", metavar="SEAL", help="with --verify: also check the log against a seal `baton seal` "
                   "printed (the line, or @FILE holding it): catches events cut from the end or rewritten before it")
    add_db_commands(sub, common)
    add("seal", Handler("api.cli.seal:cmd_seal"), "seal the log up to now and print the seal to keep elsewhere (see replay --seal)")
    p = add("tokens", lambda a, s: EXIT_USAGE, "manage access tokens (DESIGN §13): create, list, revoke")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    t = actions.add_parser("create", parents=[common], help="make a token; printed once, only its hash is kept")
    t.set_defaults(handler=Handler("api.cli.commands:cmd_tokens_create"))
    t.add_argument("name", metavar="NAME", help="who the token acts as (recorded in the log)")
    t.add_argument("--role", choices=ROLES, default="viewer", help="viewer (reads), operator (+ launch, cancel), "
                   "approver (+ approve, reject), admin (+ tokens); default: viewer")
    t = actions.add_parser("list", parents=[common], help="the valid tokens (never a token itself)")
    t.set_defaults(handler=Handler("api.cli.commands:cmd_tokens_list"))
    t.add_argument("--json", action="store_true", help="print the tokens as JSON")
    t = actions.add_parser("revoke", parents=[common], help="revoke a token by name")
    t.set_defaults(handler=Handler("api.cli.commands:cmd_tokens_revoke"))
    t.add_argument("name", metavar="NAME")
    p = add("projects", Handler("api.cli.commands:cmd_projects_list"), "list the projects (git repositories runs may read); add or remove one")
    p.add_argument("--json", action="store_true", help="print the projects as JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    t = actions.add_parser("add", parents=[common], help="register the git work tree at PATH as project NAME")
    t.set_defaults(handler=Handler("api.cli.commands:cmd_projects_add"))
    t.add_argument("name", metavar="NAME", help="the project id (lowercase letters, digits, '.', '_', '-')")
    t.add_argument("path", metavar="PATH", help="the top level of a git work tree")
    t = actions.add_parser("remove", parents=[common], help="unregister project NAME (runs launched with it keep "
                           "their pin)")
    t.set_defaults(handler=Handler("api.cli.commands:cmd_projects_remove"))
    t.add_argument("name", metavar="NAME")
    t.add_argument("--reason", default="", help="why (recorded in the log)")
    t = actions.add_parser("list", parents=[common], help="the registered projects")
    t.set_defaults(handler=Handler("api.cli.commands:cmd_projects_list"))
    t.add_argument("--json", action="store_true", help="print the projects as JSON")
    add_tasks_commands(sub, common)
    p = add("projections", lambda a, s: EXIT_USAGE, "manage the read tables")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    actions.add_parser("rebuild", parents=[common], help="rebuild the read tables from position 0").set_defaults(
        handler=Handler("api.cli.commands:cmd_rebuild"))
    return parser


def add_fork_commands(add: Any) -> None:
    """``fork`` and ``retry`` (``api.cli.forks``); ``add(name, handler, help)`` gives a subparser."""
    for name, text in (("fork", "start a new run from a run's log: keep what came before STEP, run the rest"),
                       ("retry", "re-run a failed, cancelled or lost STEP of an ended run, and what follows")):
        p = add(name, Handler("api.cli.forks:cmd_fork"), text)
        p.add_argument("run", metavar="RUN", help="a run id, or the start of exactly one")
        p.add_argument("step", metavar="STEP")
        if name == "fork":
            p.add_argument("--input", action="append", metavar="NAME=VALUE",
                           help="change one of the run's inputs (the question included); may be repeated")
        p.add_argument("--by", metavar="NAME", help="who forks (default: your login name)")
        p.add_argument("--follow", action="store_true", help="show the live progress table and the report")


def add_db_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``baton db init`` (``api.cli.db``)."""
    p = sub.add_parser("db", parents=[common], help="set up the database (PostgreSQL roles)")
    actions: argparse._SubParsersAction[argparse.ArgumentParser] = p.add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    init = actions.add_parser("init", parents=[common], help="create the owner role of the log and the app role "
                              "baton logs in as (SELECT and INSERT on the log only); run as a database administrator")
    init.set_defaults(handler=Handler("api.cli.db:cmd_db_init"))
    init.add_argument("--owner-role", default="baton_owner", metavar="NAME",
                      help="the role that owns the events table and its triggers (NOLOGIN; default: baton_owner)")
    init.add_argument("--app-role", default="baton_app", metavar="NAME",
                      help="the role baton serve logs in as (default: baton_app)")


def add_tasks_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``tasks`` command and its actions (``api.cli.tasks``)."""
    p = sub.add_parser("tasks", parents=[common], help="task graphs in git worktrees (DESIGN §12)",
                       description="task graphs in git worktrees: plan, run, status, cleanup")
    p.set_defaults(handler=lambda a, s: EXIT_USAGE)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("plan", parents=[common], help="check a project's task files and print the waves")
    t.set_defaults(handler=Handler("api.cli.tasks:cmd_plan"))
    t.add_argument("project", metavar="PROJECT", help="a registered project's id")
    t.add_argument("--tasks-dir", default=DEFAULT_TASKS_DIR, metavar="DIR")
    t = actions.add_parser("run", parents=[common], help="launch a project's task graph and drive it here")
    t.set_defaults(handler=Handler("api.cli.tasks:cmd_run"))
    t.add_argument("project", metavar="PROJECT")
    t.add_argument("--tasks-dir", default=DEFAULT_TASKS_DIR, metavar="DIR")
    t.add_argument("--base", default="HEAD", metavar="REV", help="where the integration branch starts")
    t.add_argument("--target", default="", metavar="BRANCH", help="the branch the result is for")
    t.add_argument("--max-rounds", type=int, default=0, metavar="N", help="(BATON_TASK_MAX_ROUNDS)")
    t.add_argument("--model", default="", metavar="NAME")
    t = actions.add_parser("status", parents=[common], help="every task of a task run")
    t.set_defaults(handler=Handler("api.cli.tasks:cmd_status"))
    t.add_argument("run", metavar="RUN")
    t.add_argument("--json", action="store_true")
    t = actions.add_parser("answer", parents=[common], help="a word on one task (retry, skip, abort, message), "
                                                             "then drive the run here until it ends or waits")
    t.set_defaults(handler=Handler("api.cli.tasks:cmd_answer"))
    t.add_argument("run", metavar="RUN")
    t.add_argument("task", metavar="TASK")
    t.add_argument("action", choices=("retry", "skip", "abort", "message"))
    t.add_argument("--text", "--context", default="", metavar="TEXT",
                   help="retry: context for the next attempt; abort: why; message: the message")
    t = actions.add_parser("land", parents=[common], help="approve a task run's landing gate, or fast-forward the "
                                                           "target branch to an ended run's integration branch "
                                                           "(never in a checkout)")
    t.set_defaults(handler=Handler("api.cli.tasks:cmd_land"))
    t.add_argument("run", metavar="RUN")
    t.add_argument("--target", default="", metavar="BRANCH", help="default: the branch the run was launched for")
    t = actions.add_parser("cleanup", parents=[common], help="reconcile git with a task run's log")
    t.set_defaults(handler=Handler("api.cli.tasks:cmd_cleanup"))
    t.add_argument("run", metavar="RUN")
    t.add_argument("--dry-run", action="store_true", help="list what would be done; change nothing")
    t.add_argument("--prune-kept", action="store_true", help="also delete the branches kept for unmerged work")
