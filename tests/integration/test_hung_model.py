"""A model that stops talking: the stall watch acts once per stall, and the read timeout is a setting.

The model is the fake OpenAI server's ``hang`` scenario (one delta, then
silence), reached over real HTTP; time is a ManualClock, so a 60 s stall takes
no time and no test sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from actors.agents import AgentRequest, AgentResult, CancelToken, Cancelled, OpenAIBackend
from actors.clock import ManualClock
from actors.config import EngineConfig
from actors.engine import Engine
from api.runtime import Runtime
from api.settings import Settings, from_env
from eventstore import open_store
from flows import Flow, agent
from flows.catalog import FlowRegistry
from flows.events import stream_of

STALL_S = 60.0
LONG_LEASE = 100_000.0  # the node lease's renewal timer stays out of the way of the stall timers


def flows() -> FlowRegistry:
    return FlowRegistry([
        Flow("think", steps=[agent("think", persona="investigator", prompt="Think about $input.question")]),
        Flow("think-notify", on_anomaly="notify",
             steps=[agent("think", persona="investigator", prompt="Think about $input.question")]),
    ])


@pytest.fixture
def store(sqlite_url):
    s = open_store(sqlite_url)
    yield s
    s.close()


class Deltas:
    """Counts the step_delta frames of the bus, per attempt, and lets a test wait for them."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self._cond = threading.Condition()

    def __call__(self, frame: dict) -> None:
        if frame.get("type") == "step_delta":
            with self._cond:
                self.seen[frame["attempt"]] = self.seen.get(frame["attempt"], 0) + 1
                self._cond.notify_all()

    def wait(self, attempt: int, count: int = 1, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.seen.get(attempt, 0) >= count, timeout), self.seen


def engine_with(store, backend, clock: ManualClock, deltas: Deltas) -> Engine:
    engine = Engine(store, flows(), EngineConfig(stall_s=STALL_S, lease_ttl_s=LONG_LEASE), backend=backend,
                    clock=clock)
    engine.bus.subscribe(deltas)
    return engine.start()


def on_a_hung_model(store, server) -> tuple[Engine, ManualClock, Deltas]:
    """A started engine whose agents call the fake server's ``hang`` model; its manual clock; its deltas."""
    clock, deltas = ManualClock(), Deltas()
    backend = OpenAIBackend(server.base_url, model="hang", read_timeout_s=60)
    return engine_with(store, backend, clock, deltas), clock, deltas


def events(store, run_id: str, type_name: str) -> list[dict]:
    return [r.data for r in store.read_stream(stream_of(run_id)) if r.type == type_name]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        done.wait(0.01)
    raise AssertionError("condition not met in time")


def stall_once_more(clock: ManualClock) -> None:
    """Advance past one more stall_s, then wait until the watch has looked and armed itself again."""
    armed = clock.pending()
    clock.advance(STALL_S + 1)
    wait_until(lambda: clock.pending() >= armed)


def test_a_hung_model_is_nudged_once_then_aborted_by_default(store, server):
    engine, clock, deltas = on_a_hung_model(store, server)
    try:
        run_id = engine.launch("think", "why is the sky blue?").run_id
        deltas.wait(attempt=1)  # "thinking", then silence
        clock.advance(STALL_S + 1)
        deltas.wait(attempt=2)  # the nudged attempt talks once, then hangs as well
        assert len(server.requests) == 2
        assert "produced no output for 61 s" in server.requests[1]["messages"][1]["content"]
        assert server.disconnected.is_set()  # the first call was hung up on, not left open
        clock.advance(STALL_S + 1)
        state = engine.wait(run_id)
    finally:
        engine.stop()
    assert state.status == "failed" and state.steps["think"].status == "cancelled"
    found = events(store, run_id, "AnomalyDetected")
    assert [(a["kind"], a["attempt"], a["action"]) for a in found] == [("stall", 1, "nudge"), ("stall", 2, "abort")]
    assert len(server.requests) == 2  # no third call


