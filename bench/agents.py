"""Agent tool-loop benchmark: the loop's own overhead per call, and search against git grep.

    .venv/bin/python bench/agents.py [--runs N] [--files N] [--rounds N] [--quick]

(a) ``loop_overhead``: baton's own time per tool call between the model's
    last chunk and the next request, excluding the tool's work. A scripted
    OpenAI-compatible server on loopback (tests/integration/scripted_llm.py)
    streams turns of one ``read_file`` call each (vLLM style, arguments in
    pieces), then a text answer; the loop runs against a real git
    repository. Per call: ``t(next request's headers start) - t(turn
    returned) - t(inside the tool)``. The observer appends a
    ``ToolCalled`` + ``ToolResult`` pair (the events of flows/events.py) to
    a real SQLite store per call, directly (the engine's path is (a')),
    so the figure includes that commit (``append_pair_*`` is its share).
    Baselines, same run, alternating: the same loop with an observer that
    records nothing (HTTP and loop only), and the disk's raw fsync of 2 KiB
    (what any durable append pays on this disk).
(a') ``engine_loop_overhead``: the same figure through the real engine: a
    run of a one-step flow (``tools=True``) on a registered project, the
    ``openai`` backend's tool loop, each turn's calls recorded by the
    RunActor (``actors/tool_record.py``: a message, the group-commit writer,
    the reply) before the next request. ``--only engine`` runs it alone.
(b) ``search_vs_git_grep``: the ``search`` tool over a generated repository
    of ``--files`` files (default 50,000, committed) against ``git grep -n
    -P`` on the same pattern, in alternating rounds; both must report the
    same number of matching lines. Target: search within 2x of git grep.

Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(_HERE.parent)]

from actors.agents.base import CancelToken  # noqa: E402
from actors.agents.chat_turn import ChatTurns  # noqa: E402
from actors.agents.toolcalls import ModelTurn  # noqa: E402
from actors.agents.toolloop import CallRecord, LoopLimits, LoopObserver, TurnRequest, run_tool_loop  # noqa: E402
from actors.workspace.results import ToolResult  # noqa: E402
from actors.workspace.tools import Caps, Toolbox  # noqa: E402
from eventstore import EventStore, NewEvent, open_store  # noqa: E402
from tests.integration.scripted_llm import Call, ScriptedLLM, TextTurn, ToolTurn  # noqa: E402

TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0
TARGET_SEARCH_RATIO = 2.0
CALLS_PER_RUN = 25
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


# -- (a) the loop's overhead -------------------------------------------------------


class Clocked:
    """Wraps the turn function and the toolbox to timestamp what the overhead excludes."""

    def __init__(self, tools: Toolbox) -> None:
        self.turns: ChatTurns | None = None
        self._tools = tools
        self.schemas = tools.schemas
        self.returned: list[float] = []  # when each turn handed its answer to the loop
        self.requested: list[float] = []  # when each request's headers started out
        self.tool_s: list[float] = []  # time inside the tools, per turn

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "http11.send_request_headers.started":
            self.requested.append(time.perf_counter())

    def turn(self, request: TurnRequest, on_delta: Any, cancel: CancelToken) -> ModelTurn:
        self.tool_s.append(0.0)
        assert self.turns is not None
        answer = self.turns(request, on_delta, cancel)
        self.returned.append(time.perf_counter())
        return answer

    def call(self, name: str, arguments: str) -> ToolResult:
        t0 = time.perf_counter()
        try:
            return self._tools.call(name, arguments)
        finally:
            self.tool_s[-1] += time.perf_counter() - t0

    def overheads_ms(self) -> list[float]:
        """Per tool turn (one call each): next request - turn returned - tool time."""
        return [(self.requested[i + 1] - self.returned[i] - self.tool_s[i]) * 1000
                for i in range(len(self.returned) - 1)]


class StoreObserver(LoopObserver):
    """Appends ToolCalled + ToolResult of each call to the run's stream itself (the engine goes through its RunActor)."""

    def __init__(self, store: EventStore, stream: str) -> None:
        self.store = store
        self.stream = stream
        self.version = 0
        self.append_ms: list[float] = []

    def tool_result(self, call: CallRecord, result: ToolResult) -> None:
        t0 = time.perf_counter()
        self._append(call, result)
        self.append_ms.append((time.perf_counter() - t0) * 1000)

    def _append(self, call: CallRecord, result: ToolResult) -> None:
        called = {"step_id": "investigate", "attempt": 1, "call_id": call.call_id, "tool": call.tool,
                  "arguments": call.arguments, "turn": call.turn, "seq": call.seq}
        answered = {"step_id": "investigate", "attempt": 1, "call_id": call.call_id,
                    "ok": result.ok, "outcome": result.outcome.value, "error": result.error,
                    "result": result.text, "bytes": result.bytes, "sha256": result.sha256,
                    "truncated": result.truncated}
        meta = {"schema_version": 1, "node": "bench"}
        self.store.append(self.stream, [NewEvent("ToolCalled", called, meta), NewEvent("ToolResult", answered, meta)],
                          expected_version=self.version)
        self.version += 2


