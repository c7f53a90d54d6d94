"""What every ``baton`` command shares: how baton is typed here, and where it is carried out.

``target`` decides once per command: a server (named with ``--server`` /
``BATON_URL``, or found on the store by its ``server-<url>`` lease) or this
process (``api.cli.targets``). A command that only reads refuses a SQLite
file that does not exist instead of creating an empty store.

What each target needs is imported when it is chosen: the HTTP client for a
server, the runtime for this process, SQLAlchemy when the store is opened
(docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.cli.errors import CliError, Interrupted, ServerError
from api.failures import EXIT_USAGE
from api.settings import Settings, SettingsError, db_url, os_user, safe_url

if TYPE_CHECKING:
    from api.cli.client import Client
    from api.cli.local import Local
    from api.cli.targets import Target
    from api.runtime import Runtime


def program() -> str:
    """How the person runs baton: ``baton`` when that is on their PATH, else the path they typed.

    ``make demo`` runs ``.venv/bin/baton``; a follow-up line saying ``baton
    show ...`` failed with "command not found" in a shell without the venv.
    """
    typed = sys.argv[0] if sys.argv and sys.argv[0] else "baton"
    if os.path.basename(typed) != "baton":  # python -m api.cli.main
        return "python -m api.cli.main"
    on_path = shutil.which("baton")
    if on_path and os.path.realpath(on_path) == os.path.realpath(typed):
        return "baton"
    return shlex.quote(typed)


def baton_command(args: argparse.Namespace, settings: Settings) -> Callable[[str], str]:
    """How a person types a baton command to go on: as they ran this one, with the database a flag chose."""
    prefix = f"BATON_DB={shlex.quote(safe_url(settings.db))} " if getattr(args, "db", None) else ""
    name = program()
    return lambda rest: f"{prefix}{name} {rest}"


def whoami(given: str | None) -> str:
    """Who a command carried out in this process is recorded as: --by, else the login name.

    The database is trusted (whoever can write it can do anything), so here
    a person is taken at their word; through a server, the token's name is
    recorded instead (``Target.actor``).
    """
    return given or os_user()


def client_for(url: str, settings: Settings) -> Client:
    """A client of the server at ``url`` with this person's token: BATON_TOKEN, else the admin token file."""
    from api.cli.client import Client
    from api.tokens import read_token_file

    path = settings.admin_token_file()
    if settings.token:
        return Client(url, token=settings.token, token_hint="BATON_TOKEN was refused (revoked, mistyped, or of "
                                                            "another store)")
    token = read_token_file(path) or ""
    hint = (f"the token in {path} was refused (revoked?); set BATON_TOKEN to a valid one" if token else
            f"set BATON_TOKEN (no admin token file at {path}; the first baton serve of a store writes one)")
    return Client(url, token=token, token_hint=hint)


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite store URL (None for another backend or an in-memory database)."""
    try:
        parsed = db_url(url)
    except Exception:
        return None
    if parsed.backend != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def missing_store(settings: Settings) -> Path | None:
    """The SQLite file the settings name, when it does not exist (opening it would create an empty store)."""
    path = sqlite_file(settings.db)
    return path if path is not None and not path.exists() else None


def refuse_missing_store(settings: Settings) -> None:
    """A command that only reads: say there is no store rather than create an empty one."""
    path = missing_store(settings)
    if path is not None:
        raise CliError(EXIT_USAGE, f"no store at {path} (set BATON_DB or run a command that creates one, e.g. "
                                   f"{program()} launch FLOW -q TEXT)")


@contextmanager
def target(args: argparse.Namespace, settings: Settings, *, engine: bool = False, projector: bool = False,
           creates: bool = False) -> Iterator[Target]:
    """Where this command is carried out: a server (named, or found on the store), else this process.

    ``creates``: the command may create the store (a launch); any other
    refuses a SQLite file that does not exist. With ``--server`` / BATON_URL
    the store is opened only if it exists here, and only when a run id prefix needs it.
    """
    from api.cli.targets import Remote

    local = bool(getattr(args, "local", False))
    if settings.url and not local:
        options = settings.store_options()  # a bad key file is refused now, as when the store was opened here
        opener = None if missing_store(settings) else lambda: open_store_url(settings.db, options)
        chosen: Target = Remote(client_for(settings.url, settings), opener=opener, reconnect_s=settings.reconnect_s)
    else:
        if not creates:
            refuse_missing_store(settings)
        store = open_store_for(settings)
        url = None if local or store is None else discovered(store)
        if url:
            chosen = Remote(client_for(url, settings), store, reconnect_s=settings.reconnect_s)
        else:
            from api.cli.local import Local

            chosen = Local(settings, store=store, engine=engine, projector=projector)
    try:
        yield chosen
    except ServerError as exc:
        raise CliError(exc.code, str(exc)) from None
    except KeyboardInterrupt:
        if isinstance(chosen, Remote):  # nothing of this process drives the run: it goes on in the server
            raise Interrupted(f"baton: interrupted; the run goes on in the server at {chosen.client.url} "
                              f"(follow it with {program()} tail RUN)") from None
        raise
    finally:
        chosen.close()


def in_process(where: Target) -> Local | None:
    """``where`` when the command is carried out in this process (``Local``); None when a server carries it out."""
    from api.cli.targets import Remote

    if isinstance(where, Remote):
        return None
    from api.cli.local import Local  # imported already: a Local was made

    assert isinstance(where, Local)
    return where


def discovered(store: Any) -> str | None:
    """The URL of a live server of ``store`` that answers (``api.cli.discovery``), or None."""
    from api.cli.discovery import discover

    return discover(store)


def open_store_url(db: str, options: dict[str, Any]) -> Any:
    """``open_store(db, **options)`` (SQLAlchemy is imported here, when a store is opened)."""
    from eventstore import open_store

    return open_store(db, **options)


def open_store_for(settings: Settings) -> Any:
    """The store of the settings, or None when it is a SQLite file that does not exist yet."""
    if missing_store(settings) is not None:
        return None
    options = settings.store_options()  # a bad key file is its own setting's error, not the URL's
    try:
        return open_store_url(settings.db, options)
    except ValueError as exc:  # the URL is wrong, not the database
        raise SettingsError(f"BATON_DB / --db: {exc}") from None


@contextmanager
def running(settings: Settings, *, engine: bool = False) -> Iterator[Runtime]:
    """A Runtime for a command that only works in this process (tail, replay, rebuild, demo)."""
    from api.cli.local import Local

    local = Local(settings, engine=engine)
    try:
        yield local.start()
    finally:
        local.close()
