"""Messages between actors. Every one is told, never asked: a caller that needs
an answer passes a ``Future`` in ``reply`` and waits on it with a timeout."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import msgspec

from flows.events import Event, RunLaunched

# -- to the Orchestrator ------------------------------------------------------


@dataclass(frozen=True)
class LaunchRun:
    """Admit a new run (its RunLaunched already prepared and checked).

    ``after``: events recorded right after RunLaunched in the same batch (a fork's RunForked and copies).
    """

    event: RunLaunched
    reply: Future[Any]
    after: tuple[Event, ...] = ()


@dataclass(frozen=True)
class RunCommand:
    """approve / reject / cancel, routed to the run's actor (started if needed)."""

    run_id: str
    kind: str  # "approve" | "reject" | "cancel"
    reply: Future[Any]
    step_id: str = ""
    by: str = ""
    comment: str = ""


@dataclass(frozen=True)
class RunIdle:
    """A RunActor has nothing to do until a person acts; ``seen`` counts the
    orchestrator messages it has processed, so a stop never races a command.
    ``urn`` names the actor, so word from a replaced actor is ignored."""

    run_id: str
    seen: int
    status: str
    urn: str = ""
    timer_at: float | None = None  # a paused approval's timer falls due then: the orchestrator keeps it


@dataclass(frozen=True)
class RunEnded:
    """A RunActor appended its run's terminal event."""

    run_id: str
    status: str
    urn: str = ""


@dataclass(frozen=True)
class RunFenced:
    """A RunActor stopped without ending its run: another writer owns it
    (``retry`` False), or it could not write or crashed (``retry`` True: drive
    it again after a pause)."""

    run_id: str
    error: str
    retry: bool = False
    urn: str = ""


@dataclass(frozen=True)
class RequestSlots:
    """Agent steps of a run that may start once they hold an agent slot."""

    run_id: str
    step_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseSlots:
    """Slots a run no longer holds (attempts ended) and requests it withdraws."""

    run_id: str
    held: tuple[str, ...] = ()
    withdrawn: tuple[str, ...] = ()


@dataclass(frozen=True)
class TasksChanged:
    """A task run's tasks moved: their plan view (``flows.tasks.run.plan_view``) for its plan entry."""

    run_id: str
    tasks: dict[str, Any]


@dataclass(frozen=True)
class PlanQuery:
    """Ask for the scheduler's plan (answered through ``reply``)."""

    reply: Future[Any]


# -- to a RunActor ------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """Record the launch; start at once or wait in the queue."""

    event: RunLaunched
    start: bool
    reason: str
    plan_position: int
    reply: Future[Any]
    after: tuple[Event, ...] = ()  # a fork's RunForked and copies, recorded with RunLaunched


@dataclass(frozen=True)
class Begin:
    """A queued run may start now."""

    reason: str = "capacity freed"


@dataclass(frozen=True)
class Recover:
    """The process restarted: attempts found running were lost."""

    node: str


@dataclass(frozen=True)
class Resume:
    """A person decided on an approval step."""

    step_id: str
    decision: str
    by: str
    comment: str
    reply: Future[Any]


@dataclass(frozen=True)
class Cancel:
    """Stop the run."""

    reason: str
    by: str
    reply: Future[Any] | None = None


@dataclass(frozen=True)
class SlotsGranted:
    """Agent steps that now hold a slot."""

    step_ids: tuple[str, ...]


class StepResult(msgspec.Struct, frozen=True):
    """What an attempt produced: output (and fields) or an error.

    A msgspec Struct, not a dataclass (one a step: a frozen dataclass's __init__ is ~90 Python opcodes)."""

    step_id: str
    attempt: int
    output: str = ""
    error: str = ""
    failed: bool = False
    cancelled: bool = False
    fields: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    model: str = ""
    duration_s: float = 0.0
    frames: tuple[str, ...] = ()  # a failing code step: the traceback's last frames, "file:line in func"


@dataclass(frozen=True)
class StepEvents:
    """Events a running attempt asks to be appended now (its tool calls and results, DESIGN §11).

    ``reply`` gets the position of the last one once appended, or the error
    that ended the attempt (the step's loop stops then).
    """

    step_id: str
    attempt: int
    events: tuple[Event, ...]
    reply: Future[int]


@dataclass(frozen=True)
class StepTimedOut:
    """An attempt ran longer than its step's timeout."""

    step_id: str
    attempt: int


@dataclass(frozen=True)
class StallCheck:
    """Time to look at an attempt for a stall (no delta for ``stall_s``)."""

    step_id: str
    attempt: int


@dataclass(frozen=True)
class Wake:
    """A retry fell due."""


@dataclass(frozen=True)
class MapItemResult:
    """One item of a running map step ended (told by the map's attempt as each item ends)."""

    step_id: str
    attempt: int
    index: int
    output: str = ""
    error: str = ""
    failed: bool = False
    prompt: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True)
class ItemSlotWanted:
    """An agent item of a running map step waits for an agent slot (its slot id: ``<step>#<index>``)."""

    step_id: str
    attempt: int
    index: int


@dataclass(frozen=True)
class ApprovalDue:
    """A paused approval's timer may have fallen due (``flows.decide`` decides whether it has)."""


@dataclass(frozen=True)
class Flush:
    """Decide and append what the messages handled so far staged."""


@dataclass(frozen=True)
class TaskEvents:
    """A task attempt's thread asks its RunActor to append events (guarded; ``reply`` gets the last position)."""

    step_id: str
    attempt: int
    events: list[Any]
    reply: Future[Any]


@dataclass(frozen=True)
class TaskCommand:
    """A person's word on one task (DESIGN §12): message, abort, retry or skip."""

    step_id: str
    action: str  # "message" | "abort" | "retry" | "skip"
    by: str
    text: str
    reply: Future[Any]
