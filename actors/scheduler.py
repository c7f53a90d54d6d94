"""The scheduler: which run is in progress, which waits and why, who gets the next agent slot.

A plain object the Orchestrator owns (DESIGN §5): no actor, no I/O, no thread,
no clock. The Orchestrator tells it what happened (a launch, a slot request,
a release, a run pausing, resuming or ending) and asks it what follows:
``admit()`` names the queued runs that start now, ``grant()`` the slots handed
out now, ``plan()`` describes the whole. The Orchestrator then acts (tells the
RunActors). Keeping the rules here lets them be property-tested on their own
(tests/unit/test_scheduler_properties.py) the way ``decide`` is.

The rules, each kept in one place below:

- Runs: ``max_active_runs`` (0 = no limit) counts runs in progress. A launch
  starts at once when there is room and nobody is queued; otherwise it joins
  the back of the queue. Room made by a run ending or pausing goes to the
  front of the queue (FIFO): a queued run at position p starts at the p-th
  admission after it was queued at the latest (sooner if a run ahead of it is
  cancelled), and no run launched after it starts first.
  A run whose approval is answered is in progress again at once, whatever the
  queue (a person is waiting on it, and it was admitted before).
- Agent slots: ``agent_slots`` (0 = no limit) counts model calls at once. A
  free slot goes to the waiting run that holds the fewest slots, ties going to
  the run served least recently (round robin), so a wide fan-out cannot hold
  back a run launched after it for more than one step's turn: while a run
  waits holding no slot, each run that was waiting before it is served at
  most once, and no run that began waiting after it is served first.
- Work is never left waiting on room that exists: after ``admit()`` and
  ``grant()`` either the queue is empty or no room is left, and either no
  request waits or every slot is held.

Where it will grow: per-task lifecycles (seed 001, DESIGN §12) add wait
reasons (``deps``, ``review``) to ``WaitReason``; cluster-wide capacity
(DESIGN §16) replaces the counts of ``active`` and ``held`` by shared ones,
which is why they are read only through ``has_room`` and ``slots_in_use``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """Where a run stands with the scheduler."""

    QUEUED = "queued"  # launched, waits for room (planned, reason capacity)
    ACTIVE = "active"  # admitted: counts toward max_active_runs (in progress, or blocked on a slot)
    PAUSED = "paused"  # waits for a person; takes no room (planned, reason approval)
    # Driven here for a command only (launched or recovered by another process that has let it go):
    # it may hold slots but takes no room and is not in the plan.
    UNPLANNED = "unplanned"


class WaitReason(StrEnum):
    """Why planned work waits (the plan's ``reason``; RunQueued's ``reason``)."""

    CAPACITY = "capacity"  # max_active_runs runs are in progress
    BLOCKED = "blocked"  # admitted, but every step it could start waits for an agent slot
    APPROVAL = "approval"  # a person is awaited


START_AT_ONCE = "capacity available"  # RunStarted's reason for a launch that did not queue
START_FREED = "capacity freed"  # RunStarted's reason for a queued run admitted later


@dataclass(frozen=True)
class Admission:
    """What becomes of a launch: started at once, or queued at ``position`` (1 = next)."""

    start: bool
    reason: str
    position: int


@dataclass(frozen=True)
class Grant:
    """Steps of one run that now hold an agent slot each, in the order they asked."""

    run_id: str
    step_ids: tuple[str, ...]


class _Entry:
    __slots__ = ("flow", "known", "phase", "queued", "since", "tasks")

    def __init__(self, flow: str, since: float, phase: Phase, known: int) -> None:
        self.flow = flow
        self.since = since
        self.phase = phase
        self.known = known  # when it became known (orders runs awaiting a person)
        self.queued = 0  # when it joined the queue (orders queued runs)
        self.tasks: dict[str, Any] | None = None  # a task run's tasks, as its RunActor last told (set_tasks)


_UNSEEN: dict[str, Any] = {"unseen": True}
"""A run's last shown entry when no consumer saw it (``Scheduler.delta_unseen``): equal to no entry."""

