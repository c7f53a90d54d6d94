"""``baton db init``: the PostgreSQL roles that keep the log append-only even for baton's own login.

See ``eventstore.roles``: an owner role (NOLOGIN) owns the events table and
its triggers; the app role baton logs in as may only SELECT and INSERT there.
"""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from api.cli.context import open_store_for, refuse_missing_store
from api.cli.errors import CliError
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
