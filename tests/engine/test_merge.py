"""Merging customers: the same as folding both histories together; commutative, associative."""

from __future__ import annotations

from hypothesis import given, settings

from engine.config import EngineConfig
from engine.events import Event
from engine.fold import fold
from engine.merge import merge
from engine.profile import Profile
from tests.engine.builders import canonical, event_lists

CONFIG = EngineConfig()


def as_customer(events: list[Event], customer_id: str, tag: str) -> list[Event]:
    return [
        e.model_copy(update={"customer_id": customer_id, "event_id": f"{tag}-{e.event_id}"})
        for e in events
    ]


def merged(*profiles: Profile) -> Profile:
    result = profiles[0]
    for profile in profiles[1:]:
        result = merge(result, profile, customer_id="cust-1", config=CONFIG)
    return result


@given(a=event_lists(max_size=25), b=event_lists(max_size=25))
@settings(max_examples=150, deadline=None)
def test_merge_equals_folding_both_histories(a: list[Event], b: list[Event]) -> None:
    events_a, events_b = as_customer(a, "cust-1", "a"), as_customer(b, "cust-1", "b")
    together = fold(None, events_a + events_b)
    assert canonical(merged(fold(None, events_a), fold(None, events_b))) == canonical(together)


@given(a=event_lists(max_size=20), b=event_lists(max_size=20))
@settings(max_examples=100, deadline=None)
def test_merge_is_commutative(a: list[Event], b: list[Event]) -> None:
    pa = fold(None, as_customer(a, "cust-1", "a"))
    pb = fold(None, as_customer(b, "cust-1", "b"))
    assert canonical(merged(pa, pb)) == canonical(merged(pb, pa))


@given(a=event_lists(max_size=15), b=event_lists(max_size=15), c=event_lists(max_size=15))
@settings(max_examples=100, deadline=None)
def test_merge_is_associative(a: list[Event], b: list[Event], c: list[Event]) -> None:
    pa, pb, pc = (
        fold(None, as_customer(events, "cust-1", tag))
        for events, tag in ((a, "a"), (b, "b"), (c, "c"))
    )
    left = merged(merged(pa, pb), pc)
    right = merge(pa, merged(pb, pc), customer_id="cust-1", config=CONFIG)
    assert canonical(left) == canonical(right)
