"""Next-best-action measured on the synthetic population: are the offers accepted, are they
worth something, and are the policy's promises kept?

The population's events are replayed in time order through the fold the stores use. At sampled
touches (a request or a contact: the customer's own channels, at their own hours) the touchpoint
asks for a decision just before the touch is folded. Four policies (`training.simulation.policies`)
answer the same moments, each in a world of its own, since what they offered changes caps,
cooldowns and suppression: Rapport's real `decide` with acceptance rates learned online from the
simulated outcomes, a uniformly random pick among the actions the policy allows, and two
oracles that know the latent affinities (the most likely accepted action; Rapport's
expected-value ranking with the true affinities). Rapport ranks by its objective: expected value
(judge it against the value oracle) or acceptance (judge it against the acceptance oracle).

Each decision offers a slate of up to `slate` actions (3 by default, the engine's default
`max_actions`; 1 to judge the ranking alone), and the customer accepts or declines each: one
uniform number per moment and rank decides, for every policy alike. The acceptance rate is the
share of the decisions that offered an action whose first action was accepted. Every offer is
also checked by `training.simulation.checks`, independently of the engine.
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from engine.arbitration import Exploration, Objective
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.config import EngineConfig
from engine.events import EventType
from engine.next_best_action import DecisionPolicy
from training.simulation.policies import (
    Moment,
    OracleReplay,
    PolicyResult,
    RandomReplay,
    Replay,
    ValueOracleReplay,
)
from training.simulation.population import (
    Population,
    PopulationSpec,
    cyclic_gc_paused,
    generate_population,
)

Strategy = Literal["off", "epsilon_greedy", "thompson"]

#: The policies compared, by name; the first is Rapport.
POLICIES: dict[str, type[Replay]] = {
    replay.name: replay for replay in (Replay, RandomReplay, OracleReplay, ValueOracleReplay)
}
#: Actions offered per decision, by default: the engine's default.
SLATE = Exploration().max_actions
#: Touches at which a touchpoint asks for a decision.
TOUCHES = frozenset({EventType.REQUEST, EventType.CONTACT})
#: Stream of the simulation's generator, apart from the population's.
_SIMULATION_STREAM = 2


class TooFewTouches(ValueError):
    """The population has fewer touches than the decisions asked for."""


class NbaSimulationReport(BaseModel):
    customers: int
    events: int = Field(description="Population events replayed (offers and answers apart).")
    decisions: int
    seed: int
    strategy: Strategy
    objective: Objective = Field(description="What Rapport's ranking maximises.")
    slate: int = Field(description="Actions offered per decision, at most.")
    rapport: PolicyResult
    random: PolicyResult
    oracle: PolicyResult = Field(description="Offers the action most likely to be accepted.")
    oracle_value: PolicyResult = Field(
        description="Rapport's ranking with the latent affinities in place of learned rates."
    )
    runtime_seconds: float = Field(description="Wall clock, population generation included.")


class NbaSimulation:
    """Replays a synthetic population and measures the policies on the same moments."""

    def __init__(
        self,
        spec: PopulationSpec,
        *,
        decisions: int = 10_000,
        strategy: Strategy = "epsilon_greedy",
        slate: int = SLATE,
        objective: Objective = "expected_value",
        config: EngineConfig | None = None,
    ) -> None:
        self.spec, self.decisions, self.strategy = spec, decisions, strategy
        self.objective: Objective = objective
        self.slate = Exploration(max_actions=slate).max_actions  # validated
        self.config = config or EngineConfig()
        self._rng = np.random.Generator(np.random.PCG64([spec.seed, _SIMULATION_STREAM]))
        self._drawn: tuple[Population, dict[int, Moment]] | None = None

    def run(self) -> NbaSimulationReport:
        """Replay every policy on the same moments."""
        started = time.perf_counter()
        rapport, random, oracle, oracle_value = (self.replay(name) for name in POLICIES)
        population, moments = self._population()
        return NbaSimulationReport(
            customers=len(population.truth),
            events=len(population.events),
            decisions=len(moments),
            seed=self.spec.seed,
            strategy=self.strategy,
            objective=self.objective,
            slate=self.slate,
            rapport=rapport,
            random=random,
            oracle=oracle,
            oracle_value=oracle_value,
            runtime_seconds=round(time.perf_counter() - started, 1),
        )

    def replay(self, name: str) -> PolicyResult:
        """Replay the population for the policy `name`, deciding at the sampled moments
        (Rapport explores with the simulation's strategy; the others replace its ranking)."""
        exploration = self.strategy if name == Replay.name else "off"
        replay = POLICIES[name](self._policy(exploration), self.config, self.spec.start)
        population, moments = self._population()
        with cyclic_gc_paused():
            for index, event in enumerate(population.events):
                if index in moments:
                    replay.offer(moments[index])
                replay.fold(event)
        return replay.result()

    def _policy(self, strategy: Strategy) -> DecisionPolicy:
        exploration = Exploration(strategy=strategy, max_actions=self.slate)
        catalogue = load_catalogue(RETAIL_BANK_CATALOGUE)
        return DecisionPolicy(
            catalogue=catalogue, exploration=exploration, objective=self.objective
        )

    def _population(self) -> tuple[Population, dict[int, Moment]]:
        """The population and its decision moments, drawn once for every policy."""
        if self._drawn is None:
            with cyclic_gc_paused():
                population = generate_population(self.spec)
            self._drawn = (population, self._moments(population))
        return self._drawn

    def _moments(self, population: Population) -> dict[int, Moment]:
        """`decisions` touches drawn uniformly, keyed by their index in the events."""
        events = population.events
        touches = [index for index, event in enumerate(events) if event.type in TOUCHES]
        if len(touches) < self.decisions:
            raise TooFewTouches(
                f"{len(touches):,} touches for {self.decisions:,} decisions: add customers"
            )
        chosen = np.sort(self._rng.choice(touches, size=self.decisions, replace=False))
        answers = self._rng.random((self.decisions, self.slate))
        picks = self._rng.random((self.decisions, self.slate))
        return {
            int(index): Moment(
                number=number,
                touch=events[index],
                truth=population.truth[events[index].customer_id],
                answers=tuple(answers[number].tolist()),
                picks=tuple(picks[number].tolist()),
            )
            for number, index in enumerate(chosen)
        }