_RANK = {WaitReason.CAPACITY: 0, WaitReason.BLOCKED: 1, WaitReason.APPROVAL: 2}


class Scheduler:
    """The scheduling state of one engine: runs by phase, the queue, the agent slots."""

    def __init__(self, max_active_runs: int, agent_slots: int, epoch: str = "") -> None:
        self.epoch = epoch  # names this scheduler's sequence of deltas (a new one starts again at seq 0)
        self.max_active_runs = max_active_runs
        self.agent_slots = agent_slots
        self._runs: dict[str, _Entry] = {}  # every run known, in the order it became known
        self._queue: deque[str] = deque()  # QUEUED runs, in plan order
        self._active: set[str] = set()  # ACTIVE runs (an index of _runs, for counting)
        self._held: dict[str, set[str]] = {}  # run -> steps holding a slot (never empty)
        self._waiting: dict[str, deque[str]] = {}  # run -> steps waiting for a slot, in asking order (never empty)
        self._served: dict[str, int] = {}  # waiting run -> when it asked or was last served (the round robin)
        self._tick = itertools.count()
        self._known = itertools.count()
        # The plan as last handed out by ``delta()``: run -> entry (without position), and what changed since.
        self.seq = 0
        self._shown: dict[str, dict[str, Any]] = {}  # what the last delta showed of each run (or _UNSEEN)
        self._dirty: set[str] = set()
        self._shown_counts: tuple[int, int] = (0, 0)  # runs in progress, slots in use (in waiting runs' details)

    # -- what the Orchestrator reads -----------------------------------------------------------

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def phase(self, run_id: str) -> Phase | None:
        """The run's phase, or None if the scheduler does not know it."""
        entry = self._runs.get(run_id)
        return None if entry is None else entry.phase

    def has_room(self) -> bool:
        """Another run may be in progress."""
        return not self.max_active_runs or len(self._active) < self.max_active_runs

    def slots_in_use(self) -> int:
        """Agent slots held now, by every run."""
        return sum(len(steps) for steps in self._held.values())

    def held(self, run_id: str) -> frozenset[str]:
        """The run's steps holding an agent slot."""
        return frozenset(self._held.get(run_id, ()))

    def waiting(self, run_id: str) -> tuple[str, ...]:
        """The run's steps waiting for an agent slot, in the order they will get one."""
        return tuple(self._waiting.get(run_id, ()))

    # -- what happened -------------------------------------------------------------------------

    def launch(self, run_id: str, flow: str, since: float) -> Admission:
        """A new run: in progress at once if there is room and nobody queued before it, else queued."""
        if run_id in self._runs:
            raise ValueError(f"run {run_id} is already scheduled")
        if self.has_room() and not self._queue:
            self.add(run_id, flow, since, Phase.ACTIVE)
            return Admission(True, START_AT_ONCE, 0)
        self.add(run_id, flow, since, Phase.QUEUED)
        return Admission(False, WaitReason.CAPACITY.value, len(self._queue))

    def add(self, run_id: str, flow: str, since: float, phase: Phase) -> None:
        """Know a run found in the log (recovered, driven again, or commanded) in ``phase``.

        Nothing is admitted here: a caller adding several runs asks ``admit()``
        once they are all known, so room goes to the queue in its order.
        """
        if run_id in self._runs:
            raise ValueError(f"run {run_id} is already scheduled")
        entry = self._runs[run_id] = _Entry(flow, since, phase, next(self._known))
        self._dirty.add(run_id)
        if phase is Phase.QUEUED:
            entry.queued = next(self._known)
            self._queue.append(run_id)
        elif phase is Phase.ACTIVE:
            self._active.add(run_id)

    def pause(self, run_id: str) -> None:
        """The run waits for a person with nothing else to do: it gives its room up.

        Its RunActor says so only when no step of it runs or waits for a slot.
        """
        entry = self._runs.get(run_id)
        if entry is None:
            return
        self._leave_phase(run_id, entry)
        entry.phase = Phase.PAUSED
        self._dirty.add(run_id)

    def resume(self, run_id: str) -> None:
        """A person answered the run's approval: in progress again at once, never behind the queue."""
        entry = self._runs.get(run_id)
        if entry is not None and entry.phase is Phase.PAUSED:
            entry.phase = Phase.ACTIVE
            self._active.add(run_id)
            self._dirty.add(run_id)

    def forget(self, run_id: str) -> None:
        """The run ended, or is no longer this scheduler's: its room, slots and requests are freed."""
        entry = self._runs.pop(run_id, None)
        if entry is not None:
            self._leave_phase(run_id, entry)
            self._dirty.add(run_id)
        self._held.pop(run_id, None)
        self._waiting.pop(run_id, None)
        self._served.pop(run_id, None)

    def set_tasks(self, run_id: str, tasks: dict[str, Any]) -> None:
        """A task run's tasks changed (each task's status, reason, detail, waiting_on, phase): its plan
        entry carries them from now on, so the next delta has them. Only task runs call this; a run not
        known (ended) is ignored, and the same view twice changes nothing."""
        entry = self._runs.get(run_id)
        if entry is None or entry.tasks == tasks:
            return
        entry.tasks = tasks
        self._dirty.add(run_id)

    def request(self, run_id: str, step_ids: Iterable[str]) -> None:
        """Steps of a run that may start once each holds a slot (a run not known is ignored: it ended)."""
        if run_id not in self._runs:
            return
        self._dirty.add(run_id)
        held = self._held.get(run_id, ())
        queue = self._waiting.setdefault(run_id, deque())
        queue.extend(sid for sid in step_ids if sid not in queue and sid not in held)
        if not queue:
            del self._waiting[run_id]
            return
        self._served.setdefault(run_id, next(self._tick))

    def release(self, run_id: str, held: Iterable[str] = (), withdrawn: Iterable[str] = ()) -> None:
        """Slots the run no longer holds (attempts ended) and requests it takes back."""
        self._dirty.add(run_id)
        holding = self._held.get(run_id)
        if holding is not None:
            holding.difference_update(held)
            if not holding:
                del self._held[run_id]
        queue = self._waiting.get(run_id)
        if queue is not None:
            for sid in withdrawn:
                if sid in queue:
                    queue.remove(sid)
            if not queue:
                del self._waiting[run_id]
                self._served.pop(run_id, None)

    # -- what follows --------------------------------------------------------------------------

    def admit(self) -> list[str]:
        """The queued runs that start now (in progress from here on), front of the queue first."""
        started: list[str] = []
        while self._queue and self.has_room():
            run_id = self._queue.popleft()
            self._runs[run_id].phase = Phase.ACTIVE
            self._active.add(run_id)
            self._dirty.add(run_id)
            started.append(run_id)
        return started

    def grant(self) -> list[Grant]:
        """Hand free slots out, one at a time, fewest-held first; one Grant per run served."""
        grants: dict[str, list[str]] = {}
        free = self._free_slots()
        while free > 0 and self._waiting:
            run_id = min(self._waiting, key=lambda r: (len(self._held.get(r, ())), self._served[r]))
            self._served[run_id] = next(self._tick)  # served: to the back of runs holding as many slots
            self._dirty.add(run_id)
            queue = self._waiting[run_id]
            sid = queue.popleft()
            if not queue:
                del self._waiting[run_id]
                del self._served[run_id]
            self._held.setdefault(run_id, set()).add(sid)
            grants.setdefault(run_id, []).append(sid)
            free -= 1
        return [Grant(run_id, tuple(sids)) for run_id, sids in grants.items()]

    def plan(self) -> dict[str, Any]:
        """In progress, planned (with position and why it waits), and new.

        Planned work waits for one of three reasons (``WaitReason``):
        ``capacity`` (queued: max_active_runs reached), ``blocked`` (admitted,
        but every step it could start needs an agent slot and none is free),
        ``approval`` (a person is awaited). Positions count from 1 across all
        three, in that order: the queue in its order, blocked runs in the order
        they will be served, then runs awaiting a person. ``new_queued`` is
        always empty here: a launch is planned in the very call that admits it.
        Each planned entry's ``order`` sorts it within its reason (what a
        ``plan_delta`` consumer renumbers positions by); ``seq`` is the last
        ``delta()`` handed out: the plan is that delta's result only when
        nothing changed since (the Orchestrator publishes the pending delta
        before it answers a plan query).
        """
        active = sorted(self._active)
        in_progress = [row for r in active if not self._blocked(r) and (row := self._row(r)) is not None]
        waiting = list(self._queue)
        waiting += [r for r in sorted(self._waiting, key=self._served.__getitem__)
                    if r in self._active and self._blocked(r)]
        waiting += [r for r, entry in self._runs.items() if entry.phase is Phase.PAUSED]
        planned = []
        for i, r in enumerate(waiting, 1):
            row = self._row(r)
            assert row is not None
            entry = {"run_id": r, "flow": row["flow"], "position": i, "reason": row["reason"],
                     "detail": row["detail"], "steps_waiting_for_slot": row["steps_waiting_for_slot"],
                     "order": row["order"]}
            if "tasks" in row:  # a task run's tasks
                entry["tasks"] = row["tasks"]
            planned.append(entry)
        return {
            **self._header(),
            "in_progress": in_progress,
            "planned_queued": planned,
            "new_queued": [],
        }

    def pending_changes(self) -> int:
        """Runs touched since the last ``delta()``."""
        return len(self._dirty)

    def delta(self) -> dict[str, Any] | None:
        """What changed in the plan since the last delta (None: nothing), as a ``plan_delta`` frame's body.

        ``in_progress`` and ``planned_queued`` hold the entries of runs that
        appeared or changed (a run's entry replaces its previous one, in
        whichever list it was; planned entries have no ``position``: a
        consumer numbers them in ``(reason, order)`` order, reasons as in
        ``plan()``); ``removed`` the runs that left the plan. The work is
        the runs touched since the last delta, plus the queued and blocked
        runs when the counts their details quote moved; never every run
        (runs awaiting a person are not looked at). ``apply_delta`` applies one.
        """
        moved = self._counts_moved()
        if not self._dirty and not moved:
            return None
        in_progress: list[dict[str, Any]] = []
        planned: list[dict[str, Any]] = []
        removed: list[str] = []
        for run_id in sorted(self._dirty):
            row = self._row(run_id)
            old = self._shown.get(run_id)
            if row == old:
                continue
            if row is None:
                del self._shown[run_id]
                removed.append(run_id)
            else:
                self._shown[run_id] = row
                (planned if "reason" in row else in_progress).append(row)
        self._dirty.clear()
        if not (in_progress or planned or removed or moved):
            return None
        self.seq += 1
        return {**self._header(), "seq": self.seq, "in_progress": in_progress, "planned_queued": planned,
                "removed": removed}

    def _counts_moved(self) -> bool:
        """Whether the counts the details quote moved since the last delta; if so, the queued and
        blocked runs (whose details quote them) join the runs touched."""
        counts = (len(self._active), self.slots_in_use())
        if counts == self._shown_counts:
            return False
        self._shown_counts = counts
        self._dirty.update(self._queue)
        self._dirty.update(r for r in self._waiting if r in self._active and self._blocked(r))
        return True

    def delta_unseen(self) -> None:
        """What ``delta()`` does when nobody takes its frame, without making one: the changes are
        consumed and ``seq`` moves on as if a delta went out, and the runs touched are marked unseen,
        so the next delta that touches one of them carries it whatever it was (a consumer that
        joins reads the whole plan first, at this ``seq`` or later). A start that recovered 10,000
        parked runs built a delta of 10,000 entries for nobody.
        """
        moved = self._counts_moved()
        if not self._dirty and not moved:
            return
        for run_id in self._dirty:
            self._shown[run_id] = _UNSEEN
        self._dirty.clear()
        self.seq += 1

    # -- inside ----------------------------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq, "max_active_runs": self.max_active_runs,
                "agent_slots": self.agent_slots, "slots_in_use": self.slots_in_use()}

    def _row(self, run_id: str) -> dict[str, Any] | None:
        """The run's plan entry (a planned one without its position), or None if it is not in the plan."""
        entry = self._runs.get(run_id)
        if entry is None:
            return None
        waiting = len(self._waiting.get(run_id, ()))
        if entry.phase is Phase.ACTIVE:
            if not self._blocked(run_id):
                row = {"run_id": run_id, "flow": entry.flow, "since": entry.since,
                       "slots_held": len(self._held.get(run_id, ())), "steps_waiting_for_slot": waiting}
                if entry.tasks is not None:
                    row["tasks"] = entry.tasks
                return row
            reason, order = WaitReason.BLOCKED, self._served[run_id]
            detail = (f"{waiting} step(s) wait for an agent slot; "
                      f"{self.slots_in_use()} of {self.agent_slots} in use")
        elif entry.phase is Phase.QUEUED:
            reason, order = WaitReason.CAPACITY, entry.queued
            detail = f"{len(self._active)} of {self.max_active_runs} runs in progress"
        elif entry.phase is Phase.PAUSED:
            reason, order = WaitReason.APPROVAL, entry.known
            detail = "waiting for a person to approve or reject"
        else:
            return None
        planned = {"run_id": run_id, "flow": entry.flow, "reason": str(reason), "detail": detail,
                   "steps_waiting_for_slot": waiting, "order": order}
        if entry.tasks is not None:
            planned["tasks"] = entry.tasks
        return planned

    def _blocked(self, run_id: str) -> bool:
        return not self._held.get(run_id) and bool(self._waiting.get(run_id))

    def _free_slots(self) -> int:
        if not self.agent_slots:
            return sum(len(q) for q in self._waiting.values())  # no limit: every request is served
        return self.agent_slots - self.slots_in_use()

    def _leave_phase(self, run_id: str, entry: _Entry) -> None:
        if entry.phase is Phase.QUEUED:
            self._queue.remove(run_id)
        elif entry.phase is Phase.ACTIVE:
            self._active.discard(run_id)


