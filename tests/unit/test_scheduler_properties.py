"""Property tests of the scheduler: random launches, slot requests, releases, runs ending, pausing, resuming.

A small driver (``Driver``) plays the Orchestrator and the RunActors around a
``Scheduler`` with a random ``max_active_runs`` and ``agent_slots``: it tells
it what happened, acts on ``admit()`` and ``grant()`` exactly where the
Orchestrator does, and keeps its own record of every run (its phase, the
steps it holds and waits for), written from the scheduler's docstring, not
from its code. After every step it checks:

- slots: no step is granted that was not waiting, none is held twice, never
  more than ``agent_slots`` are held;
- room: a launch starts at once only with room and nobody queued; a queued run
  is admitted only with room (only an answered approval may go past
  ``max_active_runs``, by design); work never waits on room that exists;
- order: admission is FIFO, and a run queued at position p starts at the
  latest at the p-th admission after it was queued; every grant goes to the
  waiting run holding the fewest slots, ties to the least recently served;
- the bound on slots: a run that waits holding no slot is served before any
  other run is served twice, and no run that began waiting after it is
  served before it (at most one grant per run waiting ahead of it);
- the plan agrees with the state: everyone in progress or planned exactly
  once, positions 1..n, the reasons (capacity, blocked, approval) true.

At the end every run's steps finish (slots come back) until no request
waits, then every run in progress ends until no run is queued: every slot
request is granted and every queued run starts (no starvation).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from actors.scheduler import START_AT_ONCE, Grant, Phase, Scheduler, WaitReason, apply_delta

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Weighted toward what makes contention: many launches and slot requests, fewer runs ending.
OPS = ("launch",) * 3 + ("request",) * 4 + ("finish",) * 3 + ("withdraw", "end", "pause", "resume", "recover",
                                                               "command", "tasks")


@dataclass
class Waiter:
    """A run waiting for a slot while it holds none: who was waiting ahead of it, and who was served since."""

    ahead: frozenset[str]
    served: Counter[str] = field(default_factory=Counter)


@dataclass
class Driver:
    """The Orchestrator and the RunActors around one Scheduler, with an independent record of the runs."""

    max_active_runs: int
    agent_slots: int
    sched: Scheduler = field(init=False)
    phase: dict[str, Phase] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)
    held: dict[str, set[str]] = field(default_factory=dict)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    served_at: dict[str, int] = field(default_factory=dict)  # waiting run -> asked or last served (oracle)
    queued: dict[str, tuple[int, int]] = field(default_factory=dict)  # run -> (admissions then, position)
    admissions: int = 0
    waiters: dict[str, Waiter] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)  # runs admitted from the queue
    ever_queued: set[str] = field(default_factory=set)
    ended_queued: set[str] = field(default_factory=set)  # runs that ended (cancelled) while queued
    granted_steps: set[tuple[str, str]] = field(default_factory=set)
    asked_steps: set[tuple[str, str]] = field(default_factory=set)
    withdrawn_steps: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.sched = Scheduler(self.max_active_runs, self.agent_slots)
        self.replica = self.sched.plan()  # a consumer of plan_delta frames: the plan, then each delta applied
        self._ids = (f"r{i:03d}" for i in itertools.count())
        self._steps = (f"s{i}" for i in itertools.count())
        self._tick = itertools.count()
        self._checks = itertools.count()

    # -- the record ----------------------------------------------------------------------------

    def runs(self, *phases: Phase) -> list[str]:
        return [r for r, p in self.phase.items() if p in phases]

    def active(self) -> int:
        return len(self.runs(Phase.ACTIVE))

    def room(self) -> bool:
        return not self.max_active_runs or self.active() < self.max_active_runs

    def in_use(self) -> int:
        return sum(len(s) for s in self.held.values())

    def free(self) -> int | None:
        return None if not self.agent_slots else self.agent_slots - self.in_use()

    def _note_waiters(self) -> None:
        """Start watching each run that now waits holding no slot (and stop watching the others)."""
        for run_id in list(self.waiters):
            if not self.waiting.get(run_id) or self.held.get(run_id):
                del self.waiters[run_id]
        for run_id, steps in self.waiting.items():
            if steps and not self.held.get(run_id) and run_id not in self.waiters:
                self.waiters[run_id] = Waiter(frozenset(r for r in self.waiting if r != run_id))

    def _drop(self, run_id: str) -> None:
        self.phase.pop(run_id, None)
        if run_id in self.queue:
            self.queue.remove(run_id)
            self.ended_queued.add(run_id)
        self.held.pop(run_id, None)
        self.withdrawn_steps.update((run_id, s) for s in self.waiting.pop(run_id, []))  # ended with the run
        self.served_at.pop(run_id, None)
        self.waiters.pop(run_id, None)
        self.queued.pop(run_id, None)

    # -- what happens (the Orchestrator's handlers) ----------------------------------------------

    def launch(self) -> None:
        run_id = next(self._ids)
        queue_before, room_before = list(self.queue), self.room()
        admission = self.sched.launch(run_id, "flow", 0.0)
        if admission.start:
            assert room_before and not queue_before, "a launch started past the queue or past max_active_runs"
            assert (admission.reason, admission.position) == (START_AT_ONCE, 0)
            self.phase[run_id] = Phase.ACTIVE
        else:
            assert queue_before or not room_before, "a launch queued with room and nobody ahead"
            self._enqueue(run_id)
            assert (admission.reason, admission.position) == (WaitReason.CAPACITY, len(self.queue))

    def _enqueue(self, run_id: str) -> None:
        self.phase[run_id] = Phase.QUEUED
        self.queue.append(run_id)
        self.ever_queued.add(run_id)
        self.queued[run_id] = (self.admissions, len(self.queue))

    def recover(self, which: int) -> None:
        run_id = next(self._ids)
        phase = (Phase.QUEUED, Phase.ACTIVE, Phase.PAUSED)[which % 3]
        self.sched.add(run_id, "flow", 0.0, phase)
        if phase is Phase.QUEUED:
            self._enqueue(run_id)
        else:
            self.phase[run_id] = phase
        self.schedule()

    def command(self) -> None:
        """A command reaches a run this scheduler never launched nor recovered."""
        run_id = next(self._ids)
        self.sched.add(run_id, "", 0.0, Phase.UNPLANNED)
        self.phase[run_id] = Phase.UNPLANNED

    def request(self, pick: int, n: int, again: bool) -> None:
        runs = self.runs(Phase.ACTIVE, Phase.UNPLANNED)
        if not runs:
            return
        run_id = runs[pick % len(runs)]
        fresh = [next(self._steps) for _ in range(n)]
        asked = list(fresh)
        if again:  # asking again for steps held or waiting changes nothing
            asked += sorted(self.held.get(run_id, ())) + self.waiting.get(run_id, [])
        self.sched.request(run_id, asked)
        if fresh:
            if not self.waiting.get(run_id):
                self.served_at[run_id] = next(self._tick)
            self.waiting.setdefault(run_id, []).extend(fresh)
            self.asked_steps.update((run_id, s) for s in fresh)
        self._note_waiters()
        self.schedule()

    def finish(self, pick: int, n: int) -> None:
        runs = sorted(r for r, s in self.held.items() if s)
        if not runs:
            return
        run_id = runs[pick % len(runs)]
        done = sorted(self.held[run_id])[:n]
        self.sched.release(run_id, held=done)
        self.held[run_id].difference_update(done)
        self._note_waiters()
        self.schedule()

    def withdraw(self, pick: int, n: int) -> None:
        runs = sorted(r for r, s in self.waiting.items() if s)
        if not runs:
            return
        run_id = runs[pick % len(runs)]
        gone = self.waiting[run_id][:n]
        self.sched.release(run_id, withdrawn=gone)
        del self.waiting[run_id][:n]
        self.withdrawn_steps.update((run_id, s) for s in gone)
        if not self.waiting[run_id]:
            del self.waiting[run_id]
            self.served_at.pop(run_id, None)
        self._note_waiters()
        self.schedule()

    def end(self, pick: int) -> None:
        if not self.phase:
            return
        run_id = sorted(self.phase)[pick % len(self.phase)]
        self.sched.forget(run_id)
        self._drop(run_id)
        self._note_waiters()
        self.schedule()

    def pause(self, pick: int) -> None:
        """A run says it waits for a person (its RunActor says so only holding and asking for nothing)."""
        runs = [r for r in self.runs(Phase.ACTIVE, Phase.UNPLANNED) if not self.held.get(r) and not self.waiting.get(r)]
        if not runs:
            return
        run_id = runs[pick % len(runs)]
        self.sched.pause(run_id)
        self.phase[run_id] = Phase.PAUSED
        self.schedule()

    def tasks(self, pick: int, n: int) -> None:
        """A task run's actor tells its tasks (the plan entry carries them, deltas included)."""
        if not self.phase:
            return
        run_id = sorted(self.phase)[pick % len(self.phase)]
        self.sched.set_tasks(run_id, {"a": {"status": "inprogress" if n % 2 else "done", "reason": str(n)}})

    def resume(self, pick: int) -> None:
        runs = self.runs(Phase.PAUSED)
        if not runs:
            return
        run_id = runs[pick % len(runs)]
        self.sched.resume(run_id)
        self.phase[run_id] = Phase.ACTIVE  # never behind the queue, even past max_active_runs

    # -- what follows, checked -----------------------------------------------------------------

    def schedule(self) -> None:
        for run_id in self.sched.admit():
            assert self.queue and self.queue[0] == run_id, "admission is not first in, first out"
            assert self.room(), "a queued run was admitted past max_active_runs"
            then, position = self.queued.pop(run_id)
            self.admissions += 1
            assert self.admissions - then <= position, "a queued run waited more admissions than its position"
            self.queue.pop(0)
            self.phase[run_id] = Phase.ACTIVE
            self.started.add(run_id)
            event("a queued run was admitted")
        assert self.sched.grant() == self._expected_grants()
        self._note_waiters()

    def _expected_grants(self) -> list[Grant]:
        """Hand free slots out one by one, as the docstring says: fewest held, then least recently served."""
        grants: dict[str, list[str]] = {}
        free = self.free()
        while (free is None or free > 0) and any(self.waiting.values()):
            run_id = min((r for r, s in self.waiting.items() if s),
                         key=lambda r: (len(self.held.get(r, ())), self.served_at[r]))
            for other, waiter in self.waiters.items():
                if other != run_id:
                    assert run_id in waiter.ahead, f"{run_id} began waiting after {other} and was served first"
                    waiter.served[run_id] += 1
                    assert waiter.served[run_id] == 1, f"{run_id} was served twice while {other} held no slot"
                    event("another run was served while one waited holding no slot")
            self.waiters.pop(run_id, None)
            step = self.waiting[run_id].pop(0)
            assert (run_id, step) not in self.granted_steps, "a step was granted twice"
            self.granted_steps.add((run_id, step))
            self.held.setdefault(run_id, set()).add(step)
            self.served_at[run_id] = next(self._tick)
            if not self.waiting[run_id]:
                del self.waiting[run_id]
                del self.served_at[run_id]
            grants.setdefault(run_id, []).append(step)
            if free is not None:
                free -= 1
        return [Grant(r, tuple(s)) for r, s in grants.items()]

    def check(self) -> None:
        """The scheduler's state and plan agree with the record; no room or slot is left idle."""
        assert self.agent_slots == 0 or self.sched.slots_in_use() <= self.agent_slots
        assert self.sched.slots_in_use() == self.in_use()
        for run_id in self.phase:
            assert self.sched.phase(run_id) is self.phase[run_id]
            assert self.sched.held(run_id) == self.held.get(run_id, set())
            assert list(self.sched.waiting(run_id)) == self.waiting.get(run_id, [])
        # work never waits on room that exists
        assert not self.queue or not self.room(), "a run is queued while there is room"
        assert not any(self.waiting.values()) or self.free() == 0, "a step waits while a slot is free"
        self.check_plan()

    def check_plan(self) -> None:
        if next(self._checks) % 4 == 3:  # nobody listened meanwhile: no delta built; a consumer joins now
            self.sched.delta_unseen()
            assert self.sched.delta() is None
            self.replica = self.sched.plan()  # it reads the whole plan, then applies the deltas after it
        delta = self.sched.delta()
        if delta is not None:
            assert delta["seq"] == self.replica["seq"] + 1
            self.replica = apply_delta(self.replica, delta)
        assert self.sched.delta() is None  # nothing changed since
        plan = self.sched.plan()
        assert self.replica == plan, "the deltas applied in order do not give the plan"
        assert (plan["max_active_runs"], plan["agent_slots"], plan["slots_in_use"]) == (
            self.max_active_runs, self.agent_slots, self.in_use())
        assert plan["new_queued"] == []

        def blocked(r: str) -> bool:
            return not self.held.get(r) and bool(self.waiting.get(r))

        active = self.runs(Phase.ACTIVE)
        assert [r["run_id"] for r in plan["in_progress"]] == sorted(r for r in active if not blocked(r))
        for row in plan["in_progress"]:
            assert row["slots_held"] == len(self.held.get(row["run_id"], ()))
            assert row["steps_waiting_for_slot"] == len(self.waiting.get(row["run_id"], ()))
        planned = plan["planned_queued"]
        assert [row["position"] for row in planned] == list(range(1, len(planned) + 1))
        reasons = [(row["run_id"], row["reason"]) for row in planned]
        expected = [(r, "capacity") for r in self.queue]
        expected += [(r, "blocked") for r in sorted((r for r in active if blocked(r)), key=self.served_at.__getitem__)]
        expected += [(r, "approval") for r in self.runs(Phase.PAUSED)]
        assert reasons == expected
        for row in planned:
            assert row["steps_waiting_for_slot"] == len(self.waiting.get(row["run_id"], ()))
            if row["reason"] == "capacity":
                assert row["detail"] == f"{len(active)} of {self.max_active_runs} runs in progress"
                assert not self.room()  # capacity is the true reason
            event(f"the plan had a run waiting for {row['reason']}")
            if row["reason"] == "blocked":
                assert f"{self.in_use()} of {self.agent_slots} in use" in row["detail"]
                assert self.free() == 0  # no slot is free: blocked is the true reason
        shown = [r["run_id"] for r in plan["in_progress"]] + [r for r, _ in reasons]
        assert sorted(shown) == sorted(self.runs(Phase.ACTIVE, Phase.QUEUED, Phase.PAUSED))

    # -- the end: everything that waits is served ---------------------------------------------

    def drain(self) -> None:
        """Steps finish until no request waits; then runs in progress end until none is queued."""
        for _ in range(len(self.asked_steps) + 1):
            if not any(self.waiting.values()):
                break
            for run_id in sorted(r for r, s in self.held.items() if s):
                self.finish(0, len(self.held[run_id]))
            self.check()
        assert not any(self.waiting.values()), "a slot request was never granted while slots came back"
        assert self.asked_steps - self.withdrawn_steps <= self.granted_steps
        for _ in range(len(self.phase) + 1):
            if not self.queue:
                break
            for run_id in sorted(self.runs(Phase.ACTIVE)):
                self.sched.forget(run_id)
                self._drop(run_id)
                self.schedule()
                self.check()
        assert not self.queue, "a queued run never started while runs ended"
        assert self.ever_queued == self.started | self.ended_queued