def loop_round(server: ScriptedLLM, repo: Path, store: EventStore | None, n: int) -> tuple[list[float], list[float]]:
    """One tool loop of CALLS_PER_RUN calls: (overhead per call, store append per call) in ms."""
    model = f"bench-{n}-{'store' if store else 'none'}"
    call = Call("read_file", {"path": "src/app.py", "start_line": 1, "end_line": 40})
    server.script(model, [ToolTurn([call], pieces=6) for _ in range(CALLS_PER_RUN)] + [TextTurn("done")])
    clocked = Clocked(Toolbox(repo))
    turns = ChatTurns(server.base_url, read_timeout_s=30, trace=clocked.trace)
    clocked.turns = turns
    observer: LoopObserver = StoreObserver(store, f"run-bench-{n}") if store else LoopObserver()
    try:
        result = run_tool_loop(system="You are an investigator.", prompt="Read it.", model=model, tools=clocked,
                               turn=clocked.turn, on_delta=lambda _: None, cancel=CancelToken(),
                               observer=observer, limits=LoopLimits(max_turns=CALLS_PER_RUN + 1))
    finally:
        turns.close()
    assert result.output == "done" and result.tool_calls == CALLS_PER_RUN, result
    return clocked.overheads_ms(), getattr(observer, "append_ms", [])


class EngineClock:
    """Stands in for the openai backend's turns and the toolbox in a real engine, timestamping as Clocked."""

    def __init__(self, turns: ChatTurns) -> None:
        self.turns = turns
        self.returned: list[float] = []
        self.requested: list[float] = []
        self.tool_s: list[float] = []

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "http11.send_request_headers.started":
            self.requested.append(time.perf_counter())

    def __call__(self, request: TurnRequest, on_delta: Any, cancel: CancelToken) -> ModelTurn:
        self.tool_s.append(0.0)
        answer = self.turns(request, on_delta, cancel)
        self.returned.append(time.perf_counter())
        return answer

    def close(self) -> None:
        self.turns.close()

    def overheads_ms(self) -> list[float]:
        return [(self.requested[i + 1] - self.returned[i] - self.tool_s[i]) * 1000
                for i in range(len(self.returned) - 1)]


