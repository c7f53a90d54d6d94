"""Which nodes are alive, as their leases say: the orchestrator's reads of them, kept briefly.

A node counts as alive while its node lease is (``runlog.live_nodes``). The
orchestrator asks on every command that may touch a run another process
drives, so a read serves for ``LIVE_READ_S``; the heartbeat reads afresh and
tells which nodes stopped renewing since the last beat (their runs are then
this node's to recover).
"""

from __future__ import annotations

import time

from actors.runlog import live_nodes
from eventstore.leases import Leases

LIVE_READ_S = 1.0  # how long a read of the node leases serves the ownership checks of commands


class Liveness:
    """The live nodes seen from ``node``, read from ``leases`` at most ``LIVE_READ_S`` ago unless asked fresh."""

    def __init__(self, leases: Leases, node: str) -> None:
        self._leases = leases
        self._node = node
        self._read: tuple[float, set[str]] | None = None  # (monotonic time, nodes) of the last read
        self._seen: set[str] = set()  # nodes alive at the last heartbeat

    def live(self, fresh: bool = False) -> set[str]:
        """The nodes whose lease is alive, read at most LIVE_READ_S ago (``fresh``: read now).

        A burst of commands (approvals over HTTP) would otherwise read the
        lease table once each, on the orchestrator's one thread. A lease lives
        for ``lease_ttl_s`` (30 s): a node's liveness is already that coarse,
        and a run two nodes both think theirs is still guarded by the store's
        expected version.
        """
        now = time.monotonic()
        if not fresh and self._read is not None and now - self._read[0] < LIVE_READ_S:
            return self._read[1]
        live = live_nodes(self._leases.held())
        self._read = (now, live)
        return live

    def live_with(self, node: str) -> set[str]:
        """The live nodes, read afresh when ``node`` is not among the cached ones.

        The cache may predate a node that started a moment ago (a CLI process
        driving the run a command is for): taking its run over, or carrying
        its command out here, on a stale read would drive the run twice.
        """
        live = self.live()
        if node and node != self._node and node not in live:
            live = self.live(fresh=True)
        return live

    def live_from(self, held: dict[str, str] | None, node: str) -> set[str]:
        """The live nodes from leases just read (``held``, kept for the next checks), else as
        ``live_with(node)``."""
        if held is None:
            return self.live_with(node)
        live = live_nodes(held)
        self._read = (time.monotonic(), live)
        return live

    def gone(self) -> set[str]:
        """The nodes alive at the last call that no longer are (read now; this node never counts)."""
        live = self.live(fresh=True)
        gone = self._seen - live - {self._node}
        self._seen = live
        return gone
