"""Next-best-action: contact policy, service before sales, caps, suppression, exploration."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.arbitration import AcceptanceRates, Exploration, Scored, select
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.consent import may_contact
from engine.decide import decide, exposure_events, outcome_event
from engine.decision import Decision, DecisionRequest
from engine.events import Event, OutcomeKind
from engine.fold import fold
from engine.next_best_action import DecisionPolicy
from engine.policy import SALES_KINDS, ContactPolicy
from engine.preferences import Purpose
from engine.profile import Profile
from tests.engine.builders import T0, event, withdrawal

CONFIG = EngineConfig()
CATALOGUE = load_catalogue(RETAIL_BANK_CATALOGUE)
GREEDY = DecisionPolicy(catalogue=CATALOGUE, exploration=Exploration(strategy="off"))
NOON = T0.replace(hour=12)
SALES = {a.id for a in CATALOGUE.actions if a.kind in SALES_KINDS}
PURPOSES = {a.id: a.purpose.value for a in CATALOGUE.actions}


def consent(
    purpose: str, status: str = "granted", channel: str | None = None, days: int = 0
) -> Event:
    attributes: dict[str, Any] = {"purpose": purpose, "status": status, "channel": channel}
    return Event(
        event_id=f"consent-{purpose}-{status}-{channel}-{days}",
        customer_id="cust-1",
        touchpoint="web",
        channel="web",  # type: ignore[arg-type]
        type="consent_changed",
        occurred_at=T0 + timedelta(days=days),  # type: ignore[arg-type]
        attributes=attributes,
    )


def ask(
    profile: Profile | None,
    *,
    at: datetime = NOON,
    channel: str = "web",
    n: int = 0,
    policy: DecisionPolicy = GREEDY,
) -> Decision:
    return decide(
        profile,
        DecisionRequest(customer_id="cust-1", touchpoint=f"{channel}-1", channel=channel),  # type: ignore[arg-type]
        prior=ChannelPrior(),
        config=CONFIG,
        decision_id=f"dec-{n}",
        at=at,
        policy=policy,
    )


def marketing_customer() -> Profile:
    """A premium customer of four months (a savings plan needs 90 days) who accepts marketing."""
    history = [withdrawal(T0 - timedelta(days=120 - 20 * d), amount=400) for d in range(7)]
    return fold(None, [*history, consent("marketing")])


def test_without_marketing_consent_no_sales_action_is_returned() -> None:
    decision = ask(fold(None, [withdrawal(T0 + timedelta(days=d)) for d in range(6)]))
    assert not {a.id for a in decision.actions} & SALES
    dropped = {c.action_id: c for c in decision.candidates if c.action_id in SALES}
    assert all(c.status == "dropped" for c in dropped.values())
    assert {r for c in dropped.values() for r in c.channel_refusals.values()} <= {"no_consent"}


def test_with_consent_sales_come_with_scores_channels_and_reasons() -> None:
    decision = ask(marketing_customer())
    assert decision.actions, "a consenting customer gets offers"
    first = decision.actions[0]
    assert first.propensity == 1.0  # exploration off: the ranking is certain
    assert first.score > 0
    assert first.reasons.en
    assert first.reasons.it
    assert [a.rank for a in decision.actions] == list(range(1, len(decision.actions) + 1))
    scored = [c for c in decision.candidates if c.status != "dropped"]
    factors = {"propensity", "value", "weight", "lever", "priority"}
    assert all(set(c.factors) == factors for c in scored)
    assert decision.catalogue_version == CATALOGUE.version


def test_service_before_sales_while_a_complaint_is_open() -> None:
    profile = fold(
        marketing_customer(),
        [
            event(
                "complaint_opened", at=T0 + timedelta(days=7), channel="call_center", case_id="c-1"
            )
        ],
    )
    decision = ask(profile, at=NOON + timedelta(days=8))
    assert decision.actions[0].id == "resolve_complaint" or "addresses:complaint" in (
        decision.actions[0].reason_codes
    )
    assert not {a.id for a in decision.actions} & SALES
    assert decision.open_problems == ["complaint"]
    assert "hai un reclamo aperto" in decision.actions[0].reasons.it
    blocked = [c for c in decision.candidates if c.dropped == "service_first"]
    assert {c.action_id for c in blocked} >= SALES
    resolved = fold(
        profile, [event("complaint_resolved", at=T0 + timedelta(days=9), case_id="c-1")]
    )
    assert {a.id for a in ask(resolved, at=NOON + timedelta(days=10)).actions} & SALES


def test_declined_twice_is_suppressed() -> None:
    profile = marketing_customer()
    target = ask(profile).actions[0].id
    for n in range(2):
        decision = ask(profile, n=n, at=NOON + timedelta(days=n))
        assert target in {a.id for a in decision.actions}
        profile = fold(
            profile, [outcome_event(decision, target, OutcomeKind.DECLINED, at=decision.decided_at)]
        )
    later = ask(profile, n=9, at=NOON + timedelta(days=3))
    assert target not in {a.id for a in later.actions}
    [trace] = [c for c in later.candidates if c.action_id == target]
    assert trace.dropped == "suppressed_after_declines"


def test_marketing_email_cap_two_per_week() -> None:
    policy = DecisionPolicy(
        catalogue=CATALOGUE, exploration=Exploration(strategy="off"), contact=ContactPolicy()
    )
    profile = fold(marketing_customer(), [consent("marketing", channel="email", days=1)])
    emails = 0
    for n in range(6):
        decision = ask(
            profile, channel="email", n=n, at=NOON + timedelta(days=2, hours=n), policy=policy
        )
        emails += sum(
            1 for a in decision.actions if a.channel == "email" and PURPOSES[a.id] == "marketing"
        )
        profile = fold(profile, exposure_events(decision, PURPOSES))
    assert emails == 2


def test_no_outbound_contact_in_quiet_hours() -> None:
    # On the phone with the call centre (the touchpoint itself is inbound), a customer who
    # consents to marketing by sms and email; quiet hours are [21, 8).
    profile = fold(marketing_customer(), [consent("marketing", channel="sms", days=1)])
    outbound = {"sms", "email", "mobile_app"}
    day = T0 + timedelta(days=2)

    for hour in (21, 23, 0, 7):
        night = ask(profile, channel="call_center", at=day.replace(hour=hour))
        assert night.actions, f"{hour}h: offers by other channels stay"
        assert not {a.channel for a in night.actions} & outbound, hour
        refusals = {r for c in night.candidates for r in c.channel_refusals.values()}
        assert refusals == {"quiet_hours"}, hour
    for hour in (8, 12, 20):
        by_day = ask(profile, channel="call_center", at=day.replace(hour=hour))
        assert {a.channel for a in by_day.actions} & {"sms", "email"}, hour
        assert not any(c.channel_refusals for c in by_day.candidates), hour


def test_epsilon_greedy_logs_the_exact_probability_of_each_pick() -> None:
    candidates = [
        Scored(action_id=f"a{i}", propensity=0.1 * (i + 1), value=10, weight=1, first=False)
        for i in range(4)
    ]
    exploration = Exploration(strategy="epsilon_greedy", epsilon=0.2, max_actions=1)
    rng = np.random.default_rng(7)
    picks = [select(candidates, exploration, rng)[0] for _ in range(20_000)]
    top = Counter(p.action_id for p in picks)
    assert abs(top["a3"] / len(picks) - (0.8 + 0.2 / 4)) < 0.01
    assert {round(p.probability, 6) for p in picks if p.action_id == "a3"} == {0.85}
    assert {round(p.probability, 6) for p in picks if p.action_id != "a3"} == {0.05}


def test_thompson_probabilities_match_pick_frequencies() -> None:
    candidates = [
        Scored(
            action_id=f"a{i}",
            propensity=0.1,
            value=10,
            weight=1,
            first=False,
            alpha=2 + 3 * i,
            beta=20,
        )
        for i in range(3)
    ]
    exploration = Exploration(strategy="thompson", max_actions=1, thompson_draws=2000)
    rng = np.random.default_rng(3)
    picks = [select(candidates, exploration, rng)[0] for _ in range(300)]
    frequency = Counter(p.action_id for p in picks)
    for pick in picks[:20]:
        assert abs(pick.probability - frequency[pick.action_id] / 300) < 0.08


def test_acceptance_rates_are_smoothed_by_segment() -> None:
    rates = AcceptanceRates.from_population(
        {
            "action:savings_plan:premium": {"shown": 200, "accepted": 60},
            "action:savings_plan:mass": {"shown": 10, "accepted": 0},
        }
    )
    assert 0.25 < rates.rate("savings_plan", "premium") < 0.3
    assert 0 < rates.rate("savings_plan", "mass") < rates.rate("savings_plan", "premium")
    assert rates.rate("never_shown", "mass") == 0.05


def test_the_objective_decides_between_a_likely_and_a_valuable_offer() -> None:
    likely = Scored(action_id="likely", propensity=0.6, value=5, weight=1, first=False)
    valuable = Scored(action_id="valuable", propensity=0.1, value=180, weight=1, first=False)
    off = Exploration(strategy="off")
    by_value = select([likely, valuable], off, np.random.default_rng(0))
    assert [p.action_id for p in by_value] == ["valuable", "likely"]
    accepting = [c.model_copy(update={"objective": "acceptance"}) for c in (likely, valuable)]
    by_acceptance = select(accepting, off, np.random.default_rng(0))
    assert [p.action_id for p in by_acceptance] == ["likely", "valuable"]
    assert accepting[0].priority == 0.6  # propensity x weight: the value is left out


def test_the_policy_objective_reaches_the_trace_and_the_version() -> None:
    policy = DecisionPolicy(
        catalogue=CATALOGUE, exploration=Exploration(strategy="off"), objective="acceptance"
    )
    decision = ask(marketing_customer(), policy=policy)
    scored = [c for c in decision.candidates if c.status != "dropped"]
    assert scored
    assert all(c.factors["lever"] == c.factors["weight"] for c in scored)
    assert all(
        c.factors["priority"] == c.factors["propensity"] * c.factors["weight"] for c in scored
    )
    assert decision.policy_version.endswith("/acceptance")
    assert ask(marketing_customer()).policy_version != decision.policy_version


# ---- the policy's promises hold under any interleaving ----

_steps = st.lists(
    st.sampled_from(
        [
            "withdrawal",
            "complaint",
            "resolve",
            "marketing_on",
            "marketing_off",
            "email_off",
            "service_off",
            "decide_web",
            "decide_email",
            "decide_sms",
        ]
    ),
    min_size=1,
    max_size=30,
)


@given(steps=_steps, explore=st.sampled_from(["off", "epsilon_greedy"]))
@settings(max_examples=120, deadline=None)
def test_no_decision_breaks_consent_caps_or_service_before_sales(
    steps: list[str], explore: str
) -> None:
    policy = DecisionPolicy(
        catalogue=CATALOGUE, exploration=Exploration(strategy=explore, epsilon=0.3)
    )  # type: ignore[arg-type]
    profile: Profile | None = None
    at = NOON
    delivered: list[tuple[datetime, str, str]] = []  # (time, channel, purpose)
    for n, step in enumerate(steps):
        at += timedelta(hours=7)
        new: list[Event] = []
        if step == "withdrawal":
            new = [withdrawal(at, amount=300, event_id=f"w{n}")]
        elif step == "complaint":
            new = [event("complaint_opened", at=at, channel="chat", case_id="c", event_id=f"c{n}")]
        elif step == "resolve":
            new = [event("complaint_resolved", at=at, case_id="c", event_id=f"r{n}")]
        elif step.endswith(("_on", "_off")):
            purpose = "service" if step == "service_off" else "marketing"
            channel = "email" if step == "email_off" else None
            status = "granted" if step.endswith("_on") else "revoked"
            new = [
                consent(purpose, status, channel).model_copy(
                    update={"occurred_at": at, "event_id": f"k{n}"}
                )
            ]
        if new:
            profile = fold(profile, new)
            continue
        decision = ask(profile, channel=step.removeprefix("decide_"), at=at, n=n, policy=policy)
        problems = bool(profile and profile.open_cases())
        for action in decision.actions:
            purpose = Purpose(PURPOSES[action.id])
            assert may_contact(profile, purpose, action.channel, CONFIG), "contact without consent"
            assert not (problems and action.id in SALES), "sales during an open problem"
            delivered.append((at, action.channel, purpose.value))
        if decision.actions:
            profile = fold(profile, exposure_events(decision, PURPOSES))
        for channel, limit in (("email", 2), ("sms", 1), (None, 4)):
            in_week = [
                d
                for d in delivered
                if d[0] > at - timedelta(days=7)
                and d[2] == "marketing"
                and (channel is None or d[1] == channel)
            ]
            assert len(in_week) <= limit, f"marketing cap on {channel or 'all channels'}"


def test_a_slate_never_breaks_a_cap_its_actions_keep_alone() -> None:
    # Three marketing emails are each allowed (no email delivered yet); together they would
    # break the cap of two marketing emails a week, so the third is not picked.
    from engine.catalogue import load_catalogue_text

    offers = "\n".join(
        f"""  - id: offer_{n}
    kind: sales
    purpose: marketing
    channels: [email]
    value: {100 - n}
    title: {{en: Offer {n}, it: Offerta {n}}}
    message: {{en: An offer for you., it: Un'offerta per te.}}"""
        for n in range(3)
    )
    catalogue = load_catalogue_text(f"version: caps-test\nactions:\n{offers}\n")
    policy = DecisionPolicy(catalogue=catalogue, exploration=Exploration(strategy="off"))
    profile = fold(None, [withdrawal(T0), consent("marketing")])
    decision = ask(profile, channel="web", at=NOON + timedelta(days=1), policy=policy)
    assert [a.id for a in decision.actions] == ["offer_0", "offer_1"]
    assert {a.channel for a in decision.actions} == {"email"}
    [third] = [c for c in decision.candidates if c.action_id == "offer_2"]
    assert third.status == "outranked"


def test_uncapped_deliveries_do_not_push_capped_ones_out_of_the_profile() -> None:
    def delivered(n: int, action: str, *, limited: bool) -> Event:
        return event(
            "action_exposed",
            at=T0 + timedelta(hours=n),
            event_id=f"x{n}",
            channel="atm",
            decision_id=f"d{n}",
            action_id=action,
            delivery_channel="atm",
            purpose="service",
            limited=limited,
        )

    capped = delivered(0, "contact_preferences_review", limited=True)
    atm_defaults = [delivered(n, "usual_withdrawal", limited=False) for n in range(1, 200)]
    profile = fold(None, [capped, *atm_defaults])
    assert [x.action_id for x in profile.exposures] == ["contact_preferences_review"]
    assert profile.event_count == 200
    assert profile.last_seen is None  # offers delivered are not the customer's activity
