"""What decisions read of the whole population, prepared once and shared by many decisions."""

from __future__ import annotations

from dataclasses import dataclass

from engine.arbitration import AcceptanceRates
from engine.channel_preference import ChannelPrior
from engine.scoring import OnlineRates


@dataclass(frozen=True, slots=True)
class PopulationState:
    """The channel prior and the online acceptance rates derived from its counters.

    Deriving the rates walks every population counter (thousands of them): a server does it
    when it refreshes this state, never per decision."""

    prior: ChannelPrior
    online_rates: OnlineRates

    @classmethod
    def of(cls, prior: ChannelPrior) -> PopulationState:
        return cls(
            prior=prior, online_rates=OnlineRates(AcceptanceRates.from_population(prior.counts))
        )
