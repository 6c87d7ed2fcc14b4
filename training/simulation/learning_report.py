"""How well the engine learns, measured against the synthetic population's latent truth.

Replays each customer's events in time order through the same fold the online store uses and
asks, before every request, what default the engine would offer. Nothing here is asserted as a
timing; these are learning figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from engine.channel_preference import (
    CONTACT_DIMENSION,
    ChannelPrior,
    estimate,
    population_dimensions,
)
from engine.config import EngineConfig
from engine.events import CONTACT_CHANNELS, Event, EventType, RequestAttributes
from engine.fold import apply_in_place, new_profile, request_record
from engine.habits import usual_requests
from engine.profile import Profile, RequestRecord, habit_key
from training.simulation.population import CustomerHistory, PopulationSpec, iter_customer_histories

MIN_INTERACTIONS = 5


class ChannelLearning(BaseModel):
    customers: int = Field(description="Customers with at least 5 contact choices.")
    learned_equals_latent: float = Field(description="Share whose learned channel is latent.")
    population_mode_equals_latent: float = Field(
        description="Baseline: share whose latent channel is the population's most common."
    )
    all_customers: int
    all_learned_equals_latent: float = Field(
        description="Share over every customer with any contact (prior-shrunk when few)."
    )


class DefaultLearning(BaseModel):
    requests: int = Field(description="Requests of kinds that have values to pre-fill.")
    offered: int
    matched: int
    coverage: float = Field(description="Share of those requests where a default was offered.")
    precision: float = Field(description="Share of offered defaults equal to the request made.")
    habitual_requests: float = Field(
        description="Ceiling: share of requests that equal the latent habit (noise excluded)."
    )


class Offering(BaseModel):
    """How one way of choosing defaults did on the requests of one habit kind."""

    offered: int
    coverage: float = Field(description="Share of the requests with a default offered before.")
    precision: float = Field(
        description="Share of offered defaults within 10% of the request that followed (the "
        "other values equal)."
    )
    exact_precision: float = Field(description="Share of offered defaults equal to the request.")


class KindLearning(BaseModel):
    """One habit kind: the engine beside two baselines, on the same requests."""

    requests: int
    engine: Offering
    last_value: Offering = Field(description="Baseline: always offer the customer's last value.")
    median: Offering = Field(description="Baseline: offer the median of the recent amounts.")
    rhythm_precision: float | None = Field(
        None,
        description="Periodic only: of the defaults the engine offered at the moment of a "
        "request or half a period before it, the share offered at the right moment (both "
        "baselines, which offer at any time, score 50%).",
    )


class HabitLearning(BaseModel):
    """Defaults on the realistic population: amounts that vary, habits with a rhythm."""

    customers: int
    events: int
    periodic_share: float
    kinds: dict[str, KindLearning] = Field(description="exact, approximate and periodic.")


class LearningReport(BaseModel):
    customers: int
    events: int
    seed: int
    channel: ChannelLearning
    defaults: DefaultLearning
    habits: HabitLearning | None = Field(
        None, description="The same population with varying amounts and rhythms added."
    )


def population_prior(histories: Iterable[CustomerHistory]) -> ChannelPrior:
    counts: dict[str, Counter[str]] = {}
    for history in histories:
        for event in history.events:
            for dimension, channel in population_dimensions(event):
                counts.setdefault(dimension, Counter())[channel] += 1
    return ChannelPrior.from_counts({dim: dict(c) for dim, c in counts.items()})


class _Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def share(self, hits: str, total: str) -> float:
        return self.counts[hits] / self.counts[total] if self.counts[total] else 0.0


#: Customers given habits with varying amounts and rhythms in the realistic population.
REALISTIC_PERIODIC_SHARE = 0.7
HABIT_KINDS = ("exact", "approximate", "periodic")
_WAYS = ("engine", "last_value", "median")


def learning_report(
    spec: PopulationSpec, config: EngineConfig | None = None, *, realistic: bool = True
) -> LearningReport:
    """Replay the synthetic population and compare what was learned with the latent truth.

    With `realistic`, the same population with habits whose amounts vary and recur
    (`training.simulation.periodic`) is replayed too, and each habit kind measured."""
    report = _classic_report(spec, config or EngineConfig())
    if not realistic:
        return report
    share = spec.periodic_share or REALISTIC_PERIODIC_SHARE
    habits = habit_learning(spec.model_copy(update={"periodic_share": share}), config)
    return report.model_copy(update={"habits": habits})


def habit_learning(spec: PopulationSpec, config: EngineConfig | None = None) -> HabitLearning:
    """Defaults offered before each request of a known habit, by habit kind, beside the last
    value and the median of the recent amounts; and whether periodic ones come on time."""
    config = config or EngineConfig()
    tally = _Tally()
    customers = 0
    for history in iter_customer_histories(spec):
        customers += 1
        profile = new_profile(history.truth.customer_id)
        for event in history.events:
            if event.type is EventType.REQUEST:
                _score_habit(profile, event, history, config, tally)
            apply_in_place(profile, event, config)
            tally.counts["events"] += 1
    kinds = {}
    for kind in HABIT_KINDS:
        ways = {
            way: Offering(
                offered=tally.counts[f"{kind}:{way}:offered"],
                coverage=tally.share(f"{kind}:{way}:offered", f"{kind}:requests"),
                precision=tally.share(f"{kind}:{way}:near", f"{kind}:{way}:offered"),
                exact_precision=tally.share(f"{kind}:{way}:exact", f"{kind}:{way}:offered"),
            )
            for way in _WAYS
        }
        on_time = tally.counts[f"{kind}:on_time"]
        probed = on_time + tally.counts[f"{kind}:off_time"]
        kinds[kind] = KindLearning(
            requests=tally.counts[f"{kind}:requests"],
            engine=ways["engine"],
            last_value=ways["last_value"],
            median=ways["median"],
            rhythm_precision=on_time / probed if kind == "periodic" and probed else None,
        )
    return HabitLearning(
        customers=customers,
        events=tally.counts["events"],
        periodic_share=spec.periodic_share,
        kinds=kinds,
    )


def _score_habit(
    profile: Profile, event: Event, history: CustomerHistory, config: EngineConfig, tally: _Tally
) -> None:
    attributes = event.typed
    assert isinstance(attributes, RequestAttributes)
    made = request_record(event).values()
    if "amount" not in made:
        return
    at, channel, request = event.occurred_at, event.channel.value, attributes.request
    truth = history.truth
    periodic = truth.periodic_at(request, channel, at)
    if truth.usual_values_at(request, channel, at) is not None:
        kind = "exact"
    elif periodic is not None:
        kind = "periodic" if periodic.period else "approximate"
    else:
        return  # a one-off request: no habit to learn
    tally.counts[f"{kind}:requests"] += 1
    recent = profile.habits.get(habit_key(request, channel), [])
    offers = {
        "engine": _engine_offer(profile, config, channel, request, at),
        "last_value": recent[-1].values() if recent else None,
        "median": _median_offer(recent),
    }
    for way, offer in offers.items():
        if offer is None:
            continue
        tally.counts[f"{kind}:{way}:offered"] += 1
        tally.counts[f"{kind}:{way}:near"] += _near(offer, made)
        tally.counts[f"{kind}:{way}:exact"] += _same(offer, made)
    if kind == "periodic" and periodic is not None:
        half = timedelta(days=15 if periodic.period == "monthly" else 3.5)
        tally.counts[f"{kind}:on_time"] += offers["engine"] is not None
        early = _engine_offer(profile, config, channel, request, at - half)
        tally.counts[f"{kind}:off_time"] += early is not None


def _engine_offer(
    profile: Profile, config: EngineConfig, channel: str, request: str, at: datetime
) -> dict[str, Any] | None:
    """The default a touchpoint would be offered without naming the request kind: a habit whose
    rhythm decides when is offered only when it is due."""
    for habit in usual_requests(profile, config, channel=channel, request=request, at=at):
        if not (habit.timed and habit.due is False):
            return habit.values
    return None


def _median_offer(recent: list[RequestRecord]) -> dict[str, Any] | None:
    amounts = sorted(r.amount for r in recent if r.amount is not None)
    if not amounts:
        return None
    values = recent[-1].values()
    middle = len(amounts) // 2
    median = amounts[middle] if len(amounts) % 2 else (amounts[middle - 1] + amounts[middle]) / 2
    values["amount"] = float(round(median, 2))
    return values


def _near(offer: dict[str, Any], made: dict[str, Any]) -> bool:
    """Within 10% of the amount made, every other value equal."""
    if {k: v for k, v in offer.items() if k != "amount"} != {
        k: v for k, v in made.items() if k != "amount"
    }:
        return False
    offered, actual = Decimal(str(offer["amount"])), Decimal(str(made["amount"]))
    return abs(offered - actual) <= Decimal("0.1") * actual


def _same(offer: dict[str, Any], made: dict[str, Any]) -> bool:
    return _near(offer, made) and Decimal(str(offer["amount"])) == Decimal(str(made["amount"]))


def _classic_report(spec: PopulationSpec, config: EngineConfig) -> LearningReport:
    """The classic population: channels learned, and exact defaults."""
    histories = list(iter_customer_histories(spec))
    prior = population_prior(histories)
    contact_shares = prior.for_dimension(CONTACT_DIMENSION, (c.value for c in CONTACT_CHANNELS))
    population_mode = max(contact_shares, key=lambda ch: contact_shares[ch])
    tally = _Tally()
    for history in histories:
        profile = _replay_defaults(history, config, tally)
        _score_channel(history, profile, contact_shares, population_mode, config, tally)
    return LearningReport(
        customers=len(histories),
        events=tally.counts["events"],
        seed=spec.seed,
        channel=ChannelLearning(
            customers=tally.counts["active"],
            learned_equals_latent=tally.share("active_hit", "active"),
            population_mode_equals_latent=tally.share("active_mode_hit", "active"),
            all_customers=tally.counts["any"],
            all_learned_equals_latent=tally.share("any_hit", "any"),
        ),
        defaults=DefaultLearning(
            requests=tally.counts["requests"],
            offered=tally.counts["offered"],
            matched=tally.counts["matched"],
            coverage=tally.share("offered", "requests"),
            precision=tally.share("matched", "offered"),
            habitual_requests=tally.share("habitual", "requests"),
        ),
    )


def _replay_defaults(history: CustomerHistory, config: EngineConfig, tally: _Tally) -> Profile:
    """Fold the history in time order; before each request, ask which default would be offered."""
    profile = new_profile(history.truth.customer_id)
    for event in history.events:
        if event.type is EventType.REQUEST:
            _score_request(profile, event, history, config, tally)
        apply_in_place(profile, event, config)
        tally.counts["events"] += 1
    return profile


def _score_request(
    profile: Profile, event: Event, history: CustomerHistory, config: EngineConfig, tally: _Tally
) -> None:
    attributes = event.typed
    assert isinstance(attributes, RequestAttributes)
    made = request_record(event).values()
    if not made:
        return  # nothing a touchpoint could pre-fill
    tally.counts["requests"] += 1
    latent = history.truth.usual_values_at(attributes.request, event.channel, event.occurred_at)
    tally.counts["habitual"] += latent == made
    offered = usual_requests(
        profile, config, channel=event.channel.value, request=attributes.request
    )
    if offered:
        tally.counts["offered"] += 1
        tally.counts["matched"] += offered[0].values == made


def _score_channel(
    history: CustomerHistory,
    profile: Profile,
    contact_shares: dict[str, float],
    population_mode: str,
    config: EngineConfig,
    tally: _Tally,
) -> None:
    choices = sum(count.total for count in profile.contact_channels.values())
    if choices == 0 or profile.last_seen is None:
        return
    # The learned channel alone: a stated preference would win in decisions, not here.
    learned = estimate(
        profile.contact_channels, contact_shares, at=profile.last_seen, config=config
    )
    latent = history.truth.preferred_contact_channel.value
    tally.counts["any"] += 1
    tally.counts["any_hit"] += learned.channel == latent
    if choices >= MIN_INTERACTIONS:
        tally.counts["active"] += 1
        tally.counts["active_hit"] += learned.channel == latent
        tally.counts["active_mode_hit"] += population_mode == latent
