"""How well the engine learns, measured against the synthetic population's latent truth.

Replays each customer's events in time order through the same fold the online store uses and
asks, before every request, what default the engine would offer. Nothing here is asserted as a
timing; these are learning figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

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
from engine.profile import Profile
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


class LearningReport(BaseModel):
    customers: int
    events: int
    seed: int
    channel: ChannelLearning
    defaults: DefaultLearning


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


def learning_report(spec: PopulationSpec, config: EngineConfig | None = None) -> LearningReport:
    """Replay the synthetic population and compare what was learned with the latent truth."""
    config = config or EngineConfig()
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
