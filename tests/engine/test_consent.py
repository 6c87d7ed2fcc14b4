"""Consent: no implicit learning without profiling consent; contact only where consented."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.consent import consent_status, may_contact
from engine.events import Event, EventType
from engine.fold import fold
from engine.preferences import ConsentStatus, Purpose
from engine.profile import Profile
from tests.engine.builders import T0, event_lists, withdrawal

CONFIG = EngineConfig()
ALL_PURPOSES = ("service", "marketing", "profiling")


def learned_anything(profile: Profile) -> bool:
    return bool(
        profile.channel_usage
        or profile.contact_channels
        or profile.request_channels
        or profile.habits
        or profile.default_feedback
    )


def consent(purpose: str, status: str, at_days: float, channel: str | None = None) -> Event:
    attributes = {"purpose": purpose, "status": status, "channel": channel}
    return Event(
        event_id=f"consent-{purpose}-{status}-{at_days}-{channel}",
        customer_id="cust-1",
        touchpoint="web-privacy",
        channel="web",  # type: ignore[arg-type]
        type="consent_changed",  # type: ignore[arg-type]
        occurred_at=T0 + timedelta(days=at_days),
        attributes=attributes,
    )


def latest_profiling(events: list[Event]) -> Event | None:
    statements = [
        e
        for e in events
        if e.type is EventType.CONSENT_CHANGED and e.attributes["purpose"] == "profiling"
    ]
    return max(statements, key=lambda e: (e.occurred_at, e.event_id), default=None)


@given(events=event_lists(consent_purposes=ALL_PURPOSES), data=st.data())
@settings(max_examples=200, deadline=None)
def test_after_a_profiling_refusal_nothing_learned_is_kept_whatever_the_order(
    events: list[Event], data: st.DataObject
) -> None:
    profile = fold(None, data.draw(st.permutations(events)))
    latest = latest_profiling(events)
    if latest is not None and latest.attributes["status"] != "granted":
        assert not learned_anything(profile)
    # Never anything from requests dated at or before a refusal.
    if profile.profiling_revoked_at is not None:
        for records in profile.habits.values():
            assert all(r.at > profile.profiling_revoked_at for r in records)


@given(events=event_lists(consent_purposes=ALL_PURPOSES))
@settings(max_examples=100, deadline=None)
def test_stated_preferences_and_cases_survive_a_refusal(events: list[Event]) -> None:
    refused = fold(None, [*events, consent("profiling", "revoked", 400)])
    assert not learned_anything(refused)
    assert refused.stated == fold(None, events).stated
    assert refused.cases == fold(None, events).cases


def test_learning_resumes_only_after_a_new_grant() -> None:
    history = [withdrawal(T0 + timedelta(days=d)) for d in range(5)]
    refused = fold(None, [*history, consent("profiling", "revoked", 10)])
    during = fold(refused, [withdrawal(T0 + timedelta(days=d)) for d in range(11, 15)])
    assert not learned_anything(during)
    regranted = fold(during, [consent("profiling", "granted", 20)])
    assert not learned_anything(regranted)
    after = fold(regranted, [withdrawal(T0 + timedelta(days=d)) for d in range(21, 25)])
    [records] = after.habits.values()
    assert len(records) == 4


def test_marketing_needs_an_explicit_grant_and_channel_statements_win_by_time() -> None:
    profile = fold(None, [withdrawal(T0)])
    assert not may_contact(profile, Purpose.MARKETING, "email", CONFIG)
    assert may_contact(profile, Purpose.SERVICE, "email", CONFIG)
    granted = fold(profile, [consent("marketing", "granted", 1)])
    assert may_contact(granted, Purpose.MARKETING, "sms", CONFIG)
    no_sms = fold(granted, [consent("marketing", "revoked", 2, channel="sms")])
    assert not may_contact(no_sms, Purpose.MARKETING, "sms", CONFIG)
    assert may_contact(no_sms, Purpose.MARKETING, "email", CONFIG)
    everything_again = fold(no_sms, [consent("marketing", "granted", 3)])
    assert (
        consent_status(everything_again, Purpose.MARKETING, "sms", CONFIG) is ConsentStatus.GRANTED
    )


@given(events=event_lists(consent_purposes=ALL_PURPOSES))
@settings(max_examples=150, deadline=None)
def test_decisions_never_pick_a_contact_channel_without_consent(events: list[Event]) -> None:
    from engine.channel_preference import ChannelPrior
    from engine.decide import decide
    from engine.decision import DecisionRequest

    profile = fold(None, events)
    decision = decide(
        profile,
        DecisionRequest(customer_id="cust-1", touchpoint="web", channel="web"),  # type: ignore[arg-type]
        prior=ChannelPrior(),
        config=CONFIG,
        decision_id="d",
        at=T0 + timedelta(days=300),
    )
    if decision.channel is not None:
        assert may_contact(profile, Purpose.SERVICE, decision.channel.channel, CONFIG)


def test_a_stated_channel_without_consent_is_not_used() -> None:
    from engine.channel_preference import ChannelPrior, contact_channel
    from tests.engine.builders import event

    profile = fold(
        None,
        [
            event("preference_stated", key="contact_channel", value="sms"),
            consent("service", "revoked", 1, channel="sms"),
        ],
    )
    choice = contact_channel(profile, ChannelPrior(), at=T0, config=CONFIG)
    assert choice is not None
    assert choice.channel != "sms"
    assert choice.source == "population"
    none_left = fold(profile, [consent("service", "denied", 2)])
    assert contact_channel(none_left, ChannelPrior(), at=T0, config=CONFIG) is None
