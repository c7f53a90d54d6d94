"""``baton db init``: the PostgreSQL roles that keep the log append-only even for baton's own login.

See ``eventstore.roles``: an owner role (NOLOGIN) owns the events table and
its triggers; the app role baton logs in as may only SELECT and INSERT there.
"""

from __future__ import annotations

import argparse
from typing import Any

import sqlalchemy as sa

from api.cli.context import CliError, open_store_for, refuse_missing_store
from api.failures import EXIT_OK, EXIT_USAGE
from api.settings import Settings, safe_url
from eventstore.roles import RoleError, init_roles


def cmd_db_init(args: argparse.Namespace, settings: Settings) -> int:
    """Set the roles up on the store ``BATON_DB`` names, connected as an administrator of it."""
    if not settings.db.startswith(("postgresql", "postgres")):
        raise CliError(EXIT_USAGE, "baton db init sets up PostgreSQL roles; a SQLite store is protected by its "
                                   "file's permissions (chmod 600 baton.db)")
    refuse_missing_store(settings)
    store = open_store_for(settings)
    try:
        done = init_roles(store.database, args.owner_role, args.app_role)
    except RoleError as exc:
        raise CliError(EXIT_USAGE, str(exc)) from None
    finally:
        store.close()
    for line in done:
        print(line)
    app_url = sa.engine.make_url(settings.db).set(username=args.app_role, password=None)
    print(f"now run baton as {args.app_role}: BATON_DB={safe_url(app_url.render_as_string(hide_password=False))} "
          f"(with its password); run `baton db init` again, as an administrator, after upgrading baton")
    return EXIT_OK


def add_db_commands(sub: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    """``baton db init`` on the CLI's subcommands."""
    p = sub.add_parser("db", parents=[common], help="set up the database (PostgreSQL roles)")
    actions: argparse._SubParsersAction[argparse.ArgumentParser] = p.add_subparsers(
        dest="action", metavar="ACTION", parser_class=parser_class, required=True)
    init = actions.add_parser("init", parents=[common], help="create the owner role of the log and the app role "
                              "baton logs in as (SELECT and INSERT on the log only); run as a database administrator")
    init.set_defaults(handler=cmd_db_init)
    init.add_argument("--owner-role", default="baton_owner", metavar="NAME",
                      help="the role that owns the events table and its triggers (NOLOGIN; default: baton_owner)")
    init.add_argument("--app-role", default="baton_app", metavar="NAME",
                      help="the role baton serve logs in as (default: baton_app)")
