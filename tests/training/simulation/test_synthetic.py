"""The synthetic population: seeded, well-formed, and faithful to its own ground truth."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from engine.events import CONTACT_CHANNELS, Channel, Event, EventType, RequestAttributes
from engine.fold import fold
from engine.profile import RequestRecord
from training.simulation.population import (
    CustomerTruth,
    Population,
    PopulationSpec,
    generate_population,
    iter_customer_histories,
)

START = datetime(2024, 1, 1, tzinfo=UTC)
TOUCHPOINTS = {
    Channel.ATM: r"atm-\d{4}",
    Channel.WEB: r"web",
    Channel.MOBILE_APP: r"app-(ios|android)",
    Channel.CALL_CENTER: r"cc-agent-\d{3}",
    Channel.BRANCH: r"branch-[a-z]+-\d{2}",
    Channel.EMAIL: r"email",
    Channel.SMS: r"sms",
    Channel.CHAT: r"chat",
}


@pytest.fixture(scope="module")
def population() -> Population:
    return generate_population(PopulationSpec(customers=300, start=START, seed=11))


@pytest.fixture(scope="module")
def troubled() -> Population:
    """Many complaints over two months that start mid-afternoon in a non-UTC zone."""
    start = datetime(2024, 3, 10, 17, 45, 30, tzinfo=timezone(timedelta(hours=2)))
    spec = PopulationSpec(customers=120, start=start, days=60, seed=5, complaints_per_month=1.5)
    return generate_population(spec)


@pytest.fixture(scope="module")
def by_customer(population: Population) -> dict[str, list[Event]]:
    return population.events_by_customer()


def _usual_request_values(event: Event) -> dict[str, object]:
    """A request's values as the engine reads them for a habit."""
    attributes = event.typed
    assert isinstance(attributes, RequestAttributes)
    record = RequestRecord(
        event_id=event.event_id,
        at=event.occurred_at,
        amount=attributes.amount,
        currency=attributes.currency,
        receipt=attributes.receipt,
        options=dict(attributes.options),
    )
    return record.values()


def test_same_spec_gives_the_same_population() -> None:
    spec = PopulationSpec(customers=40, start=START, days=60, seed=3)
    first, second = generate_population(spec), generate_population(spec)
    assert first.events == second.events
    assert first.truth == second.truth


def test_different_seeds_give_different_populations() -> None:
    first = generate_population(PopulationSpec(customers=40, start=START, days=60, seed=3))
    second = generate_population(PopulationSpec(customers=40, start=START, days=60, seed=4))
    assert first.truth != second.truth
    assert [e.occurred_at for e in first.events] != [e.occurred_at for e in second.events]


def test_histories_stream_the_same_customers_and_events(population: Population) -> None:
    histories = list(iter_customer_histories(population.spec))
    assert {h.truth.customer_id: h.truth for h in histories} == population.truth
    for history in histories:
        keys = [(event.occurred_at, event.event_id) for event in history.events]
        assert keys == sorted(keys)
    streamed = sorted(
        (event for history in histories for event in history.events),
        key=lambda event: (event.occurred_at, event.event_id),
    )
    assert streamed == population.events


@pytest.mark.parametrize("name", ["population", "troubled"])
def test_events_are_sorted_unique_and_within_the_period(
    name: str, request: pytest.FixtureRequest
) -> None:
    population: Population = request.getfixturevalue(name)
    spec, events = population.spec, population.events
    keys = [(event.occurred_at, event.event_id) for event in events]
    assert keys == sorted(keys)
    assert len({event.event_id for event in events}) == len(events)
    assert all(event.event_id.startswith(f"syn-{spec.seed}-") for event in events)
    assert all(spec.start <= event.occurred_at < spec.end for event in events)
    assert all(event.occurred_at.utcoffset() == timedelta(0) for event in events)
    assert {event.customer_id for event in events} <= set(population.truth)


def test_events_survive_a_json_round_trip(troubled: Population) -> None:
    for event in troubled.events:
        assert Event.model_validate_json(event.model_dump_json()) == event


