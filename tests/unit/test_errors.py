"""One root of errors per layer: BatonError for flows/ (and the actors' ActorsError under it)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import actors
import flows
from actors.errors import ActorsError, EngineTimeout, NodeDidNotAnswer
from flows.catalog import UnknownFlow
from flows.errors import BatonError, NotWaiting, RunFinished, UnknownRun, UnknownStep
from flows.launch import LaunchError
from flows.model import FlowDefinitionError
from flows.text import UnstorableText


def errors_defined_in(package) -> list[type[BaseException]]:
    """Every public exception class a package's modules define (private helpers excepted)."""
    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and not name.startswith("_")):
                found.append(value)
    return found


def test_every_error_of_the_core_is_a_baton_error():
    found = errors_defined_in(flows)
    assert {FlowDefinitionError, LaunchError, UnknownFlow, UnstorableText, RunFinished} <= set(found)
    assert [e for e in found if not issubclass(e, BatonError)] == []


def test_every_error_of_the_actors_is_an_actors_error_under_the_core_root():
    found = errors_defined_in(actors)
    assert len(found) >= 15
    assert [e for e in found if not issubclass(e, ActorsError)] == []
    assert issubclass(ActorsError, BatonError)


@pytest.mark.parametrize("error, kept", [
    (FlowDefinitionError, ValueError), (LaunchError, ValueError), (UnstorableText, ValueError),
    (UnknownFlow, KeyError), (UnknownRun, KeyError), (UnknownStep, KeyError),
    (EngineTimeout, TimeoutError), (NodeDidNotAnswer, TimeoutError),
])
def test_callers_that_catch_a_builtin_kind_still_catch_it(error, kept):
    assert issubclass(error, kept)


def test_the_decision_errors_say_what_they_always_said():
    assert str(UnknownRun("r1")) == "no run 'r1'"
    assert str(UnknownStep("r1", "s")) == "run r1 has no step 's'"
    assert str(RunFinished("r1", "completed")) == "run r1 has already ended (completed)"
    assert str(NotWaiting("r1", "s", "running")) == "step 's' of run r1 is not waiting for approval (it is running)"
    assert str(UnknownFlow("x", ["a"])) == "unknown flow 'x'; known flows: a"