def apply_delta(plan: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """The plan after ``delta`` (a ``plan_delta`` frame or ``Scheduler.delta()``), positions renumbered.

    The caller checks the sequence: a delta applies to the plan whose
    ``epoch`` it shares and whose ``seq`` is one less; otherwise (a frame was
    missed, or the engine restarted) fetch the whole plan again.
    """
    changed = {row["run_id"] for row in (*delta["in_progress"], *delta["planned_queued"])}
    gone = changed | set(delta["removed"])
    running = [r for r in plan["in_progress"] if r["run_id"] not in gone] + list(delta["in_progress"])
    waiting = [{k: v for k, v in r.items() if k != "position"} for r in plan["planned_queued"]
               if r["run_id"] not in gone] + list(delta["planned_queued"])
    waiting.sort(key=lambda r: (_RANK[WaitReason(r["reason"])], r["order"]))
    planned = []
    for i, r in enumerate(waiting, 1):
        entry = {"run_id": r["run_id"], "flow": r["flow"], "position": i, "reason": r["reason"],
                 "detail": r["detail"], "steps_waiting_for_slot": r["steps_waiting_for_slot"], "order": r["order"]}
        if "tasks" in r:  # a task run's tasks
            entry["tasks"] = r["tasks"]
        planned.append(entry)
    return {
        **{k: delta[k] for k in ("epoch", "seq", "max_active_runs", "agent_slots", "slots_in_use")},
        "in_progress": sorted(running, key=lambda r: r["run_id"]),
        "planned_queued": planned,
        "new_queued": [],
    }
