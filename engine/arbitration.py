"""Arbitration: rank the actions the policy allows and pick a slate, logging the probability of
each pick so that outcomes can be judged and new policies evaluated off-policy.

The objective says what a decision maximises:

* `expected_value` (the default): priority = propensity x value x weight, the expected business
  value of the offer, with the weight as the business's lever;
* `acceptance`: priority = propensity x weight, the offer the customer is most likely to accept
  (value left out; the lever still applies). Acceptance-led touchpoints (service screens, the
  app's home) and relationship-first programmes choose it.

The propensity is the acceptance probability from the decision's `engine.scoring.Scorer`: the
smoothed acceptance rate of the action in the customer's segment, learned online from outcomes,
until a trained model replaces it. Actions that address an open problem come first, whatever
their priority.

Exploration, seeded per decision, picks the slate one slot at a time among allowed actions:

* `off`: the ranking, each pick with probability 1;
* `epsilon_greedy`: the best remaining action with probability 1 - epsilon, else a uniform
  one; the probability of each pick is exact: (1 - epsilon)[best] + epsilon / remaining;
* `thompson`: the best remaining action under propensities drawn from their Beta posteriors;
  the probability of each pick is estimated from `thompson_draws` further seeded draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Objective = Literal["expected_value", "acceptance"]

#: Population counter dimension of an action's exposures and acceptances in a segment.
ACTION_DIMENSION = "action:{action_id}:{segment}"


class Exploration(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["off", "epsilon_greedy", "thompson"] = "epsilon_greedy"
    epsilon: float = Field(0.05, ge=0, le=1)
    max_actions: int = Field(3, ge=1, le=20)
    thompson_draws: int = Field(256, ge=16, le=10_000)


class AcceptanceRates(BaseModel):
    """Smoothed acceptance rates by action and segment, from population counters.

    The rate of (action, segment) is shrunk toward the action's rate over all segments, which
    is shrunk toward `prior_rate`: (accepted + s * parent) / (shown + s), s = `prior_strength`.
    """

    model_config = ConfigDict(frozen=True)

    counts: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="'action|segment' -> (shown, accepted)."
    )
    prior_rate: float = Field(0.05, gt=0, lt=1)
    prior_strength: float = Field(20.0, gt=0)

    @classmethod
    def from_population(cls, counts: Mapping[str, Mapping[str, float]]) -> AcceptanceRates:
        rates: dict[str, tuple[float, float]] = {}
        for dimension, by_key in counts.items():
            kind, _, rest = dimension.partition(":")
            if kind != "action":
                continue
            action_id, _, segment = rest.partition(":")
            shown, accepted = by_key.get("shown", 0.0), by_key.get("accepted", 0.0)
            rates[f"{action_id}|{segment}"] = (shown, accepted)
            overall = rates.get(f"{action_id}|*", (0.0, 0.0))
            rates[f"{action_id}|*"] = (overall[0] + shown, overall[1] + accepted)
        return cls(counts=rates)

    def posterior(self, action_id: str, segment: str) -> tuple[float, float]:
        """Beta(alpha, beta) of the acceptance rate of `action_id` in `segment`."""
        strength = self.prior_strength
        shown, accepted = self.counts.get(f"{action_id}|*", (0.0, 0.0))
        parent = (accepted + strength * self.prior_rate) / (shown + strength)
        shown, accepted = self.counts.get(f"{action_id}|{segment}", (0.0, 0.0))
        accepted = min(accepted, shown)
        return accepted + strength * parent, shown - accepted + strength * (1 - parent)

    def rate(self, action_id: str, segment: str) -> float:
        alpha, beta = self.posterior(action_id, segment)
        return alpha / (alpha + beta)


class Scored(BaseModel):
    """An allowed action with the factors of its priority."""

    action_id: str
    propensity: float = Field(description="Estimated acceptance probability, in [0, 1].")
    value: float = Field(description="Business value, EUR.")
    weight: float
    first: bool = Field(description="Addresses an open problem: ranked before the others.")
    alpha: float = 1.0
    beta: float = 1.0
    objective: Objective = "expected_value"

    @property
    def lever(self) -> float:
        """What the propensity is multiplied by: value x weight, or the weight alone."""
        return self.value * self.weight if self.objective == "expected_value" else self.weight

    @property
    def priority(self) -> float:
        return self.propensity * self.lever


class Pick(BaseModel):
    action_id: str
    rank: int
    probability: float = Field(description="Probability this action was picked at this rank.")


def decision_rng(decision_id: str) -> np.random.Generator:
    """The decision's own seeded generator: the same decision id explores the same way."""
    seed = int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:8], "big")
    # What default_rng(seed) builds (the same stream), without its argument dispatch.
    return np.random.Generator(np.random.PCG64(seed))


def ranked(candidates: Sequence[Scored]) -> list[Scored]:
    """Problems first, then by priority (ties by id): the order greedy picks follow."""
    return sorted(candidates, key=lambda c: (not c.first, -c.priority, c.action_id))


def select(
    candidates: Sequence[Scored], exploration: Exploration, rng: np.random.Generator
) -> list[Pick]:
    """Pick up to `max_actions` of `candidates`, slot by slot, with the probability of each."""
    remaining = ranked(candidates)
    picks: list[Pick] = []
    while remaining and len(picks) < exploration.max_actions:
        index, probability = pick_one(remaining, exploration, rng)
        picks.append(
            Pick(action_id=remaining[index].action_id, rank=len(picks) + 1, probability=probability)
        )
        del remaining[index]
    return picks


def pick_one(
    remaining: list[Scored], exploration: Exploration, rng: np.random.Generator
) -> tuple[int, float]:
    """The index of the next pick among `remaining` (in `ranked` order), and its probability."""
    if exploration.strategy == "off" or len(remaining) == 1:
        return 0, 1.0
    if exploration.strategy == "epsilon_greedy":
        epsilon, n = exploration.epsilon, len(remaining)
        index = int(rng.integers(n)) if rng.random() < epsilon else 0
        return index, (1 - epsilon) * (index == 0) + epsilon / n
    winner = _thompson_winner(remaining, rng)
    draws = [_thompson_winner(remaining, rng) for _ in range(exploration.thompson_draws)]
    return winner, max(draws.count(winner), 1) / len(draws)


def _thompson_winner(remaining: list[Scored], rng: np.random.Generator) -> int:
    alphas = np.array([c.alpha for c in remaining])
    betas = np.array([c.beta for c in remaining])
    sampled = rng.beta(alphas, betas) * np.array([c.lever for c in remaining])
    tier = np.array([0.0 if c.first else 1.0 for c in remaining])
    # Problems first: a first-tier action always beats a second-tier one.
    return int(np.lexsort((-sampled, tier))[0])
