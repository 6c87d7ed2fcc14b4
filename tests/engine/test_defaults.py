"""Usual requests become defaults; declines stop them; stated preferences win."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.channel_preference import ChannelPrior, contact_channel
from engine.config import EngineConfig
from engine.decide import decide, outcome_event
from engine.decision import Decision, DecisionRequest
from engine.errors import UnknownOutcomeTarget
from engine.events import OutcomeKind
from engine.fold import fold
from engine.habits import usual_requests
from engine.profile import Profile
from tests.engine.builders import T0, event, withdrawal

CONFIG = EngineConfig()
NO_PRIOR = ChannelPrior()


def six_weekly_withdrawals() -> Profile:
    return fold(None, [withdrawal(T0 + timedelta(weeks=w)) for w in range(6)])


def ask(profile: Profile | None, channel: str = "atm", n: int = 0, **context: str) -> Decision:
    at = T0 + timedelta(weeks=7, minutes=n)
    return decide(
        profile,
        DecisionRequest(
            customer_id="cust-1",
            touchpoint="atm-0042",
            channel=channel,  # type: ignore[arg-type]
            context=dict(context),
        ),
        prior=NO_PRIOR,
        config=CONFIG,
        decision_id=f"dec-{n}",
        at=at,
    )


def test_six_withdrawals_of_200_without_receipt_become_the_atm_default() -> None:
    decision = ask(six_weekly_withdrawals())
    [default] = decision.defaults
    assert default.id == "default:cash_withdrawal"
    assert default.values == {"amount": 200, "currency": "EUR", "receipt": False}
    assert default.reasons.en == "6 of your last 6 withdrawals were 200 EUR, no receipt"
    assert default.reasons.it == "6 dei tuoi ultimi 6 prelievi erano di 200 EUR, senza scontrino"
    assert 0.8 < default.confidence < 1


def test_no_default_before_the_habit_is_clear() -> None:
    mixed = [
        withdrawal(T0 + timedelta(days=d), amount=a) for d, a in enumerate([50, 200, 100, 200])
    ]
    assert usual_requests(fold(None, mixed), CONFIG) == []
    assert ask(fold(None, mixed[:2])).defaults == []


def test_eight_of_ten_is_a_habit_and_says_so() -> None:
    amounts = [200, 200, 50, 200, 200, 200, 100, 200, 200, 200]
    profile = fold(
        None, [withdrawal(T0 + timedelta(days=d), amount=a) for d, a in enumerate(amounts)]
    )
    [default] = ask(profile).defaults
    assert default.reasons.en.startswith("8 of your last 10 withdrawals were 200 EUR")


def test_defaults_are_for_this_kind_of_touchpoint_only() -> None:
    assert ask(six_weekly_withdrawals(), channel="web").defaults == []


def test_context_request_limits_the_defaults() -> None:
    profile = six_weekly_withdrawals()
    assert ask(profile, request="balance_enquiry").defaults == []
    assert len(ask(profile, request="cash_withdrawal").defaults) == 1


def decline(profile: Profile, decision: Decision, n: int) -> Profile:
    answer = outcome_event(
        decision,
        "default:cash_withdrawal",
        OutcomeKind.DECLINED,
        at=decision.decided_at + timedelta(seconds=30),
    )
    return fold(profile, [answer])


def test_a_default_declined_three_times_is_no_longer_offered() -> None:
    profile = six_weekly_withdrawals()
    for n in range(3):
        decision = ask(profile, n=n)
        assert decision.defaults, f"still offered before decline {n + 1}"
        profile = decline(profile, decision, n)
    assert ask(profile, n=10).defaults == []
    [habit] = usual_requests(profile, CONFIG, include_suppressed=True)
    assert habit.suppressed
    assert habit.declines == 3


def test_a_new_habit_can_form_after_declines() -> None:
    profile = six_weekly_withdrawals()
    for n in range(3):
        profile = decline(profile, ask(profile, n=n), n)
    later = T0 + timedelta(weeks=8)
    profile = fold(
        profile, [withdrawal(later + timedelta(days=d), amount=100, receipt=True) for d in range(8)]
    )
    [default] = ask(profile, n=99).defaults
    assert default.values == {"amount": 100, "currency": "EUR", "receipt": True}


def test_acceptance_resets_the_decline_count() -> None:
    profile = six_weekly_withdrawals()
    for n in range(2):
        profile = decline(profile, ask(profile, n=n), n)
    decision = ask(profile, n=5)
    profile = fold(
        profile,
        [
            outcome_event(
                decision, "default:cash_withdrawal", OutcomeKind.ACCEPTED, at=decision.decided_at
            )
        ],
    )
    profile = decline(profile, ask(profile, n=6), 6)
    assert ask(profile, n=7).defaults


def test_a_repeated_outcome_is_the_same_event() -> None:
    decision = ask(six_weekly_withdrawals())
    first = outcome_event(decision, "default:cash_withdrawal", OutcomeKind.DECLINED, at=T0)
    second = outcome_event(decision, "default:cash_withdrawal", OutcomeKind.DECLINED, at=T0)
    assert first.event_id == second.event_id


def test_an_outcome_for_an_item_the_decision_did_not_return_is_refused() -> None:
    with pytest.raises(UnknownOutcomeTarget):
        outcome_event(ask(six_weekly_withdrawals()), "default:top_up", OutcomeKind.ACCEPTED, at=T0)


def test_stated_receipt_preference_overrides_the_learned_value() -> None:
    profile = fold(None, [withdrawal(T0 + timedelta(days=d), receipt=True) for d in range(4)])
    profile = fold(profile, [event("preference_stated", at=T0, key="receipt", value=False)])
    [default] = ask(profile).defaults
    assert default.values["receipt"] is False
    assert "You asked for no paper receipt" in default.reasons.en
    assert "Hai chiesto di non ricevere lo scontrino" in default.reasons.it


def contacts(*channels: str) -> list:
    return [
        event("contact", channel=ch, at=T0 + timedelta(days=i)) for i, ch in enumerate(channels)
    ]


def test_learned_contact_channel_with_probability_and_confidence() -> None:
    profile = fold(None, contacts("sms", "sms", "sms", "email", "sms"))
    choice = contact_channel(profile, NO_PRIOR, at=T0 + timedelta(days=5), config=CONFIG)
    assert (choice.channel, choice.source) == ("sms", "learned")
    assert 0.5 < choice.probability < 0.8  # shrunk toward the (uniform) prior
    assert 0.6 < choice.confidence < 0.8  # about 4.9 / (4.9 + 2)


def test_stated_contact_channel_beats_a_learned_one() -> None:
    profile = fold(None, contacts("sms", "sms", "sms", "sms"))
    profile = fold(profile, [event("preference_stated", key="contact_channel", value="email")])
    decision = ask(profile)
    assert decision.channel is not None
    assert (decision.channel.channel, decision.channel.source) == ("email", "stated")
    assert decision.channel.probability == 1.0
    assert decision.channel.reasons.en == "You told us you prefer to be contacted by email"


def test_little_history_is_shrunk_toward_the_population() -> None:
    prior = ChannelPrior.from_counts({"contact": {"email": 80, "sms": 10, "call_center": 10}})
    one_sms = fold(None, contacts("sms"))
    choice = contact_channel(one_sms, prior, at=T0, config=CONFIG)
    assert choice.channel == "email"  # one SMS is not yet enough evidence
    many_sms = fold(None, contacts(*["sms"] * 12))
    assert (
        contact_channel(many_sms, prior, at=T0 + timedelta(days=12), config=CONFIG).channel == "sms"
    )


def test_unknown_customer_gets_the_population_choice_and_no_defaults() -> None:
    prior = ChannelPrior.from_counts({"contact": {"email": 3, "sms": 1}})
    decision = ask(None)
    assert decision.defaults == []
    assert not decision.known_customer
    decision = decide(
        None,
        DecisionRequest(customer_id="new", touchpoint="web", channel="web"),  # type: ignore[arg-type]
        prior=prior,
        config=CONFIG,
        decision_id="d",
        at=T0,
    )
    assert decision.channel is not None
    assert (decision.channel.channel, decision.channel.source) == ("email", "population")
