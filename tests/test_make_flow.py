"""``make_flow``, the pcap reader's fast way to build a Flow, gives what ``Flow(...)`` gives: equal,
same hash and repr, still frozen. Stands in for every record the reader emits (it makes each one so)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_gen.model.flows import Flow, make_flow

FIELDS = st.tuples(st.sampled_from(["10.0.0.1", "fd00::1"]), st.sampled_from(["10.0.0.2", "2001:db8::9"]),
                   st.integers(0, 65535), st.sampled_from(["TCP", "UDP"]), st.none() | st.integers(0, 65535),
                   st.none() | st.floats(0, 2e9), st.none() | st.integers(0, 10**9),
                   st.none() | st.integers(0, 10**12), st.booleans())


@settings(max_examples=200, deadline=None)
@given(values=FIELDS)
def test_make_flow_equals_the_dataclass_constructor(values: tuple[object, ...]) -> None:
    made, built = make_flow(*values), Flow(*values)  # type: ignore[arg-type]
    assert made == built
    assert hash(made) == hash(built)
    assert repr(made) == repr(built)
    assert dataclasses.astuple(made) == values


def test_made_flow_is_still_frozen() -> None:
    flow = make_flow("10.0.0.1", "10.0.0.2", 80, "TCP", 40000, 1.0, None, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        flow.dst_port = 81  # type: ignore[misc]
    assert not hasattr(Flow, "__post_init__")  # make_flow would skip it
