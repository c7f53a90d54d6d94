"""Finding a live ``baton serve`` of the same store, for a command to go through it.

Each ``baton serve`` holds a lease named ``server-<url>`` while it listens
(renewed with its node lease, gone when it stops or dies); the CLI takes the
one on this host first and checks that it answers. The HTTP client is
imported only when there is a server to ask: a command with no server
running needs none (docs/PERFORMANCE.md, "CLI start-up").
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from eventstore import EventStore

# The warning kept the name it had when discovery lived in api.cli.client: "baton: warning: api.cli.client: ..."
log = logging.getLogger("api.cli.client")


def discover(store: EventStore, answers: Callable[[str], bool] | None = None) -> str | None:
    """The URL of a live ``baton serve`` on this store that answers, or None.

    Servers on this host come first (a loopback URL of another host means
    nothing here and is skipped). A server whose lease lives but that does
    not answer is passed over with a warning.
    """
    from actors.runlog import live_servers
    from eventstore import SqlStore
    from eventstore.leases import Leases

    if not isinstance(store, SqlStore):  # no database to read the leases from
        return None
    held = Leases(store.database).held()
    here = socket.gethostname()
    candidates = []
    for url, owner in live_servers(held):
        host = owner.rpartition(":")[0]
        if host != here and _loopback(url):
            continue
        candidates.append((host != here, url))
    check = answers or _answers
    for _, url in sorted(candidates):
        if check(url):
            return url
        log.warning("the baton server at %s holds its lease but does not answer; running in this process", url)
    return None


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _answers(url: str) -> bool:
    from api.cli.client import CONNECT_S, Client, ServerError  # a server's lease is held: ask it

    client = Client(url, timeout=CONNECT_S)
    try:
        client.health()
        return True
    except ServerError:
        return False
    finally:
        client.close()
