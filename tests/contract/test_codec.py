"""Encoding through a real store: arbitrary JSON round-trips, and the type registry."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import (
    Codec,
    CorruptEventError,
    NewEvent,
    UnknownEventTypeError,
    open_store,
)

from eventstore_testkit import store  # noqa: F401 - a fixture

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)
metadata_values = st.dictionaries(st.text(), json_values, max_size=4)


class TestRoundTrip:
    """Whatever JSON goes in comes back equal, from append and from every read."""

    def test_arbitrary_json_round_trips(self, store_url):
        counter = itertools.count()
        with open_store(store_url) as store:

            @settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])
            @given(data=json_values, metadata=metadata_values,
                   type_name=st.text(min_size=1).filter(lambda t: "\x00" not in t))
            def round_trip(data, metadata, type_name):
                stream = f"prop-{next(counter)}"
                recorded = store.append(stream, [NewEvent(type_name, data, metadata)], 0)
                assert recorded[0].data == data and recorded[0].metadata == metadata
                assert recorded[0].type == type_name
                assert store.read_stream(stream) == recorded
                assert list(store.read_all(after=recorded[0].position - 1, limit=1)) == recorded

            round_trip()
            assert store.verify() == []


class Opened(msgspec.Struct, frozen=True, tag=True):
    account: str
    limit: int = 0


class Closed(msgspec.Struct, frozen=True, tag=True):
    account: str


class TestCodec:
    """The small type registry the domain layer decodes with."""

    def test_typed_events_round_trip(self, store):
        codec = Codec({"Opened": Opened, "Closed": Closed})
        events = [codec.new_event(Opened("a-1", 10)), codec.new_event(Closed("a-1"), {"by": "x"})]
        assert events[0].metadata == {"schema_version": 1}
        store.append("acct", events, expected_version=0)
        assert [codec.decode(e) for e in store.read_stream("acct")] == [
            Opened("a-1", 10), Closed("a-1")
        ]

    def test_upcasters_rename_and_reshape_old_events(self, store):
        # Version 1 called it "Created" with "owner"; version 2 is Opened(account).
        store.append("acct", [NewEvent("Created", {"owner": "a-2"}, {"schema_version": 1})])
        codec = Codec(
            {"Opened": Opened},
            {("Created", 1): lambda d: ("Opened", {"type": "Opened", "account": d["owner"]})},
            schema_versions={"Opened": 2},
        )
        assert codec.decode(store.read_stream("acct")[0]) == Opened("a-2")
        assert codec.new_event(Opened("a-3")).metadata == {"schema_version": 2}

    def test_unknown_type_names_the_position(self, store):
        recorded = store.append("acct", [NewEvent("Mystery", {})])[0]
        with pytest.raises(UnknownEventTypeError) as caught:
            Codec({"Opened": Opened}).decode(recorded)
        assert caught.value.position == recorded.position
        assert caught.value.type_name == "Mystery"
        assert f"position {recorded.position}" in str(caught.value)

    def test_data_that_does_not_fit_its_type_names_the_position(self, store):
        recorded = store.append("acct", [NewEvent("Opened", {"limit": "lots"})])[0]
        with pytest.raises(CorruptEventError, match=f"position {recorded.position}"):
            Codec({"Opened": Opened}).decode(recorded)

    def test_unregistered_value_is_refused(self):
        with pytest.raises(KeyError, match="Closed"):
            Codec({"Opened": Opened}).new_event(Closed("x"))
