"""Facts: what conditions see of a customer, computed from real folded profiles."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.decision import DecisionRequest
from engine.events import Event
from engine.facts import FIELDS, Facts, facts_for
from engine.fold import fold
from tests.engine.builders import T0, event

CONFIG = EngineConfig()
LOW_FEEDBACK_MAX_SCORE = CONFIG.low_feedback_max_score
LOW_FEEDBACK_DAYS = CONFIG.low_feedback_days


def facts_at(events: list[Event], channel: str = "atm", days: float = 50, **context: Any) -> Facts:
    request = DecisionRequest(
        customer_id="cust-1", touchpoint=f"{channel}-0042", channel=channel, context=context
    )
    profile = fold(None, events) if events else None
    return facts_for(profile, request, at=T0 + timedelta(days=days), config=CONFIG)


def weekly(amount: int, weeks: int = 6, currency: str = "EUR", **kw: Any) -> list[Event]:
    return [
        event("request", at=T0 + timedelta(weeks=w), request="cash_withdrawal", amount=amount,
              currency=currency, receipt=False, **kw)
        for w in range(weeks)
    ]  # fmt: skip


def test_an_unknown_customer_has_only_context_facts() -> None:
    facts = facts_at([], "web", request="top_up", products=["mortgage", 7], hour_hint=3)
    assert facts.values["profile.known"] is False
    assert facts.values["profile.event_count"] == 0
    assert facts.values["profile.days_since_first_seen"] is None
    assert facts.values["profile.value_segment"] == "mass"
    assert facts.values["profile.needs_segments"] == frozenset()
    assert facts.values["profile.avg_withdrawal_eur"] is None
    assert facts.values["context.channel"] == "web"
    assert facts.values["context.request"] == "top_up"
    assert facts.values["context.products"] == frozenset({"mortgage"})
    assert facts.values["context.market.mortgage_rate_drop_bp"] is None
    assert (facts.values["context.hour"], facts.values["context.weekday"]) == (9, 2)  # a Tuesday
    assert (facts.open_problems, facts.habits) == (frozenset(), frozenset())
    assert set(facts.values) == set(FIELDS)


def test_a_weekly_atm_withdrawal_makes_a_cash_user_with_a_habit() -> None:
    facts = facts_at(weekly(200))
    assert facts.values["profile.known"] is True
    assert facts.values["profile.event_count"] == 6
    assert facts.values["profile.days_since_first_seen"] == 50
    assert facts.values["profile.days_since_last_seen"] == 15
    assert facts.values["profile.avg_withdrawal_eur"] == 200
    assert facts.values["profile.value_segment"] == "affluent"
    assert facts.values["profile.needs_segments"] == frozenset({"cash_user"})
    assert facts.values["profile.uses_channel"] == frozenset({"atm"})
    assert facts.values["profile.request_kinds"] == frozenset({"cash_withdrawal"})
    decayed = sum(0.5 ** ((50 - 7 * week) / 90) for week in range(6))  # half-life 90 days
    assert facts.values["profile.channel_usage.atm"] == pytest.approx(decayed)
    assert facts.values["profile.channel_usage.web"] == 0
    assert facts.habits == frozenset({"cash_withdrawal"})


@pytest.mark.parametrize(
    ("amount", "segment"), [(50, "mass"), (150, "affluent"), (300, "premium"), (400, "premium")]
)
def test_the_value_segment_follows_the_usual_withdrawal(amount: int, segment: str) -> None:
    assert facts_at(weekly(amount)).values["profile.value_segment"] == segment


def test_needs_segments_from_channels_and_currencies() -> None:
    digital = [*weekly(50, weeks=2, channel="mobile_app"), *weekly(50, weeks=2, channel="web")]
    assisted = weekly(50, weeks=3, channel="branch")
    abroad = weekly(100, weeks=1, currency="USD")
    assert facts_at(digital).values["profile.needs_segments"] == frozenset({"digital", "cash_user"})
    assert facts_at(assisted).values["profile.needs_segments"] == frozenset(
        {"assisted", "cash_user"}
    )
    assert facts_at(abroad).values["profile.needs_segments"] == frozenset({"traveller"})
    assert facts_at(abroad).values["profile.avg_withdrawal_eur"] is None


def test_without_profiling_consent_there_are_no_segments() -> None:
    revoked = event("consent_changed", at=T0 + timedelta(days=45), channel="web",
                    purpose="profiling", status="revoked")  # fmt: skip
    facts = facts_at([*weekly(400), revoked])
    assert facts.values["profile.value_segment"] == "mass"
    assert facts.values["profile.needs_segments"] == frozenset()
    assert facts.habits == frozenset()


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        (None, "complaint"),
        ("rude_service", "complaint"),
        ("failed_payment", "failed_payment"),
        ("app_outage", "outage"),
        ("outage", "outage"),
    ],
)
def test_open_cases_are_problems_by_topic(topic: str | None, kind: str) -> None:
    opened = event("complaint_opened", at=T0, channel="call_center", case_id="c-1",
                   **({"topic": topic} if topic else {}))  # fmt: skip
    facts = facts_at([opened])
    assert facts.open_problems == frozenset({kind})
    assert facts.values["profile.open_case_count"] == 1
    closed = event("complaint_resolved", at=T0 + timedelta(days=2), channel="call_center",
                   case_id="c-1")  # fmt: skip
    assert facts_at([opened, closed]).open_problems == frozenset()


def test_a_low_score_is_an_open_problem_for_a_month_or_until_a_better_one() -> None:
    low = event("feedback", at=T0, channel="branch", score=LOW_FEEDBACK_MAX_SCORE)
    better = event("feedback", at=T0 + timedelta(days=3), channel="web", score=9)
    assert facts_at([low], days=10).open_problems == frozenset({"low_feedback"})
    assert facts_at([low], days=10).values["profile.latest_feedback_score"] == 4
    assert facts_at([low], days=LOW_FEEDBACK_DAYS + 1).open_problems == frozenset()
    assert facts_at([low, better], days=10).open_problems == frozenset()
    fair = event("feedback", at=T0, channel="branch", score=LOW_FEEDBACK_MAX_SCORE + 1)
    assert facts_at([fair], days=10).open_problems == frozenset()


def test_stated_preferences_and_market_context() -> None:
    stated = [
        event("preference_stated", channel="web", key="statements", value="paperless"),
        event("preference_stated", channel="web", key="receipt", value=False),
    ]
    facts = facts_at(stated, market={"mortgage_rate_drop_bp": 30})
    assert facts.values["profile.stated.statements"] == "paperless"
    assert facts.values["profile.stated.receipt"] is False
    assert facts.values["profile.stated.contact_channel"] is None
    assert facts.values["context.market.mortgage_rate_drop_bp"] == 30
    for junk in ("30", True, float("inf"), None):
        market = {"mortgage_rate_drop_bp": junk}
        assert facts_at(stated, market=market).values[
            "context.market.mortgage_rate_drop_bp"
        ] is None  # fmt: skip