def bench_engine(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    """The loop's overhead per call inside the engine: the RunActor appends each turn's calls first."""
    import actors.step as step_module
    from actors.agents import OpenAIBackend
    from actors.config import EngineConfig
    from actors.engine import Engine
    from flows import Flow, agent
    from flows.catalog import FlowRegistry

    repo = work / "engine-repo"
    make_small_repo(repo)
    registry = FlowRegistry([Flow("bench-tools", steps=[
        agent("read", persona="codebase-explorer", prompt="Read it: $input.question", tools=True,
              max_turns=CALLS_PER_RUN + 1, max_tool_calls=CALLS_PER_RUN + 1)])])
    server = ScriptedLLM().start()
    store = open_store(f"sqlite:///{work / 'engine.db'}")
    backend = OpenAIBackend(server.base_url, model="unused", read_timeout_s=30)
    clock = EngineClock(ChatTurns(server.base_url, read_timeout_s=30))
    clock.turns = ChatTurns(server.base_url, read_timeout_s=30, trace=clock.trace)
    backend._turns = clock  # type: ignore[assignment]
    real_toolbox = step_module.Toolbox

    class TimedToolbox(real_toolbox):  # type: ignore[valid-type,misc]
        def call(self, name: str, arguments: Any) -> ToolResult:
            t0 = time.perf_counter()
            try:
                return super().call(name, arguments)
            finally:
                clock.tool_s[-1] += time.perf_counter() - t0

    step_module.Toolbox = TimedToolbox  # type: ignore[misc]
    engine = Engine(store, registry, EngineConfig(backend="openai", agent_slots=1), backend=backend).start()
    engine.projects.add("bench", repo, by="bench")
    overheads: list[float] = []
    call = Call("read_file", {"path": "src/app.py", "start_line": 1, "end_line": 40})
    try:
        for n in range(-1, args.runs):  # -1: warm-up
            model = f"engine-{n}"
            server.script(model, [ToolTurn([call], pieces=6) for _ in range(CALLS_PER_RUN)] + [TextTurn("done")])
            clock.returned, clock.requested, clock.tool_s = [], [], []
            run_id = engine.launch("bench-tools", "bench", model=model, project_id="bench").run_id
            state = engine.wait(run_id, timeout=120)
            assert state.status == "completed", state.steps["read"].error
            if n >= 0:
                overheads += clock.overheads_ms()
    finally:
        engine.stop()
        step_module.Toolbox = real_toolbox  # type: ignore[misc]
        server.stop()
        store.close()
    p50, p99 = percentile(overheads, 0.5), percentile(overheads, 0.99)
    yield {"bench": "agents", "figure": "engine_loop_overhead_per_call_ms", "calls": len(overheads),
           "p50": round(p50, 3), "p99": round(p99, 3), "max": round(max(overheads), 3),
           "target_p50": TARGET_P50_MS, "target_p99": TARGET_P99_MS,
           "ok": p50 < TARGET_P50_MS and p99 < TARGET_P99_MS}


def fsync_ms(path: Path, count: int) -> list[float]:
    """The disk's own price of a commit: write 2 KiB and fsync, ``count`` times."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 2048)
            t0 = time.perf_counter()
            os.fsync(fd)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_loop(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    repo = work / "small-repo"
    make_small_repo(repo)
    store = open_store(f"sqlite:///{work / 'bench.db'}")
    server = ScriptedLLM().start()
    try:
        loop_round(server, repo, store, -1)  # warm-up: imports, first connections, the store's tables
        with_store: list[float] = []
        appends: list[float] = []
        without: list[float] = []
        fsyncs: list[float] = []
        for n in range(args.runs):  # alternating, so drift hits every side alike
            overheads, appended = loop_round(server, repo, store, n)
            with_store += overheads
            appends += appended
            without += loop_round(server, repo, None, n)[0]
            fsyncs += fsync_ms(work / "fsync.probe", CALLS_PER_RUN)
    finally:
        server.stop()
        store.close()
    p50, p99 = percentile(with_store, 0.5), percentile(with_store, 0.99)
    yield {"bench": "agents", "figure": "loop_overhead_per_call_ms", "calls": len(with_store),
           "p50": round(p50, 3), "p99": round(p99, 3), "max": round(max(with_store), 3),
           "append_pair_p50": round(percentile(appends, 0.5), 3),
           "append_pair_p99": round(percentile(appends, 0.99), 3),
           "baseline_no_store_p50": round(percentile(without, 0.5), 3),
           "baseline_no_store_p99": round(percentile(without, 0.99), 3),
           "disk_fsync_p50": round(percentile(fsyncs, 0.5), 3), "disk_fsync_p99": round(percentile(fsyncs, 0.99), 3),
           "target_p50": TARGET_P50_MS, "target_p99": TARGET_P99_MS,
           "ok": p50 < TARGET_P50_MS and p99 < TARGET_P99_MS}


def make_small_repo(root: Path) -> None:
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("".join(f"line_{i} = {i}  # some code here\n" for i in range(200)))
    git_init_commit(root)


# -- (b) search against git grep -------------------------------------------------------

WORDS = "alpha beta gamma delta event stream store append read write flow step run actor state".split()
PATTERNS = [
    ("selective", r"def handle_\w+\("),  # the target: an identifier search, as models do
    ("alternation", r"handle_request_1\d+|ABC_00\d"),  # informational: one literal per branch
    ("no_literal", r"[A-Z]{3}_\d{3}"),  # informational: nothing to prefilter on
]


def make_big_repo(root: Path, files: int) -> None:
    """``files`` Python-looking files of 30 lines in 100-file directories, committed."""
    rnd = random.Random(7)
    for i in range(files):
        d = root / f"pkg{i // 1000:03d}" / f"mod{(i // 100) % 10}"
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for j in range(30):
            a, b, c, e = rnd.sample(WORDS, 4)
            lines.append(f"def {a}_{b}_{j}(x, y):  # {c} {e} {i}")
        if i % 97 == 0:
            lines.append(f"def handle_request_{i}(req): return 'ABC_{i % 1000:03d}'")
        (d / f"f{i}.py").write_text("\n".join(lines) + "\n")
    git_init_commit(root)


def git_init_commit(root: Path) -> None:
    """Commit everything under ``root`` in a new repository (no background gc racing the cleanup)."""
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for args in (["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", "-c", "gc.auto=0", "-c", "maintenance.auto=false", *args], cwd=root, check=True,
                       env=GIT_ENV)


def bench_search(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Any]]:
    root = work / "big-repo"
    t0 = time.perf_counter()
    make_big_repo(root, args.files)
    built_s = time.perf_counter() - t0
    tools = Toolbox(root, Caps(max_matches=1_000_000, max_bytes=1 << 30))
    for name, pattern in PATTERNS:
        ours: list[float] = []
        grep: list[float] = []
        ratios: list[float] = []
        lines_ours = lines_grep = -1
        for r in range(args.rounds):
            order = ("ours", "grep") if r % 2 == 0 else ("grep", "ours")
            took: dict[str, float] = {}
            for side in order:
                t = time.perf_counter()
                if side == "ours":
                    result = tools.call("search", json.dumps({"pattern": pattern}))
                    took[side] = time.perf_counter() - t
                    lines_ours = sum(1 for line in result.text.split("\n") if line.startswith("pkg"))
                else:
                    out = subprocess.run(["git", "grep", "-n", "-P", pattern], cwd=root, capture_output=True)
                    took[side] = time.perf_counter() - t
                    lines_grep = out.stdout.count(b"\n")
            ours.append(took["ours"])
            grep.append(took["grep"])
            ratios.append(took["ours"] / took["grep"])
        ratio = statistics.median(ratios)
        yield {"bench": "agents", "figure": f"search_vs_git_grep_{name}", "pattern": pattern,
               "files": args.files, "matches": lines_ours, "same_results": lines_ours == lines_grep,
               "search_s": round(statistics.median(ours), 4), "git_grep_s": round(statistics.median(grep), 4),
               "ratio": round(ratio, 2), "rounds": args.rounds,
               "target_ratio": TARGET_SEARCH_RATIO if name == "selective" else None,
               "ok": (ratio <= TARGET_SEARCH_RATIO and lines_ours == lines_grep) if name == "selective"
               else lines_ours == lines_grep,
               "repo_build_s": round(built_s, 1)}


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="baton-bench-agents-", ignore_cleanup_errors=True) as d:
        yield Path(d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help=f"tool loops of {CALLS_PER_RUN} calls per side")
    parser.add_argument("--files", type=int, default=50_000, help="files in the search repository")
    parser.add_argument("--rounds", type=int, default=7, help="alternating search rounds per pattern")
    parser.add_argument("--quick", action="store_true", help="4 loops, 5,000 files, 3 rounds")
    parser.add_argument("--only", choices=("loop", "engine", "search"), help="run one part")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.files, args.rounds = 4, 5_000, 3
    print(json.dumps({"bench": "agents", "python": platform.python_version(), "cpus": os.cpu_count(),
                      "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
                      "load": os.getloadavg()[0]}), flush=True)
    with scratch() as work:
        if args.only in (None, "loop"):
            for line in bench_loop(args, work):
                print(json.dumps(line), flush=True)
        if args.only in (None, "engine"):
            for line in bench_engine(args, work):
                print(json.dumps(line), flush=True)
        if args.only in (None, "search"):
            for line in bench_search(args, work):
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