def test_an_explicit_notify_policy_raises_one_anomaly_per_stall(store, server):
    engine, clock, deltas = on_a_hung_model(store, server)
    try:
        run_id = engine.launch("think-notify", "why is the sky blue?").run_id
        deltas.wait(attempt=1)
        for _ in range(6):  # six minutes of one unbroken silence
            stall_once_more(clock)
        engine.cancel(run_id, reason="enough")  # queued behind every stall check above
        state = engine.wait(run_id)
    finally:
        engine.stop()
    assert state.status == "cancelled"
    found = events(store, run_id, "AnomalyDetected")
    assert [(a["kind"], a["action"]) for a in found] == [("stall", "notify")]
    assert len(server.requests) == 1  # notify never ends the attempt


class PacedBackend:
    """A backend whose deltas the test sends one by one (a model that pauses, then talks again)."""

    name = "paced"
    default_model = "paced-1"

    def __init__(self) -> None:
        self._say: list[str] = []
        self._cond = threading.Condition()
        self.done = False

    def say(self, text: str) -> None:
        with self._cond:
            self._say.append(text)
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def run(self, request: AgentRequest, on_delta, cancel: CancelToken) -> AgentResult:
        cancel.on_cancel(self.finish)
        said = []
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._say or self.done, 30)
                pending, self._say = self._say, []
                done = self.done
            for text in pending:
                said.append(text)
                on_delta(text)
            if done:
                break
        if cancel.cancelled:
            raise Cancelled("cancelled")
        return AgentResult("".join(said) + " E1 (prompt:1): done.", {}, self.default_model)

    def close(self) -> None:
        self.finish()


def test_a_new_stall_after_the_model_talks_again_is_a_new_anomaly(store):
    clock, deltas, backend = ManualClock(), Deltas(), PacedBackend()
    engine = engine_with(store, backend, clock, deltas)
    try:
        run_id = engine.launch("think-notify", "q").run_id
        backend.say("first words")
        deltas.wait(attempt=1, count=1)
        stall_once_more(clock)
        stall_once_more(clock)  # the same silence: still one anomaly
        backend.say("talking again")
        deltas.wait(attempt=1, count=2)
        stall_once_more(clock)
        stall_once_more(clock)  # a second silence: a second anomaly, once
        backend.finish()
        state = engine.wait(run_id)
    finally:
        engine.stop()
    assert state.status == "completed"
    assert [a["action"] for a in events(store, run_id, "AnomalyDetected")] == ["notify", "notify"]


def test_the_read_timeout_is_a_setting_and_a_silent_server_fails_the_step_with_it(sqlite_url, server):
    settings = from_env({"BATON_DB": sqlite_url, "BATON_AGENT": "openai", "BATON_OPENAI_BASE_URL": server.base_url,
                         "BATON_MODEL": "hang", "BATON_OPENAI_READ_TIMEOUT_S": "0.5"})
    assert settings.openai_read_timeout_s == 0.5
    with Runtime(settings) as rt:
        rt.registry.register(flows().get("think-notify"))
        rt.start(projector=False)
        assert rt.engine is not None
        run_id = rt.engine.launch("think-notify", "q").run_id
        state = rt.engine.wait(run_id)
        failed = events(rt.store, run_id, "StepFailed")
    assert state.status == "failed"
    assert "no data from the openai backend" in failed[0]["error"] and "for 0.5 s" in failed[0]["error"]


def test_a_read_timeout_that_cannot_work_is_refused_by_name():
    from api.settings import SettingsError

    with pytest.raises(SettingsError, match="BATON_OPENAI_READ_TIMEOUT_S / --openai-read-timeout-s"):
        from_env({"BATON_OPENAI_READ_TIMEOUT_S": "0"})
    assert Settings().openai_read_timeout_s == 120.0