op = st.tuples(st.sampled_from(OPS), st.integers(0, 50), st.integers(0, 4), st.booleans())


@SETTINGS
@given(max_active_runs=st.integers(0, 3), agent_slots=st.integers(0, 3), ops=st.lists(op, min_size=10, max_size=120))
def test_scheduler_properties(max_active_runs: int, agent_slots: int,
                              ops: list[tuple[str, int, int, bool]]) -> None:
    d = Driver(max_active_runs, agent_slots)
    for kind, pick, n, again in ops:
        if kind == "launch":
            d.launch()
        elif kind == "request":
            d.request(pick, n, again)
        elif kind == "finish":
            d.finish(pick, n + 1)
        elif kind == "withdraw":
            d.withdraw(pick, n + 1)
        elif kind == "end":
            d.end(pick)
        elif kind == "pause":
            d.pause(pick)
        elif kind == "resume":
            d.resume(pick)
        elif kind == "recover":
            d.recover(pick)
        elif kind == "tasks":
            d.tasks(pick, n)
        else:
            d.command()
        d.check()
    d.drain()


# -- examples a person can read -------------------------------------------------------------------


def test_a_task_runs_tasks_ride_its_plan_entry_and_only_a_change_makes_a_delta() -> None:
    s = Scheduler(max_active_runs=0, agent_slots=2)
    s.launch("T", "tasks", 0.0)
    s.launch("F", "flow", 0.0)
    s.delta()
    s.set_tasks("T", {"a": {"status": "inprogress", "phase": "coder"}})
    delta = s.delta()
    assert delta is not None and [r["run_id"] for r in delta["in_progress"]] == ["T"]  # the flow run is not sent
    assert delta["in_progress"][0]["tasks"] == {"a": {"status": "inprogress", "phase": "coder"}}
    s.set_tasks("T", {"a": {"status": "inprogress", "phase": "coder"}})
    assert s.delta() is None  # the same view again: nothing to send
    s.pause("T")
    [entry] = s.plan()["planned_queued"]
    assert entry["reason"] == "approval" and entry["tasks"]["a"]["status"] == "inprogress"
    assert "tasks" not in s.plan()["in_progress"][0]  # F
    s.forget("T")
    s.set_tasks("T", {"a": {"status": "done"}})  # ended: ignored
    assert "T" not in s


