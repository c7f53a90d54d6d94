"""Where ``baton serve`` listens: the socket, taken before anything else starts, and its URL.

The port is bound first, so a port in use is one ``baton: error:`` line
before any banner (uvicorn binding it itself printed the ready banner, then
its own error). The URL is what a client on this host should use: a
wildcard address (``0.0.0.0``, ``::``) is reached through loopback.
"""

from __future__ import annotations

import errno
import socket


class ListenError(OSError):
    """The address cannot be listened on; the message says why in a person's words."""


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port``; ListenError naming the address and the cause."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does (TIME_WAIT, not a listener)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        why = {errno.EADDRINUSE: "the address is in use (another baton serve? choose another with BATON_PORT / "
                                 "--port)",
               errno.EACCES: "permission denied (ports below 1024 need privileges)",
               errno.EADDRNOTAVAIL: "no such address on this machine (BATON_HOST / --host)"}.get(
                   exc.errno or 0, exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    """The base URL clients on this host reach a server listening on ``host:port`` at."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
