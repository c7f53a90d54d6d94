"""Projects as events: the registry fold and the decisions (pure)."""

from __future__ import annotations

import msgspec
import pytest

from flows.events import event_data
from flows.projects import (
    PROJECT_EVENT_TYPES,
    InvalidProjectId,
    ProjectError,
    ProjectExists,
    ProjectRegistered,
    ProjectRegistry,
    ProjectRemoved,
    UnknownProject,
    Workspace,
    evolve,
    fold,
    register,
    remove,
)


def test_register_then_fold_gives_the_project():
    events = register(ProjectRegistry(), "demo", "/srv/demo", allow=[("pytest", "-q")], by="ada", now=5.0)
    assert events == [ProjectRegistered(project_id="demo", root="/srv/demo", allow=[["pytest", "-q"]],
                                        by="ada", at=5.0)]
    registry = fold(events)
    project = registry.get("demo")
    assert (project.root, project.allow, project.registered_by, project.registered_at) == (
        "/srv/demo", [["pytest", "-q"]], "ada", 5.0)
    assert registry.version == 1


def test_registering_again_the_same_way_decides_nothing():
    registry = fold(register(ProjectRegistry(), "demo", "/srv/demo"))
    assert register(registry, "demo", "/srv/demo") == []


def test_a_taken_id_for_another_root_is_refused_naming_both():
    registry = fold(register(ProjectRegistry(), "demo", "/srv/demo"))
    with pytest.raises(ProjectExists, match="'demo' is already registered at /srv/demo"):
        register(registry, "demo", "/srv/other")


@pytest.mark.parametrize("bad", ["", "Demo", "-x", "a/b", "a b", "x" * 65, "../etc"])
def test_project_ids_are_short_lowercase_names(bad):
    with pytest.raises(InvalidProjectId, match="invalid project id"):
        register(ProjectRegistry(), bad, "/srv/x")


def test_allowed_commands_are_argv_lists():
    with pytest.raises(ProjectError, match="non-empty argv list"):
        register(ProjectRegistry(), "demo", "/srv/demo", allow=[[]])


def test_unknown_project_names_the_known_ones():
    registry = fold(register(ProjectRegistry(), "b", "/b") + register(ProjectRegistry(), "a", "/a"))
    with pytest.raises(UnknownProject) as err:
        registry.get("zz")
    assert str(err.value) == "unknown project 'zz' (registered projects: a, b)"
    assert isinstance(err.value, KeyError)


def test_remove_then_the_id_is_free_again():
    registry = fold(register(ProjectRegistry(), "demo", "/srv/demo"))
    registry = fold([*register(ProjectRegistry(), "demo", "/srv/demo"), *remove(registry, "demo", by="ada")])
    assert registry.projects == {} and registry.version == 2
    assert register(registry, "demo", "/srv/other")[0].root == "/srv/other"
    with pytest.raises(UnknownProject):
        remove(registry, "demo")


def test_events_round_trip_through_their_data():
    for event in (ProjectRegistered(project_id="a", root="/a", allow=[["make"]], by="x", at=1.0),
                  ProjectRemoved(project_id="a", by="x", reason="moved", at=2.0)):
        data = msgspec.json.decode(msgspec.json.encode(event_data(event)))
        assert msgspec.convert(data, PROJECT_EVENT_TYPES[type(event).__name__]) == event


def test_unknown_events_count_toward_the_version_only():
    from flows.events import RunQueued

    registry = evolve(ProjectRegistry(), RunQueued(run_id="r"))
    assert registry.projects == {} and registry.version == 1


def test_a_workspace_pin_is_plain_data():
    pin = Workspace(project_id="demo", root="/srv/demo", commit="a" * 40, branch="main", dirty=True)
    assert msgspec.convert(msgspec.to_builtins(pin), Workspace) == pin
