"""Implicit channel preferences: decayed counts turned into probabilities with a confidence.

A customer with little history is shrunk toward the population's distribution (empirical
Bayes with a Dirichlet prior): p(c) = (n_c + a * pi_c) / (N + a), where n are the customer's
decayed counts, pi the population shares and a the prior strength. The confidence is
N / (N + a), the share of the estimate that comes from the customer's own history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.config import EngineConfig
from engine.consent import may_contact
from engine.events import (
    CONTACT_CHANNELS,
    Event,
    EventType,
    ExposureAttributes,
    OutcomeAttributes,
    OutcomeKind,
    RequestAttributes,
)
from engine.preferences import Purpose
from engine.profile import DecayedCount, Profile
from engine.touchpoints import touchpoint_counters

#: Population dimension for contact-channel choices; request kinds use "request:<kind>".
CONTACT_DIMENSION = "contact"


class ChannelPrior(BaseModel):
    """Population channel shares: `shares[dimension][channel]`, each dimension summing to 1."""

    model_config = ConfigDict(frozen=True)

    shares: dict[str, dict[str, float]] = Field(default_factory=dict)
    counts: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="The raw population counters the shares come from."
    )

    @classmethod
    def from_counts(cls, counts: Mapping[str, Mapping[str, float]]) -> ChannelPrior:
        shares = {}
        for dimension, by_channel in counts.items():
            if not _is_channel_dimension(dimension):
                continue  # action and touchpoint statistics: counts only
            total = sum(by_channel.values())
            if total > 0:
                shares[dimension] = {ch: n / total for ch, n in sorted(by_channel.items())}
        raw = {dimension: dict(by_key) for dimension, by_key in counts.items()}
        return cls(shares=shares, counts=raw)

    def for_dimension(self, dimension: str, candidates: Iterable[str]) -> dict[str, float]:
        """Shares over `candidates`, renormalised; uniform where the population knows nothing."""
        candidates = list(candidates)
        known = self.shares.get(dimension, {})
        mass = {ch: known.get(ch, 0.0) for ch in candidates}
        total = sum(mass.values())
        if total <= 0:
            return {ch: 1.0 / len(candidates) for ch in candidates}
        return {ch: share / total for ch, share in mass.items()}


def _is_channel_dimension(dimension: str) -> bool:
    return dimension == CONTACT_DIMENSION or dimension.startswith("request:")


def population_dimensions(event: Event) -> list[tuple[str, str]]:
    """The (dimension, key) population counters that a newly folded event increments:
    channel choices, action exposures and answers, and touchpoint stats."""
    return [*_choice_dimensions(event), *touchpoint_counters(event)]


def _choice_dimensions(event: Event) -> list[tuple[str, str]]:
    if event.type in (EventType.CONTACT, EventType.COMPLAINT_OPENED):
        if event.channel in CONTACT_CHANNELS:
            return [(CONTACT_DIMENSION, event.channel.value)]
        return []
    if event.type is EventType.REQUEST:
        attributes = event.typed
        assert isinstance(attributes, RequestAttributes)
        return [(f"request:{attributes.request}", event.channel.value)]
    if event.type is EventType.ACTION_EXPOSED:
        exposure = event.typed
        assert isinstance(exposure, ExposureAttributes)
        return [(_action_dimension(exposure.action_id, exposure.segment), "shown")]
    if event.type is EventType.OUTCOME:
        outcome = event.typed
        assert isinstance(outcome, OutcomeAttributes)
        if outcome.kind == "action" and outcome.outcome is OutcomeKind.ACCEPTED:
            return [(_action_dimension(outcome.target, outcome.segment), "accepted")]
        if outcome.kind == "action" and outcome.outcome is OutcomeKind.CONVERTED:
            return [(_action_dimension(outcome.target, outcome.segment), "converted")]
    return []


def _action_dimension(action_id: str, segment: str | None) -> str:
    return f"action:{action_id}:{segment or 'mass'}"


class ChannelEstimate(BaseModel):
    """The most likely channel, with its probability and confidence, both in [0, 1]."""

    channel: str
    probability: float
    confidence: float
    source: Literal["stated", "learned", "population"]
    evidence: float = Field(0.0, description="Decayed count of the customer's choices.")
    choices: int = Field(0, description="Raw number of the customer's choices counted.")
    distribution: dict[str, float] = Field(default_factory=dict)


def estimate(
    counts: Mapping[str, DecayedCount],
    prior: Mapping[str, float],
    *,
    at: datetime,
    config: EngineConfig,
) -> ChannelEstimate:
    """Shrunk channel probabilities over the channels of `prior` (which must be non-empty)."""
    half_life, strength = config.channel_half_life_days, config.prior_strength
    observed = {ch: counts[ch].value_at(at, half_life) if ch in counts else 0.0 for ch in prior}
    evidence = sum(observed.values())
    denominator = evidence + strength
    if denominator <= 0:
        distribution = dict(prior)
    else:
        distribution = {
            ch: (observed[ch] + strength * prior[ch]) / denominator for ch in sorted(prior)
        }
    best = max(sorted(distribution), key=lambda ch: distribution[ch])
    choices = sum(counts[ch].total for ch in prior if ch in counts)
    return ChannelEstimate(
        channel=best,
        probability=distribution[best],
        confidence=evidence / denominator if denominator > 0 else 0.0,
        source="learned" if evidence > 0 else "population",
        evidence=evidence,
        choices=choices,
        distribution=distribution,
    )


def contact_channel(
    profile: Profile | None,
    prior: ChannelPrior,
    *,
    at: datetime,
    config: EngineConfig,
    purpose: Purpose = Purpose.SERVICE,
) -> ChannelEstimate | None:
    """The channel to contact the customer by for `purpose`, among consented channels only.

    A stated preference wins over a learned one when its channel is consented; otherwise the
    best consented channel is learned. None when no contact channel is consented.
    """
    allowed = [c.value for c in CONTACT_CHANNELS if may_contact(profile, purpose, c.value, config)]
    if not allowed:
        return None
    stated = profile.stated.get("contact_channel") if profile else None
    if stated is not None and stated.value in allowed:
        return ChannelEstimate(
            channel=str(stated.value), probability=1.0, confidence=1.0, source="stated"
        )
    shares = prior.for_dimension(CONTACT_DIMENSION, allowed)
    return estimate(profile.contact_channels if profile else {}, shares, at=at, config=config)


def request_channels(
    profile: Profile, prior: ChannelPrior, *, at: datetime, config: EngineConfig
) -> dict[str, ChannelEstimate]:
    """For each request kind the customer has made, the channel they most likely use for it."""
    estimates = {}
    for request, counts in sorted(profile.request_channels.items()):
        dimension = f"request:{request}"
        candidates = set(counts) | set(prior.shares.get(dimension, {}))
        shares = prior.for_dimension(dimension, sorted(candidates))
        estimates[request] = estimate(counts, shares, at=at, config=config)
    return estimates
