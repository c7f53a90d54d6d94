"""The LangGraph side of ``bench/engine.py``: the same W1-W4 shapes as StateGraphs.

LangGraph is an optional ``bench`` extra (``pip install -e .[bench]``);
``available()`` says whether it can be imported, and why not.

The graphs mirror baton's flows node for node, with no-op nodes. The state has
one field, ``steps``, with an ``operator.add`` reducer: every node returns
``{"steps": 1}``, so the parallel writes of a fan-out merge (the idiomatic
LangGraph 1.x fan-in), the checkpointed state stays the same size whatever the
step, and the final value proves every node ran exactly once.

Concurrency: one ``graph.invoke`` per thread id on a ``ThreadPoolExecutor``
with one worker per run, so every run is in flight at once, as on baton. It
beat ``graph.batch`` (whose default pool has ``min(32, cpus + 4)`` workers)
on this machine, so it is the stronger baseline. Checkpointing uses
LangGraph's default durability (``"async"``: a superstep's checkpoint is
written while the next superstep runs).

The sequential shape runs one ``invoke`` after another, nodes returning a
200-character output as baton's steps do: a chain node writes it to a plain
``last`` channel (overwritten, so the checkpoint stays small: the stronger
baseline), a fan-out's branches append theirs to an ``outputs`` list with
``operator.add`` (the documented fan-in; the join's checkpoint then holds
the 50 outputs, as a baton run's state does).

W4: ``work -> gate -> finish`` where ``gate`` calls ``interrupt()``; the run
is left at the interrupt here and resumed with ``Command(resume=...)`` by
``bench/engine_resume.py`` in a fresh process.
"""

from __future__ import annotations

import operator
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Annotated, Any, TypedDict


def available() -> tuple[bool, str]:
    """(True, version) when langgraph and both checkpointers import, else (False, why)."""
    try:
        import importlib.metadata as md

        import langgraph.checkpoint.postgres  # noqa: F401
        import langgraph.checkpoint.sqlite  # noqa: F401
        import langgraph.graph  # noqa: F401

        return True, md.version("langgraph")
    except ImportError as exc:
        return False, f"{exc} (install the optional extra: pip install -e '.[bench]')"


OUTPUT = ("baton " * 40)[:200]  # the same 200-character output as bench/engine_flows.py


class Counted(TypedDict, total=False):
    """The whole graph state: how many nodes ran (parallel writes add up), and outputs."""

    steps: Annotated[int, operator.add]
    last: str
    outputs: Annotated[list[str], operator.add]


def one_step(state: Counted) -> dict[str, int]:
    """A node that does no work."""
    return {"steps": 1}


def last_output(state: Counted) -> dict[str, Any]:
    """A node that does no work and writes a 200-character output (overwriting the last)."""
    return {"steps": 1, "last": OUTPUT}


def listed_output(state: Counted) -> dict[str, Any]:
    """A node that does no work and appends a 200-character output (fan-in)."""
    return {"steps": 1, "outputs": [OUTPUT]}


def gate(state: Counted) -> dict[str, Any]:
    """A node that waits for a person: ``interrupt()`` until resumed."""
    from langgraph.types import interrupt

    answer = interrupt("Go on?")
    return {"steps": 1, "last": str(answer)}


def half_second(state: Counted) -> dict[str, int]:
    """A node that sleeps 0.5 s (W3)."""
    time.sleep(0.5)
    return {"steps": 1}


def chain_graph(length: int, node: Callable[[Counted], dict[str, Any]] = one_step) -> Any:
    """W1: START -> s0 -> s1 -> ... -> s{length-1} -> END."""
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(Counted)
    previous = START
    for i in range(length):
        g.add_node(f"s{i}", node)
        g.add_edge(previous, f"s{i}")
        previous = f"s{i}"
    g.add_edge(previous, END)
    return g


def gated_graph() -> Any:
    """W4: START -> work -> gate (interrupt) -> finish -> END."""
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(Counted)
    g.add_node("work", last_output)
    g.add_node("gate", gate)
    g.add_node("finish", last_output)
    g.add_edge(START, "work")
    g.add_edge("work", "gate")
    g.add_edge("gate", "finish")
    g.add_edge("finish", END)
    return g