def test_ids_and_touchpoints_look_real(population: Population) -> None:
    assert all(re.fullmatch(r"cust-\d{6}", customer_id) for customer_id in population.truth)
    for event in population.events:
        assert re.fullmatch(TOUCHPOINTS[event.channel], event.touchpoint), event


def test_staffed_channels_are_used_in_opening_hours(population: Population) -> None:
    opening = {Channel.BRANCH: range(8, 16), Channel.CALL_CENTER: range(8, 21)}
    for event in population.events:
        if event.channel in opening and event.type is not EventType.FEEDBACK:
            assert event.occurred_at.hour in opening[event.channel], event


def test_contacts_mostly_use_the_preferred_channel(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    contact_types = {EventType.CONTACT, EventType.COMPLAINT_OPENED}
    matches = []
    for customer_id, events in by_customer.items():
        channels = Counter(e.channel for e in events if e.type in contact_types)
        assert set(channels) <= set(CONTACT_CHANNELS)
        if channels.total() >= 5:
            modal = channels.most_common(1)[0][0]
            matches.append(modal == population.truth[customer_id].preferred_contact_channel)
    assert len(matches) >= 100
    assert sum(matches) / len(matches) >= 0.7


def test_truth_distributions_are_distributions(population: Population) -> None:
    for truth in population.truth.values():
        contact = truth.contact_channels
        assert sum(contact.values()) == pytest.approx(1.0)
        assert max(contact, key=lambda channel: contact[channel]) == (
            truth.preferred_contact_channel
        )
        assert 0.6 <= contact[truth.preferred_contact_channel] <= 0.85
        for shares in truth.request_channels.values():
            assert sum(shares.values()) == pytest.approx(1.0)
        assert set(truth.request_channels["cash_withdrawal"]) == {Channel.ATM, Channel.BRANCH}


def test_atm_withdrawals_follow_the_habit_except_for_noise(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    matched = total = 0
    for customer_id, events in by_customer.items():
        truth = population.truth[customer_id]
        for event in events:
            if event.channel is Channel.ATM and event.attributes.get("request") == (
                "cash_withdrawal"
            ):
                usual = truth.usual_values_at("cash_withdrawal", Channel.ATM, event.occurred_at)
                assert usual is not None
                matched += _usual_request_values(event) == usual
                total += 1
    assert total > 3_000
    assert matched / total == pytest.approx(1 - population.spec.habit_noise, abs=0.03)


def test_top_ups_in_the_app_follow_the_habit(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    matched = total = 0
    for customer_id, events in by_customer.items():
        truth = population.truth[customer_id]
        for event in events:
            if event.channel is Channel.MOBILE_APP and event.attributes.get("request") == "top_up":
                usual = truth.usual_values_at("top_up", Channel.MOBILE_APP, event.occurred_at)
                matched += _usual_request_values(event) == usual
                total += 1
    assert total > 500
    assert matched / total == pytest.approx(1 - population.spec.habit_noise, abs=0.05)


def test_activity_varies_between_customers(by_customer: dict[str, list[Event]]) -> None:
    withdrawals = [
        sum(e.attributes.get("request") == "cash_withdrawal" for e in events)
        for events in by_customer.values()
    ]
    assert min(withdrawals) < 10
    assert max(withdrawals) > 30


def test_some_customers_change_a_habit(population: Population) -> None:
    changed = [t for t in population.truth.values() if t.life_change_at is not None]
    assert 0.08 <= len(changed) / len(population.truth) <= 0.25
    for truth in changed:
        assert truth.life_change_at is not None
        before = [h for h in truth.habits if h.end == truth.life_change_at]
        after = [h for h in truth.habits if h.start == truth.life_change_at]
        assert len(before) == len(after) == 1
        assert (before[0].request, before[0].channel) == (after[0].request, after[0].channel)
        assert before[0].values != after[0].values


def test_usual_values_follow_the_life_change(population: Population) -> None:
    truth = next(t for t in population.truth.values() if t.life_change_at is not None)
    assert truth.life_change_at is not None
    after = next(h for h in truth.habits if h.start == truth.life_change_at)
    before = next(h for h in truth.habits if h.end == truth.life_change_at)
    moment = timedelta(seconds=1)
    assert truth.usual_values_at(after.request, after.channel, after.start) == after.values
    assert truth.usual_values_at(after.request, after.channel, after.start - moment) == (
        before.values
    )
    assert truth.usual_values_at(after.request, after.channel, after.end) is None
    assert truth.usual_values_at("balance_enquiry", Channel.WEB, after.start) is None


def test_complaints_open_and_resolve_as_the_truth_says(troubled: Population) -> None:
    cases = [case for truth in troubled.truth.values() for case in truth.complaints]
    seen: dict[tuple[EventType, str], datetime] = {}
    for event in troubled.events:
        if event.type in (EventType.COMPLAINT_OPENED, EventType.COMPLAINT_RESOLVED):
            seen[(event.type, event.attributes["case_id"])] = event.occurred_at
    for case in cases:
        assert seen[(EventType.COMPLAINT_OPENED, case.case_id)] == case.opened_at
        resolved = seen.get((EventType.COMPLAINT_RESOLVED, case.case_id))
        assert resolved == case.resolved_at
        assert resolved is None or resolved > case.opened_at
    assert len(seen) == len(cases) + sum(case.resolved_at is not None for case in cases)
    assert any(case.resolved_at is None for case in cases)
    assert sum(case.resolved_at is not None for case in cases) > len(cases) / 2


def test_feedback_is_lower_around_complaints(troubled: Population) -> None:
    around: list[int] = []
    otherwise: list[int] = []
    for event in troubled.events:
        if event.type is EventType.FEEDBACK:
            truth = troubled.truth[event.customer_id]
            weighs = truth.complaint_weighs_at(event.occurred_at, timedelta(days=14))
            (around if weighs else otherwise).append(event.attributes["score"])
    assert len(around) >= 30
    assert len(otherwise) >= 30
    assert sum(otherwise) / len(otherwise) - sum(around) / len(around) > 2.0


def test_stated_preferences_appear_early_as_events(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    stated = [t for t in population.truth.values() if t.stated_contact_channel is not None]
    assert 0.04 <= len(stated) / len(population.truth) <= 0.18
    for truth in population.truth.values():
        statements = [
            e for e in by_customer[truth.customer_id] if e.type is EventType.PREFERENCE_STATED
        ]
        if truth.stated_contact_channel is None:
            assert statements == []
            continue
        (statement,) = statements
        assert statement.attributes == {
            "key": "contact_channel",
            "value": truth.stated_contact_channel.value,
        }
        assert statement.occurred_at == truth.stated_at
        assert statement.occurred_at < population.spec.start + timedelta(days=14)


def test_folding_a_customer_counts_every_event(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    for customer_id in sorted(by_customer)[:60]:
        events = by_customer[customer_id]
        profile = fold(None, events)
        assert profile.event_count == len(events)
        truth: CustomerTruth = population.truth[customer_id]
        assert {case.case_id for case in profile.open_cases()} == {
            case.case_id for case in truth.complaints if case.resolved_at is None
        }


def test_spec_refuses_naive_times_and_unknown_rates() -> None:
    with pytest.raises(ValidationError):
        PopulationSpec(customers=1, start=datetime(2024, 1, 1), seed=1)
    with pytest.raises(ValidationError):
        PopulationSpec.model_validate(
            {"customers": 1, "start": START, "seed": 1, "churn_rate": 0.1}
        )
    with pytest.raises(ValidationError):
        PopulationSpec(customers=1, start=START, seed=1, preferred_contact_mass=(0.9, 0.6))


# ---- what next-best-action needs: consents, travel, products, affinities ----


def test_latent_extras_leave_the_other_events_unchanged() -> None:
    """They come from a generator of their own: changing their rates changes nothing else."""
    base = PopulationSpec(customers=60, start=START, days=90, seed=3)
    other = base.model_copy(
        update={"marketing_consent_share": 0.9, "traveller_share": (0.9, 0.9, 0.9)}
    )
    first, second = generate_population(base), generate_population(other)

    def main_events(population: Population) -> list[Event]:
        latent = f"syn-{population.spec.seed}-x"
        return [event for event in population.events if not event.event_id.startswith(latent)]

    assert main_events(first) == main_events(second)
    assert len(second.events) > len(first.events)


def test_consents_appear_as_events(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    truths = population.truth.values()
    marketing = [t for t in truths if any(c.purpose.value == "marketing" for c in t.consents)]
    assert 0.4 <= len(marketing) / len(population.truth) <= 0.6
    revoking = [t for t in truths if any(c.purpose.value == "profiling" for c in t.consents)]
    assert 0 < len(revoking) / len(population.truth) <= 0.1
    for truth in truths:
        stated = [
            (e.occurred_at, e.attributes)
            for e in by_customer[truth.customer_id]
            if e.type is EventType.CONSENT_CHANGED
        ]
        assert stated == [
            (
                change.at,
                {
                    "purpose": change.purpose.value,
                    "status": change.status.value,
                    "channel": change.channel.value if change.channel else None,
                },
            )
            for change in truth.consents
        ]


def test_currency_orders_come_only_before_trips(
    population: Population, by_customer: dict[str, list[Event]]
) -> None:
    ordering = 0
    for truth in population.truth.values():
        orders = [
            e
            for e in by_customer[truth.customer_id]
            if e.attributes.get("request") == "foreign_currency_order"
        ]
        assert truth.traits.traveller or not orders
        for order in orders:
            assert order.attributes["currency"] != "EUR"
            assert any(
                timedelta(days=1) < trip - order.occurred_at < timedelta(days=12)
                for trip in truth.trips
            )
        ordering += bool(orders)
    travellers = sum(truth.traits.traveller for truth in population.truth.values())
    assert 0 < ordering < travellers  # travel is only partly visible


def test_affinities_follow_the_latent_traits(population: Population) -> None:
    def mean_affinity(action_id: str, keep: Callable[[CustomerTruth], bool]) -> float:
        values = [t.action_affinity[action_id] for t in population.truth.values() if keep(t)]
        return sum(values) / len(values)

    def in_tier(tier: str) -> Callable[[CustomerTruth], bool]:
        return lambda truth: truth.traits.value_tier == tier

    savings = [mean_affinity("savings_plan", in_tier(t)) for t in ("mass", "affluent", "premium")]
    assert savings == sorted(savings)
    travellers = mean_affinity("travel_insurance", lambda t: t.traits.traveller)
    others = mean_affinity("travel_insurance", lambda t: not t.traits.traveller)
    assert travellers > 3 * others
    for truth in population.truth.values():
        assert all(0 < p < 1 for p in truth.action_affinity.values())
        assert "current_account" in truth.products


def test_periodic_habits_come_from_their_own_generator_with_their_own_ids() -> None:
    from training.simulation.population import generate_population

    base = PopulationSpec(customers=30, seed=5, start=datetime(2026, 1, 1, tzinfo=UTC))
    classic = generate_population(base)
    realistic = generate_population(base.model_copy(update={"periodic_share": 1.0}))
    periodic = [e for e in realistic.events if e.event_id.split("-")[-1].startswith("p")]
    assert periodic
    others = [e for e in realistic.events if not e.event_id.split("-")[-1].startswith("p")]
    assert others == classic.events  # adding them changed no other event
    for event in periodic:
        truth = realistic.truth[event.customer_id]
        habit = truth.periodic_at(
            event.attributes["request"], event.channel.value, event.occurred_at
        )
        assert habit is not None
    # Most amounts lie near the true centre; transfers are in round tens.
    near = 0
    for event in periodic:
        habit = realistic.truth[event.customer_id].periodic_at(
            event.attributes["request"], event.channel.value, event.occurred_at
        )
        assert habit is not None
        amount = float(event.attributes["amount"])
        near += abs(amount - habit.centre) <= 0.15 * habit.centre
        if habit.unit == 10.0:
            assert amount % 10 == 0
    assert near > 0.8 * len(periodic)
