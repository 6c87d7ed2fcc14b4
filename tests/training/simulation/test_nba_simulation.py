"""Next-best-action on the synthetic population: offers worth more than random ones, promises
kept, and the checks that say so able to fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.catalogue import RETAIL_BANK_CATALOGUE, Action, load_catalogue
from engine.config import EngineConfig
from engine.decision import ChosenAction, Reasons
from engine.events import Channel, Event, EventType
from engine.fold import fold
from engine.policy import ContactPolicy
from training.simulation.affinity import APPEAL, SHARED_TASTE
from training.simulation.checks import Delivery, Violations, check_offer
from training.simulation.nba import NbaSimulation, NbaSimulationReport, TooFewTouches
from training.simulation.policies import PolicyResult
from training.simulation.population import PopulationSpec

SPEC = PopulationSpec(customers=300, seed=11, start=datetime(2026, 1, 1, tzinfo=UTC))
CATALOGUE = load_catalogue(RETAIL_BANK_CATALOGUE)
AT = datetime(2026, 3, 2, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def one_offer() -> NbaSimulationReport:
    """One offer per decision: what each policy puts first is all the customer sees."""
    return NbaSimulation(SPEC, decisions=2_000, slate=1).run()


@pytest.fixture(scope="module")
def full_slates() -> PolicyResult:
    """Rapport as deployed: up to 3 actions a decision."""
    return NbaSimulation(SPEC, decisions=2_000).replay("rapport")


def test_every_catalogue_action_has_a_latent_appeal() -> None:
    assert {action.id for action in CATALOGUE.actions} == set(APPEAL) | set(SHARED_TASTE)


def test_the_policies_answer_the_same_moments(one_offer: NbaSimulationReport) -> None:
    assert one_offer.decisions == 2_000
    for result in (one_offer.rapport, one_offer.random, one_offer.oracle):
        assert 0.6 * one_offer.decisions < result.decisions_with_actions <= one_offer.decisions
        assert result.offers == result.decisions_with_actions  # one offer each


def test_no_policy_breaks_a_promise_with_one_offer(one_offer: NbaSimulationReport) -> None:
    for result in (one_offer.rapport, one_offer.random, one_offer.oracle, one_offer.oracle_value):
        assert result.violations == Violations(), result.policy


def test_rapport_offers_are_worth_far_more_than_random_ones(
    one_offer: NbaSimulationReport,
) -> None:
    rapport, random, oracle_value = one_offer.rapport, one_offer.random, one_offer.oracle_value
    assert rapport.expected_value_eur > 1.25 * random.expected_value_eur
    # Close to Rapport's own ranking with the latent affinities known.
    assert rapport.expected_value_eur > 0.85 * oracle_value.expected_value_eur
    assert rapport.expected_value_eur <= oracle_value.expected_value_eur


def test_choosing_matters_and_the_oracle_bounds_acceptance(
    one_offer: NbaSimulationReport,
) -> None:
    assert one_offer.oracle.acceptance_rate > one_offer.random.acceptance_rate + 0.05
    assert one_offer.rapport.acceptance_rate <= one_offer.oracle.acceptance_rate


@pytest.fixture(scope="module")
def acceptance_led() -> NbaSimulationReport:
    """One offer per decision, Rapport ranking by acceptance (propensity x weight)."""
    return NbaSimulation(SPEC, decisions=2_000, slate=1, objective="acceptance").run()


def test_ranking_by_acceptance_is_accepted_far_more_often_than_random(
    acceptance_led: NbaSimulationReport,
) -> None:
    rapport, random, oracle = (
        acceptance_led.rapport,
        acceptance_led.random,
        acceptance_led.oracle,
    )
    assert rapport.acceptance_rate > random.acceptance_rate + 0.03
    # Most of the way from random to the oracle that knows every customer's affinities.
    assert rapport.acceptance_rate - random.acceptance_rate > 0.6 * (
        oracle.acceptance_rate - random.acceptance_rate
    )
    assert rapport.violations == Violations()


def test_ranking_by_value_trades_acceptance_for_value(
    one_offer: NbaSimulationReport, acceptance_led: NbaSimulationReport
) -> None:
    by_value, by_acceptance = one_offer.rapport, acceptance_led.rapport
    assert by_value.expected_value_eur > 1.2 * by_acceptance.expected_value_eur
    assert by_acceptance.acceptance_rate > by_value.acceptance_rate + 0.03


def test_full_slates_put_service_first_and_contact_only_with_consent(
    full_slates: PolicyResult,
) -> None:
    assert full_slates.offers > 1.5 * full_slates.decisions_with_actions
    assert full_slates.violations.service_first == 0
    assert full_slates.violations.no_consent == 0


def test_full_slates_keep_the_caps(full_slates: PolicyResult) -> None:
    assert full_slates.violations.caps == 0


def test_the_simulation_is_deterministic() -> None:
    spec = PopulationSpec(customers=20, days=60, seed=3, start=datetime(2026, 1, 1, tzinfo=UTC))
    first, second = (NbaSimulation(spec, decisions=150).run() for _ in range(2))
    assert first.model_dump(exclude={"runtime_seconds"}) == second.model_dump(
        exclude={"runtime_seconds"}
    )


def test_too_few_touches_for_the_decisions_asked() -> None:
    spec = PopulationSpec(customers=2, days=30, seed=3, start=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(TooFewTouches, match="add customers"):
        NbaSimulation(spec, decisions=10_000).run()


# ---- the independent checks catch what they look for ----


def _action(action_id: str) -> Action:
    action = CATALOGUE.action(action_id)
    assert action is not None
    return action


def _offer(action: Action, channel: str) -> ChosenAction:
    text = Reasons(en="x", it="x")
    return ChosenAction(
        id=action.id,
        kind=action.kind.value,
        rank=1,
        score=0.0,
        propensity=1.0,
        channel=channel,
        title=text,
        message=text,
        reasons=text,
        reason_codes=[],
    )


def _event(event_type: EventType, days: float, **attributes: object) -> Event:
    return Event(
        event_id=f"{event_type.value}-{days}",
        customer_id="cust-1",
        touchpoint="web",
        channel=Channel.WEB,
        type=event_type,
        occurred_at=AT - timedelta(days=days),
        attributes=attributes,
    )


def _check(
    action_id: str, channel: str, events: list[Event], deliveries: list[Delivery]
) -> Violations:
    action = _action(action_id)
    return check_offer(
        _offer(action, channel),
        action,
        profile=fold(None, events) if events else None,
        deliveries=deliveries,
        at=AT,
        policy=ContactPolicy(),
        config=EngineConfig(),
    )


MARKETING = _event(EventType.CONSENT_CHANGED, 30, purpose="marketing", status="granted")


def test_checks_catch_sales_during_an_open_complaint() -> None:
    complaint = _event(EventType.COMPLAINT_OPENED, 2, case_id="case-1")
    assert _check("savings_plan", "web", [MARKETING, complaint], []).service_first == 1
    assert _check("resolve_complaint", "chat", [MARKETING, complaint], []).service_first == 0


def test_checks_catch_marketing_without_consent() -> None:
    assert _check("savings_plan", "email", [], []).no_consent == 1
    assert _check("savings_plan", "email", [MARKETING], []).no_consent == 0


def test_checks_catch_caps_cooldowns_and_frequency_caps() -> None:
    def sent(action_id: str, days: float, channel: str = "email") -> Delivery:
        return Delivery(
            at=AT - timedelta(days=days),
            action_id=action_id,
            channel=channel,
            purpose=_action(action_id).purpose,
        )

    assert _check("savings_plan", "web", [MARKETING], [sent("savings_plan", 29)]).caps == 1
    assert _check("savings_plan", "web", [MARKETING], [sent("savings_plan", 31)]).caps == 0
    two_emails = [sent("travel_insurance", 1), sent("credit_card_upgrade", 6.9)]
    assert _check("savings_plan", "email", [MARKETING], two_emails).caps == 1
    assert _check("savings_plan", "web", [MARKETING], two_emails).caps == 0
