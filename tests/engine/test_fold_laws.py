"""The laws of the fold, property-tested: idempotent, order-independent, bounded."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.events import Event
from engine.fold import FoldStatus, WrongCustomer, apply, fold, fold_with_status
from tests.engine.builders import T0, canonical, event, event_lists, withdrawal

CONFIG = EngineConfig()


@given(events=event_lists(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_applying_an_event_twice_is_the_same_as_once(
    events: list[Event], data: st.DataObject
) -> None:
    profile = fold(None, events)
    again = data.draw(st.sampled_from(events))
    assert apply(profile, again) == profile


@given(events=event_lists(), data=st.data())
@settings(max_examples=150, deadline=None)
def test_any_permutation_gives_the_same_profile(events: list[Event], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(events))
    assert canonical(fold(None, shuffled)) == canonical(fold(None, events))


@given(events=event_lists(), split=st.integers(0, 40))
@settings(max_examples=100, deadline=None)
def test_folding_in_batches_equals_folding_at_once(events: list[Event], split: int) -> None:
    first, rest = events[:split], events[split:]
    stepwise = fold(fold(None, first), rest) if first else fold(None, rest)
    assert canonical(stepwise) == canonical(fold(None, events))


def test_apply_does_not_change_its_input() -> None:
    profile = fold(None, [withdrawal(T0)])
    before = profile.model_dump()
    apply(profile, withdrawal(T0 + timedelta(days=1)))
    assert profile.model_dump() == before


def test_memory_stays_bounded_however_long_the_history() -> None:
    config = EngineConfig()
    channels = ["atm", "web", "mobile_app", "call_center", "email", "sms", "chat", "branch"]
    kinds = [f"kind_{i}" for i in range(40)]
    events = []
    for i in range(20_000):
        events.append(
            event(
                "request" if i % 3 else "contact",
                at=T0 + timedelta(minutes=37 * i),
                channel=channels[i % len(channels)],
                **(
                    {"request": kinds[i % len(kinds)], "amount": i % 500, "currency": "EUR"}
                    if i % 3
                    else {}
                ),
            )
        )
        if i % 50 == 0:
            events.append(
                event(
                    "complaint_opened",
                    at=T0 + timedelta(minutes=37 * i),
                    channel="call_center",
                    case_id=f"case-{i}",
                )
            )
            events.append(
                event(
                    "complaint_resolved",
                    at=T0 + timedelta(minutes=37 * i + 5),
                    channel="call_center",
                    case_id=f"case-{i}",
                )
            )
            events.append(event("feedback", at=T0 + timedelta(minutes=37 * i + 6), score=i % 11))
    profile = fold(None, events)
    assert profile.event_count == len(events)
    assert len(profile.seen) == config.seen_capacity
    assert len(profile.habits) <= config.max_habit_keys
    assert all(len(r) <= config.habit_window for r in profile.habits.values())
    assert len(profile.request_channels) <= config.max_request_kinds
    assert len(profile.feedback) <= config.feedback_capacity
    assert len(profile.cases) <= config.resolved_cases_kept
    # A profile of 20,000+ events stays a few kilobytes.
    assert len(json.dumps(profile.model_dump(mode="json"))) < 40_000


def test_an_event_older_than_the_idempotence_horizon_is_too_late() -> None:
    config = EngineConfig(seen_capacity=3)
    events = [withdrawal(T0 + timedelta(days=d)) for d in range(1, 4)]
    profile = fold(None, events, config)
    late = withdrawal(T0)
    folded, statuses = fold_with_status(profile, [late, events[0]], config)
    assert statuses == [FoldStatus.TOO_LATE, FoldStatus.DUPLICATE]
    assert folded == profile


def test_an_event_for_another_customer_is_refused() -> None:
    profile = fold(None, [withdrawal(T0)])
    with pytest.raises(WrongCustomer):
        apply(profile, withdrawal(T0, customer_id="cust-2"))


def test_decayed_channel_counts_halve_every_half_life() -> None:
    config = EngineConfig(channel_half_life_days=30)
    profile = fold(None, [event("contact", channel="sms", at=T0)], config)
    count = profile.contact_channels["sms"]
    assert count.value_at(T0 + timedelta(days=30), 30) == pytest.approx(0.5)
    assert count.value_at(T0 + timedelta(days=60), 30) == pytest.approx(0.25)
    assert count.total == 1


def test_latest_statement_wins_whatever_the_arrival_order() -> None:
    old = event("preference_stated", at=T0, key="contact_channel", value="email")
    new = event("preference_stated", at=T0 + timedelta(hours=1), key="contact_channel", value="sms")
    assert fold(None, [new, old]).stated["contact_channel"].value == "sms"
    assert fold(None, [old, new]).stated["contact_channel"].value == "sms"


def test_complaints_open_and_resolve() -> None:
    opened = event("complaint_opened", channel="call_center", case_id="c-9", topic="outage")
    profile = fold(None, [opened])
    assert [case.case_id for case in profile.open_cases()] == ["c-9"]
    resolved = event("complaint_resolved", at=T0 + timedelta(days=2), case_id="c-9")
    assert fold(profile, [resolved]).open_cases() == []
    # A resolution that arrives before its opening still closes the case.
    assert fold(None, [resolved, opened]).open_cases() == []


_CENTS = st.integers(5_500, 6_900)  # bills of 55.00 to 69.00 EUR: often within tolerance
_DAYS = st.integers(0, 200)


@given(
    bills=st.lists(st.tuples(_DAYS, _CENTS), min_size=1, max_size=14, unique_by=lambda b: b[0]),
    data=st.data(),
)
@settings(max_examples=100, deadline=None)
def test_approximate_habits_and_rhythms_do_not_depend_on_arrival_order(
    bills: list[tuple[int, int]], data: st.DataObject
) -> None:
    from decimal import Decimal

    from engine.habits import usual_requests

    events = [
        event(
            "request",
            at=T0 + timedelta(days=day, hours=3),
            channel="web",
            request="bill_payment",
            amount=Decimal(cents) / 100,
            currency="EUR",
        )
        for day, cents in bills
    ]
    shuffled = data.draw(st.permutations(events))
    at = T0 + timedelta(days=201)
    expected = usual_requests(fold(None, events), CONFIG, include_unformed=True, at=at)
    assert usual_requests(fold(None, shuffled), CONFIG, include_unformed=True, at=at) == expected
    twice = fold(fold(None, events), events)
    assert usual_requests(twice, CONFIG, include_unformed=True, at=at) == expected
    [habit] = expected
    assert habit.window <= CONFIG.habit_window  # a fixed number of recent values per habit