def fan_graph(width: int, node: Callable[[Counted], dict[str, Any]] = one_step, *, head: bool = True) -> Any:
    """W2 (head -> width parallel -> join) and W3 (width parallel -> join).

    The join has every branch as predecessor (``add_edge([...], "join")``), so
    it runs once, after all of them, in the next superstep.
    """
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(Counted)
    source = START
    if head:
        g.add_node("head", one_step if node is half_second else node)
        g.add_edge(START, "head")
        source = "head"
    branches = [f"p{i}" for i in range(width)]
    for name in branches:
        g.add_node(name, node)
        g.add_edge(source, name)
    g.add_node("join", one_step if node is half_second else node)
    g.add_edge(branches, "join")
    g.add_edge("join", END)
    return g


class LangGraphSide:
    """Compiled graphs over one checkpointer, and the runs that drive them."""

    def __init__(self, saver: Any, durability: str | None = None) -> None:
        """``durability``: LangGraph's own (``"sync"``: each superstep's checkpoint is written before the
        next one starts, as baton records each step before the next; ``None``: LangGraph's default,
        ``"async"``, written while the next superstep runs)."""
        self.saver = saver
        self.durability = durability
        self.w1 = chain_graph(20).compile(checkpointer=saver)
        self.w2 = fan_graph(50).compile(checkpointer=saver)
        self.w3 = fan_graph(3, half_second, head=False).compile(checkpointer=saver)
        self.w1_out = chain_graph(20, last_output).compile(checkpointer=saver)
        self.w2_out = fan_graph(50, listed_output).compile(checkpointer=saver)
        self.gated = gated_graph().compile(checkpointer=saver)

    def run_sequential(self, graph: Any, runs: int, steps_each: int) -> float:
        """``runs`` fresh threads, one invoke after another; wall seconds for all of them."""
        t0 = time.perf_counter()
        for _ in range(runs):
            final = graph.invoke({"steps": 0}, {"configurable": {"thread_id": str(uuid.uuid4())}},
                                 durability=self.durability)
            if final["steps"] != steps_each:
                raise AssertionError(f"LangGraph ran {final['steps']} nodes, not {steps_each}")
        return time.perf_counter() - t0

    def pause_gated(self) -> str:
        """A thread of the gated graph left at its interrupt; its thread id."""
        thread_id = str(uuid.uuid4())
        result = self.gated.invoke({"steps": 0}, {"configurable": {"thread_id": thread_id}})
        if "__interrupt__" not in result:
            raise AssertionError(f"LangGraph's gated graph did not stop at its interrupt: {result!r}")
        return thread_id

    def run_many(self, graph: Any, runs: int, steps_each: int) -> float:
        """Invoke ``runs`` fresh threads at once; wall seconds from the first start to the last end."""
        configs = [{"configurable": {"thread_id": str(uuid.uuid4())}} for _ in range(runs)]
        with ThreadPoolExecutor(max_workers=runs) as pool:
            t0 = time.perf_counter()
            finals = list(pool.map(lambda config: graph.invoke({"steps": 0}, config, durability=self.durability),
                                   configs))
            wall = time.perf_counter() - t0
        wrong = [f["steps"] for f in finals if f["steps"] != steps_each]
        if wrong:
            raise AssertionError(f"LangGraph ran {wrong[0]} nodes, not {steps_each}")
        return wall

    def run_one(self, graph: Any, steps_each: int) -> float:
        """One invoke; its wall seconds."""
        config = {"configurable": {"thread_id": str(uuid.uuid4())}}
        t0 = time.perf_counter()
        final = graph.invoke({"steps": 0}, config, durability=self.durability)
        wall = time.perf_counter() - t0
        if final["steps"] != steps_each:
            raise AssertionError(f"LangGraph ran {final['steps']} nodes, not {steps_each}")
        return wall


@contextmanager
def sqlite_saver(path: str) -> Iterator[Any]:
    """A SqliteSaver on a file, shareable across threads (it serialises on its own lock)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(path, check_same_thread=False)
    try:
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()


@contextmanager
def postgres_saver(conninfo: str, max_size: int) -> Iterator[Any]:
    """A PostgresSaver on a psycopg pool, with the connection settings LangGraph documents."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    with ConnectionPool(conninfo, min_size=1, max_size=max_size, kwargs=kwargs, open=True) as pool:
        saver = PostgresSaver(pool)
        saver.setup()
        yield saver
