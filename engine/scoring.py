"""What a decision asks of a model: how likely each allowed action and each default is to be
accepted. Two implementations answer it: the online smoothed rates (`OnlineRates`, from the
population counters, always there) and a trained model bundle served from the registry
(`training.bundle.ModelBundle`), which replaces them while a champion is registered.

Pure: implementations receive everything they need (the customer's facts, the request); the
engine never loads a model, and a model never sees the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from engine.arbitration import AcceptanceRates
from engine.decision import DecisionRequest
from engine.facts import Facts
from engine.habits import UsualRequest


@runtime_checkable
class Scorer(Protocol):
    """Acceptance estimates for one decision."""

    @property
    def model_version(self) -> str | None:
        """Logged with every decision: e.g. 'rapport-nba/3'; None for the online rates."""
        ...

    def action_posteriors(
        self,
        action_ids: Sequence[str],
        *,
        facts: Facts,
        segment: str,
        request: DecisionRequest,
    ) -> list[tuple[float, float]]:
        """Beta(alpha, beta) of the acceptance probability of each action, in order. The
        mean alpha / (alpha + beta) is the propensity of the priority; the spread is what
        Thompson sampling explores."""
        ...

    def default_acceptance(
        self, habits: Sequence[UsualRequest], *, request: DecisionRequest
    ) -> list[float] | None:
        """The probability that each habit, offered as a default, is accepted; None when the
        scorer has no opinion (the habit thresholds of `EngineConfig` alone decide)."""
        ...


class OnlineRates:
    """The online smoothed acceptance rates by action and segment (`AcceptanceRates`)."""

    model_version: str | None = None

    def __init__(self, rates: AcceptanceRates) -> None:
        self.rates = rates

    def action_posteriors(
        self,
        action_ids: Sequence[str],
        *,
        facts: Facts,
        segment: str,
        request: DecisionRequest,
    ) -> list[tuple[float, float]]:
        return [self.rates.posterior(action_id, segment) for action_id in action_ids]

    def default_acceptance(
        self, habits: Sequence[UsualRequest], *, request: DecisionRequest
    ) -> list[float] | None:
        return None