def test_a_run_holding_no_slot_is_served_before_a_wide_run_is_served_again() -> None:
    s = Scheduler(max_active_runs=0, agent_slots=2)
    s.launch("wide", "fan", 0.0)
    s.request("wide", [f"w{i}" for i in range(6)])
    assert s.grant() == [Grant("wide", ("w0", "w1"))]
    s.launch("late", "single", 1.0)
    s.request("late", ["work"])
    assert s.grant() == []  # no slot is free
    assert [(r["run_id"], r["reason"]) for r in s.plan()["planned_queued"]] == [("late", "blocked")]
    s.release("wide", held=["w0"])
    assert s.grant() == [Grant("late", ("work",))]


def test_queued_runs_start_first_in_first_out_and_an_approval_does_not_wait() -> None:
    s = Scheduler(max_active_runs=1, agent_slots=4)
    assert s.launch("a", "f", 0.0).start
    b, c = s.launch("b", "f", 1.0), s.launch("c", "f", 2.0)
    assert (b.start, b.reason, b.position, c.position) == (False, "capacity", 1, 2)
    s.pause("a")
    assert s.admit() == ["b"]
    s.resume("a")  # a person answered: in progress again at once, past the limit
    assert s.phase("a") is Phase.ACTIVE and s.admit() == []
    plan = s.plan()
    assert [r["run_id"] for r in plan["in_progress"]] == ["a", "b"]
    assert [(r["run_id"], r["reason"], r["detail"]) for r in plan["planned_queued"]] == [
        ("c", "capacity", "2 of 1 runs in progress")]
    s.forget("a")
    assert s.admit() == []  # b still holds the one place
    s.forget("b")
    assert s.admit() == ["c"]


@pytest.mark.parametrize("limit", [0, 3])
def test_a_launch_never_passes_a_queued_run(limit: int) -> None:
    s = Scheduler(max_active_runs=limit, agent_slots=0)
    s.add("recovered", "f", 0.0, Phase.QUEUED)  # found queued at start, not admitted yet
    assert not s.launch("new", "f", 1.0).start
    assert s.admit() == ["recovered", "new"]
