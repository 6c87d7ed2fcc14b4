"""Amounts that vary form approximate habits; rhythms decide when; every habit is explained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import decide
from engine.decision import Decision, DecisionRequest
from engine.fold import fold
from engine.habits import usual_requests
from engine.profile import Profile
from tests.engine.builders import T0, event, withdrawal

CONFIG = EngineConfig()
NO_PRIOR = ChannelPrior()
BILLS = ("61.20", "63.80", "62.45", "60.90", "64.10")


def bill(at: datetime, amount: str, currency: str = "EUR") -> Any:
    return event(
        "request",
        at=at,
        channel="web",
        request="bill_payment",
        amount=Decimal(amount),
        currency=currency,
    )


def monthly_bills(days: tuple[int, ...] = (1, 2, 30, 1, 3)) -> Profile:
    # Around the 1st: Feb 1, Mar 2, Mar 30, May 1, Jun 3 (2026).
    months = [(2, days[0]), (3, days[1]), (3, days[2]), (5, days[3]), (6, days[4])]
    return fold(
        None,
        [
            bill(datetime(2026, m, d, 10, tzinfo=UTC), amount)
            for (m, d), amount in zip(months, BILLS, strict=True)
        ],
    )


def ask(
    profile: Profile, at: datetime, channel: str = "web", config: EngineConfig = CONFIG, **ctx: Any
) -> Decision:
    return decide(
        profile,
        DecisionRequest(
            customer_id="cust-1",
            touchpoint=f"{channel}-1",
            channel=channel,  # type: ignore[arg-type]
            context=ctx,
        ),
        prior=NO_PRIOR,
        config=config,
        decision_id="dec-1",
        at=at,
    )


def test_bills_that_vary_form_one_approximate_habit_offered_near_the_1st() -> None:
    decision = ask(monthly_bills(), datetime(2026, 7, 1, 9, tzinfo=UTC))
    [default] = decision.defaults
    assert default.values == {"amount": 62, "currency": "EUR"}
    assert default.reasons.en == (
        "5 of your last 5 bill payments were about 62 EUR, around the 1st of each month"
    )
    assert default.reasons.it == (
        "5 dei tuoi ultimi 5 pagamenti erano di circa 62 EUR, intorno al giorno 1 di ogni mese"
    )
    [trace] = decision.habits
    assert (trace.status, trace.kind, trace.rhythm, trace.due) == (
        "offered",
        "approximate",
        "monthly:1",
        True,
    )


def test_a_timed_habit_is_not_offered_mid_month_and_the_trace_says_why() -> None:
    decision = ask(monthly_bills(), datetime(2026, 6, 15, 9, tzinfo=UTC))
    assert decision.defaults == []
    [trace] = decision.habits
    assert trace.status == "not_due"
    assert not trace.offered
    assert trace.reasons.en == "Not offered: not due yet (usually around the 1st of each month)"
    assert trace.reasons.it.startswith("Non proposto: non ancora il momento")


def test_a_touchpoint_about_to_make_the_request_gets_it_whatever_the_day() -> None:
    decision = ask(monthly_bills(), datetime(2026, 6, 15, 9, tzinfo=UTC), request="bill_payment")
    [default] = decision.defaults
    assert default.values["amount"] == 62


def test_other_values_must_match_exactly() -> None:
    # Same amounts, but the receipt differs every other time: no habit of 3 in 5 can form.
    events = [
        withdrawal(T0 + timedelta(days=3 * i), amount=a, receipt=i % 2 == 0)
        for i, a in enumerate([100, 105, 98, 102, 101])
    ]
    [habit] = usual_requests(fold(None, events), CONFIG)
    assert habit.values["receipt"] is True
    assert habit.matches == 3
    assert habit.kind == "approximate"
    different_currency = [
        bill(T0 + timedelta(days=i), a, currency="USD" if i % 2 else "EUR")
        for i, a in enumerate(["50", "51", "52", "53", "54", "55"])
    ]
    assert usual_requests(fold(None, different_currency), CONFIG) == []


def test_round_tens_stay_round_tens() -> None:
    events = [
        withdrawal(T0 + timedelta(days=3 * i), amount=a)
        for i, a in enumerate([40, 50, 50, 40, 50, 60])
    ]
    [habit] = usual_requests(fold(None, events), EngineConfig(habit_amount_tolerance=0.5))
    assert habit.values["amount"] % 10 == 0
    assert habit.kind == "approximate"


def test_the_absolute_floor_joins_small_amounts() -> None:
    top_ups = [
        event(
            "request",
            at=T0 + timedelta(weeks=w),
            channel="mobile_app",
            request="top_up",
            amount=Decimal(a),
            currency="EUR",
        )
        for w, a in enumerate(["19", "20", "21", "20.50", "19.50"])
    ]
    [habit] = usual_requests(fold(None, top_ups), CONFIG, at=T0 + timedelta(weeks=5))
    assert (habit.kind, habit.values["amount"], habit.matches) == ("approximate", 20, 5)
    assert habit.rhythm is not None
    assert habit.rhythm.period == "weekly"
    assert habit.due is True
    strict = EngineConfig(habit_amount_floor=0.5, habit_amount_tolerance=0.01)
    assert usual_requests(fold(None, top_ups), strict) == []


def test_exact_repeats_keep_their_wording_and_are_not_timed() -> None:
    profile = fold(None, [withdrawal(T0 + timedelta(weeks=w)) for w in range(6)])
    off_rhythm = T0 + timedelta(weeks=7, days=3)
    decision = ask(profile, off_rhythm, channel="atm")
    [default] = decision.defaults
    assert default.reasons.en == "6 of your last 6 withdrawals were 200 EUR, no receipt"
    [trace] = decision.habits
    assert trace.kind == "exact"
    assert trace.rhythm is None  # not looked for on the decision path: it would not time it
    [habit] = usual_requests(profile, CONFIG, at=off_rhythm)
    assert habit.rhythm is not None
    assert (habit.rhythm.period, habit.rhythm.day, habit.due) == ("weekly", 0, False)
    assert not habit.timed


def test_the_trace_explains_habits_below_count_and_filtered_by_request() -> None:
    events = [withdrawal(T0 + timedelta(days=d)) for d in range(2)] + [
        bill(T0 + timedelta(days=d), "30") for d in range(4)
    ]
    profile = fold(None, events)
    atm = ask(profile, T0 + timedelta(days=9), channel="atm")
    [trace] = atm.habits
    assert trace.status == "below_count"
    assert atm.defaults == []
    assert trace.reasons.en == (
        "Not offered: 2 of your last 2 withdrawals match, at least 3 needed"
    )
    web = ask(profile, T0 + timedelta(days=9), request="transfer")
    [trace] = web.habits
    assert trace.status == "filtered_by_request"
    assert trace.reasons.en == "Not offered: this touchpoint asked only for transfers"


def test_the_trace_explains_a_share_too_small() -> None:
    events = [
        withdrawal(T0 + timedelta(days=d), amount=a)
        for d, a in enumerate([200, 200, 200, 50, 1000, 20, 500])
    ]
    [trace] = ask(fold(None, events), T0 + timedelta(days=9), channel="atm").habits
    assert trace.status == "below_share"
    assert trace.reasons.it == (
        "Non proposto: 3 dei tuoi ultimi 7 prelievi coincidono, meno del 60%"
    )


class FixedAcceptance:
    """A scorer with one opinion on every default (the shape a served model has)."""

    model_version: str | None = "test-model/1"

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def action_posteriors(self, action_ids: Any, **_: Any) -> list[tuple[float, float]]:
        return [(1.0, 1.0) for _ in action_ids]

    def default_acceptance(self, habits: Any, **_: Any) -> list[float] | None:
        return [self.probability for _ in habits]


def test_the_trace_gives_both_numbers_when_the_model_gates_a_default() -> None:
    profile = fold(None, [withdrawal(T0 + timedelta(days=d)) for d in range(4)])
    request = DecisionRequest(customer_id="cust-1", touchpoint="atm-1", channel="atm")  # type: ignore[arg-type]
    decision = decide(
        profile,
        request,
        prior=NO_PRIOR,
        config=CONFIG,
        decision_id="dec-2",
        at=T0 + timedelta(days=5),
        scorer=FixedAcceptance(0.31),
    )
    assert decision.defaults == []
    [trace] = decision.habits
    assert (trace.status, trace.acceptance, trace.threshold) == ("below_acceptance", 0.31, 0.5)
    assert "31%" in trace.reasons.en
    assert "50%" in trace.reasons.en


def test_the_trace_counts_the_declines_of_a_suppressed_default() -> None:
    from engine.decide import outcome_event
    from engine.events import OutcomeKind

    profile = fold(None, [withdrawal(T0 + timedelta(days=d)) for d in range(4)])
    for n in range(3):
        decision = ask(profile, T0 + timedelta(days=5, minutes=n), channel="atm")
        answer = outcome_event(
            decision.model_copy(update={"decision_id": f"d{n}"}),
            "default:cash_withdrawal",
            OutcomeKind.DECLINED,
            at=decision.decided_at + timedelta(seconds=30),
        )
        profile = fold(profile, [answer])
    decision = ask(profile, T0 + timedelta(days=6), channel="atm")
    [trace] = decision.habits
    assert (trace.status, trace.declines) == ("suppressed_after_declines", 3)
    assert trace.reasons.en == ("Not offered: you declined it 3 times since you last accepted it")


def test_an_approximate_default_declined_three_times_is_suppressed() -> None:
    from engine.decide import outcome_event
    from engine.events import OutcomeKind

    profile = monthly_bills()
    due = datetime(2026, 7, 1, 9, tzinfo=UTC)
    for n in range(3):
        decision = ask(profile, due + timedelta(minutes=n))
        [default] = decision.defaults
        answer = outcome_event(
            decision.model_copy(update={"decision_id": f"bill-{n}"}),
            default.id,
            OutcomeKind.DECLINED,
            at=decision.decided_at + timedelta(seconds=30),
        )
        profile = fold(profile, [answer])
    decision = ask(profile, due + timedelta(hours=1))
    assert decision.defaults == []
    [trace] = decision.habits
    assert (trace.kind, trace.status, trace.declines) == (
        "approximate",
        "suppressed_after_declines",
        3,
    )


def test_a_due_payment_ranks_the_usual_payment_service_action() -> None:
    from api.settings import Settings

    policy = Settings().decision_policy()
    profile = monthly_bills()

    def actions(at: datetime) -> list[str]:
        decision = decide(
            profile,
            DecisionRequest(customer_id="cust-1", touchpoint="web-1", channel="web"),  # type: ignore[arg-type]
            prior=NO_PRIOR,
            config=CONFIG,
            decision_id="dec-due",
            at=at,
            policy=policy,
        )
        return [action.id for action in decision.actions]

    assert "usual_payment_due" in actions(datetime(2026, 7, 1, 9, tzinfo=UTC))
    assert "usual_payment_due" not in actions(datetime(2026, 6, 15, 9, tzinfo=UTC))
