"""The pure core's errors: one root, :class:`BatonError`, and the errors of commands on a run.

Every error flows/ raises is a ``BatonError`` carrying what a person needs to
fix the cause. Errors that callers have always caught as ``ValueError`` or
``KeyError`` keep that base too (``FlowDefinitionError`` is a ``ValueError``,
``UnknownFlow`` a ``KeyError``). The errors of a layer above are rooted here as
well (``actors.errors.ActorsError``); the store's are not (``eventstore``
imports nothing of flows: ``eventstore.StoreError``). The API maps each type
to one answer in one place: ``api.http.problems`` (HTTP) and ``api.failures``
(exit codes).

The other errors live beside the rule they belong to, each a ``BatonError``:
``flows.model.FlowDefinitionError``, ``flows.launch.LaunchError``,
``flows.catalog.UnknownFlow``, ``flows.text.UnstorableText``,
``flows.conditions.ConditionError``, ``flows.projects.ProjectError`` (and its
kinds), ``flows.codec.UnknownEventType`` and ``flows.codec.UpcastError``.
"""

from __future__ import annotations


class BatonError(Exception):
    """The root of baton's own errors (the store's excepted: ``eventstore.StoreError``)."""


class RunFinished(BatonError):
    """A command reached a run that has already ended."""

    def __init__(self, run_id: str, status: str) -> None:
        super().__init__(f"run {run_id} has already ended ({status})")
        self.run_id = run_id
        self.status = status


class UnknownRun(BatonError, KeyError):
    """A command named a run the log does not have."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"no run {self.run_id!r}"


class UnknownStep(BatonError, KeyError):
    """A command named a step the run's graph does not have."""

    def __init__(self, run_id: str, step_id: str) -> None:
        super().__init__(step_id)
        self.run_id = run_id
        self.step_id = step_id

    def __str__(self) -> str:
        return f"run {self.run_id} has no step {self.step_id!r}"


class NotWaiting(BatonError):
    """Approve or reject reached a step that is not waiting for a person."""

    def __init__(self, run_id: str, step_id: str, status: str) -> None:
        super().__init__(f"step {step_id!r} of run {run_id} is not waiting for approval (it is {status})")
        self.run_id = run_id
        self.step_id = step_id
        self.status = status
