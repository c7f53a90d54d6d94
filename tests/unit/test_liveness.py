"""Which nodes are alive: one read of the leases serves a burst of commands, a node not yet seen is
looked up afresh, and the heartbeat names the nodes that stopped renewing."""

from __future__ import annotations

from typing import Any

from actors import liveness
from actors.liveness import Liveness
from actors.runlog import node_lease


class Leases:
    """The leases held now (``held`` as ``eventstore.leases.Leases.held``), and how often they were read."""

    def __init__(self, *nodes: str) -> None:
        self.nodes = list(nodes)
        self.reads = 0

    def held(self) -> dict[str, str]:
        self.reads += 1
        return {node_lease(n): f"host:{i}" for i, n in enumerate(self.nodes)} | {"other-lease": "host:9"}


def watch(leases: Leases) -> Liveness:
    return Liveness(leases, "me")  # type: ignore[arg-type]


def test_a_read_serves_the_commands_after_it_until_it_is_stale(monkeypatch: Any) -> None:
    now = [100.0]
    monkeypatch.setattr(liveness.time, "monotonic", lambda: now[0])
    leases = Leases("me", "a")
    live = watch(leases)
    assert live.live() == {"me", "a"}  # other leases are not nodes
    leases.nodes.append("b")
    now[0] += liveness.LIVE_READ_S / 2
    assert live.live() == {"me", "a"} and leases.reads == 1
    assert live.live(fresh=True) == {"me", "a", "b"} and leases.reads == 2
    now[0] += liveness.LIVE_READ_S
    leases.nodes.remove("a")
    assert live.live() == {"me", "b"} and leases.reads == 3


def test_a_node_the_last_read_did_not_know_is_looked_up_afresh() -> None:
    leases = Leases("me")
    live = watch(leases)
    assert live.live() == {"me"}
    leases.nodes.append("cli-1")  # a process that started a moment ago drives the run a command is for
    assert live.live_with("cli-1") == {"me", "cli-1"} and leases.reads == 2
    assert live.live_with("cli-1") == {"me", "cli-1"} and leases.reads == 2  # now known: the read serves
    assert live.live_with("me") == {"me", "cli-1"} and leases.reads == 2
    # leases just read with a run's stream are taken as they are, and serve the next checks
    assert live.live_from({node_lease("me"): "h", node_lease("x"): "h"}, "x") == {"me", "x"}
    assert live.live() == {"me", "x"} and leases.reads == 2


def test_the_heartbeat_names_the_nodes_that_stopped_renewing_never_itself() -> None:
    leases = Leases("me", "a", "b")
    live = watch(leases)
    assert live.gone() == set()  # the first beat knew nobody before
    leases.nodes = ["b", "c"]  # a and this node's own lease lapsed; c started
    assert live.gone() == {"a"}
    assert live.gone() == set()
    leases.nodes = []
    assert live.gone() == {"b", "c"}
