"""flows.codec: the one way to read a run's log (type names, schema versions, upcasters)."""

from __future__ import annotations

import msgspec
import pytest

from flows.codec import CODEC, UnknownEventType, UpcastError, decode, schema_version
from flows.errors import BatonError
from flows.events import RunCancelled, StepResumed, event_data


def renamed_by(data: dict) -> tuple[str, dict]:
    data = dict(data)
    data["by"] = data.pop("who")
    return "RunCancelled", data


def test_data_decodes_from_a_dict_or_its_json_text():
    event = RunCancelled(reason="stop", by="ada", at=1.0)
    assert decode("RunCancelled", event_data(event)) == event
    assert decode("RunCancelled", msgspec.json.encode(event_data(event))) == event
    assert decode("RunCancelled", msgspec.json.encode(event_data(event)).decode()) == event


def test_an_upcaster_applies_to_its_version_only_and_new_events_are_written_past_it():
    assert schema_version("RunCancelled") == 1
    old = {"reason": "stop", "who": "ada", "at": 1.0}
    with CODEC.upcasting("RunCancelled", 1, renamed_by):
        assert schema_version("RunCancelled") == 2
        assert decode("RunCancelled", old, 1) == RunCancelled(reason="stop", by="ada", at=1.0)
        assert decode("RunCancelled", msgspec.json.encode(old), 1).by == "ada"
        current = {"reason": "stop", "by": "bob", "at": 2.0}
        assert decode("RunCancelled", current, 2).by == "bob"  # written at 2: nothing to upcast
        assert "RunCancelled" not in CODEC.fast() and "RunCancelled" in CODEC.versioned()
    assert schema_version("RunCancelled") == 1 and "RunCancelled" in CODEC.fast()
    assert decode("RunCancelled", old, 1).by == ""  # gone with the upcaster: the old field is ignored


def test_upcasters_chain_and_may_rename_a_type():
    def v1(data: dict) -> tuple[str, dict]:
        return "Resumed", {**data, "decision": "approved" if data.pop("ok") else "rejected"}

    def v2(data: dict) -> tuple[str, dict]:
        return "StepResumed", data

    with CODEC.upcasting("Resumed", 1, v1), CODEC.upcasting("Resumed", 2, v2):
        assert CODEC.knows("Resumed")
        assert decode("Resumed", {"step_id": "gate", "ok": True}, 1) == StepResumed(step_id="gate",
                                                                                  decision="approved")
    assert not CODEC.knows("Resumed")


def test_what_cannot_be_read_says_why():
    with pytest.raises(UnknownEventType) as unknown:
        decode("Teleported", {})
    assert isinstance(unknown.value, KeyError) and isinstance(unknown.value, BatonError)
    assert str(unknown.value) == "unknown event type 'Teleported'"

    def broken(data: dict) -> tuple[str, dict]:
        raise RuntimeError("no")

    with CODEC.upcasting("RunCancelled", 1, broken):
        with pytest.raises(UpcastError, match=r"upcasting 'RunCancelled' v1 failed: RuntimeError\('no'\)"):
            decode("RunCancelled", {}, 1)
        with pytest.raises(ValueError, match="already registered"):
            with CODEC.upcasting("RunCancelled", 1, broken):
                pass
    with pytest.raises(msgspec.ValidationError):
        decode("StepResumed", {"step_id": "gate"})  # its decision is required


def test_with_no_upcaster_every_type_takes_the_fast_path():
    """Readers decode data straight from its JSON text for every type no upcaster starts from: with
    none registered, that is all of them (a codec built with none once had an empty fast table)."""
    from flows.codec import EventCodec
    from flows.events import EVENT_TYPES

    codec = EventCodec(EVENT_TYPES, {})
    assert set(codec.fast()) == set(EVENT_TYPES) and codec.versioned() == frozenset()
    with codec.upcasting("StepCompleted", 1, lambda data: data):
        assert "StepCompleted" not in codec.fast() and codec.versioned() == {"StepCompleted"}
    assert "StepCompleted" in codec.fast()
