"""Commands one process hands to another through the store: the shapes and the stream.

A run is driven by one process at a time (the node that recorded its last
event, while its lease lives). A person's command for it (approve, reject,
cancel, and a word on one task of a task run: message, abort, retry, skip)
may reach any process: the HTTP API of a server, or a ``baton``
command in a shell. The process that got it, when it does not drive the run,
appends a ``CommandRequested`` to the **inbox** of the node that does,
``inbox-<node>``; that node follows its inbox through the store, executes the
command as if it had come from its own API, and appends a ``CommandAnswered``
to the same stream, which the requester waits for.

The store is the one thing every process shares and follows (several
``baton serve`` nodes on one PostgreSQL included), so no process needs to
know another's address. Inbox streams are not run streams: readers of runs
(projections, frames, replay) skip them by their name.

Pure: shapes and names only; the following and the waiting live in
``actors.inbox``.
"""

from __future__ import annotations

from enum import Enum

import msgspec

INBOX_PREFIX = "inbox-"


class CommandKind(str, Enum):
    """What a person asked of a run."""

    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    # A person's word on one task (``step_id``) of a task run (DESIGN §12); ``comment`` is its text.
    TASK_MESSAGE = "task-message"
    TASK_ABORT = "task-abort"
    TASK_RETRY = "task-retry"
    TASK_SKIP = "task-skip"


class Refusal(str, Enum):
    """Why a command was not carried out; each maps to one error type on the requester's side."""

    UNKNOWN_RUN = "unknown_run"
    UNKNOWN_STEP = "unknown_step"
    NOT_WAITING = "not_waiting"
    RUN_FINISHED = "run_finished"
    OWNED_ELSEWHERE = "owned_elsewhere"  # the run moved on to another process meanwhile
    BUSY = "busy"  # the run is being handed over at this moment
    FLOWS_MODULE_MISSING = "flows_module_missing"
    FOUR_EYES = "four_eyes"  # the run's launcher tried to decide a four-eyes step
    TASK_REFUSED = "task_refused"  # a word on a task that does not apply to it now (``message`` says why)
    TASK_NOT_READY = "task_not_ready"  # the task is not where that applies (``message`` says why)
    FAILED = "failed"  # anything else (its type and message are in ``message``)


class CommandRequested(msgspec.Struct, frozen=True, kw_only=True):
    """A person's command for ``run_id``, handed to the node whose inbox holds it.

    ``comment`` is the approval comment, the cancel reason or the text of a
    word on a task (its message, its abort's reason, its retry's context); ``by`` who gave
    the command (recorded in the run's events as if given to that node).
    """

    command_id: str
    kind: CommandKind
    run_id: str
    step_id: str = ""
    by: str = ""
    comment: str = ""
    at: float = 0.0


class CommandAnswered(msgspec.Struct, frozen=True, kw_only=True):
    """What became of a command: the position of the event it appended, or why not.

    ``refusal`` is None on success. ``message`` is the refusal in words;
    ``state`` the run's or step's status and ``owner`` the node now driving
    the run, where the refusal has one.
    """

    command_id: str
    run_id: str
    position: int = 0
    refusal: Refusal | None = None
    message: str = ""
    state: str = ""
    owner: str = ""
    module: str = ""
    at: float = 0.0


def inbox_of(node: str) -> str:
    """The stream a node follows for commands handed to it."""
    return INBOX_PREFIX + node


def node_of_inbox(stream_id: str) -> str | None:
    """The node whose inbox ``stream_id`` is, or None for any other stream."""
    return stream_id[len(INBOX_PREFIX):] if stream_id.startswith(INBOX_PREFIX) else None
