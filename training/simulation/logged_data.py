"""Logged decisions and outcomes on the synthetic population, as a live Rapport would log them.

The population's events are replayed in time order through the fold the stores use (the
next-best-action simulation's `Replay`). At `decisions` touches drawn uniformly, Rapport's real
`decide` answers with the online smoothed rates and the chosen exploration, and the customer
answers from the latent truth:

* each returned action: accepted if the moment's uniform number is below the customer's latent
  affinity for it, else declined (as in `training.simulation.policies`);
* each returned default: at a request, accepted if the request made has exactly the default's
  values, else declined; at a contact (no request under way), ignored.

Exposures and outcomes are folded back, so caps, cooldowns and suppressed defaults shape what
follows. What is returned is what the logs would hold: every folded event (the population's,
exposures and outcome events), and every decision with its item propensities, ready for
`training.dataset.examples_from_logs` (or `feature_store.offline.replay.training_examples`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from engine.arbitration import Exploration
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import outcome_event
from engine.decision import Decision
from engine.events import Event, EventType, OutcomeKind
from engine.fold import request_record
from engine.next_best_action import DecisionPolicy
from engine.profile import Profile
from training.dataset import examples_from_logs
from training.simulation.nba import TOUCHES, Strategy, TooFewTouches
from training.simulation.policies import ANSWER_DELAY, Moment, Replay
from training.simulation.population import (
    Population,
    PopulationSpec,
    cyclic_gc_paused,
    generate_population,
)

#: Start of the simulated period when none is given.
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)
#: Stream of the decision moments' generator, apart from the population's.
_LOGS_STREAM = 3


@dataclass(frozen=True, slots=True)
class SimulatedLogs:
    """The logs of a simulated period: events (outcome events included), in the order they were
    folded, and decisions in time order."""

    events: list[Event]
    decisions: list[Decision]
    population: Population


class LoggingReplay(Replay):
    """Rapport's replay, keeping what the stores would log and answering defaults too."""

    name = "rapport-logged"

    def __init__(self, policy: DecisionPolicy, config: EngineConfig, start: datetime) -> None:
        super().__init__(policy, config, start)
        self.events: list[Event] = []
        self.decisions: list[Decision] = []

    def fold(self, event: Event) -> None:
        self.events.append(event)
        super().fold(event)

    def choose(
        self, decision: Decision, profile: Profile | None, prior: ChannelPrior, moment: Moment
    ) -> Decision:
        self.decisions.append(decision)
        return decision

    def offer(self, moment: Moment) -> None:
        super().offer(moment)
        decision = self.decisions[-1]
        touch = moment.touch
        made = request_record(touch).signature() if touch.type is EventType.REQUEST else None
        for default in decision.defaults:
            if made is None:
                outcome = OutcomeKind.IGNORED
            else:
                outcome = (
                    OutcomeKind.ACCEPTED if default.signature == made else OutcomeKind.DECLINED
                )
            at = decision.decided_at + ANSWER_DELAY
            self.fold(outcome_event(decision, default.id, outcome, at=at))


def simulate_logs(
    customers: int,
    decisions: int,
    seed: int,
    *,
    days: int = 180,
    strategy: Strategy = "epsilon_greedy",
    config: EngineConfig | None = None,
    start: datetime = DEFAULT_START,
) -> SimulatedLogs:
    """Simulate `days` of a population of `customers` with `decisions` decisions at random
    touches. The same arguments give the same logs. Raises `TooFewTouches` when the population
    has fewer touches than `decisions`."""
    spec = PopulationSpec(customers=customers, seed=seed, start=start, days=days)
    config = config or EngineConfig()
    with cyclic_gc_paused():
        population = generate_population(spec)
        moments = _moments(population, decisions, seed)
        policy = DecisionPolicy(
            catalogue=load_catalogue(RETAIL_BANK_CATALOGUE),
            exploration=Exploration(strategy=strategy),
        )
        replay = LoggingReplay(policy, config, spec.start)
        for index, event in enumerate(population.events):
            if index in moments:
                replay.offer(moments[index])
            replay.fold(event)
    return SimulatedLogs(events=replay.events, decisions=replay.decisions, population=population)


def simulated_logs(customers: int, decisions: int, seed: int, *, days: int = 180) -> SimulatedLogs:
    """`simulate_logs` with these arguments, simulated once per process (tests and benchmarks
    share them): the same object each call, not to be changed."""
    return _logs(customers, decisions, seed, days)


@functools.cache
def _logs(customers: int, decisions: int, seed: int, days: int) -> SimulatedLogs:
    return simulate_logs(customers, decisions, seed, days=days)


def simulated_examples(
    customers: int, decisions: int, seed: int, *, days: int = 180
) -> pd.DataFrame:
    """The training examples (`training.dataset.examples_from_logs`) of `simulated_logs` with
    these arguments and the default engine config, built once per process; a copy each call."""
    return _examples(customers, decisions, seed, days).copy()


@functools.cache
def _examples(customers: int, decisions: int, seed: int, days: int) -> pd.DataFrame:
    logs = simulated_logs(customers, decisions, seed, days=days)
    return examples_from_logs(logs.events, logs.decisions, None, EngineConfig())


def _moments(population: Population, decisions: int, seed: int) -> dict[int, Moment]:
    """`decisions` touches drawn uniformly, keyed by their index in the events."""
    events = population.events
    touches = [index for index, event in enumerate(events) if event.type in TOUCHES]
    if len(touches) < decisions:
        raise TooFewTouches(f"{len(touches):,} touches for {decisions:,} decisions: add customers")
    rng = np.random.Generator(np.random.PCG64([seed, _LOGS_STREAM]))
    slate = Exploration().max_actions
    chosen = np.sort(rng.choice(touches, size=decisions, replace=False))
    answers = rng.random((decisions, slate))
    return {
        int(index): Moment(
            number=number,
            touch=events[index],
            truth=population.truth[events[index].customer_id],
            answers=tuple(answers[number].tolist()),
            picks=(),
        )
        for number, index in enumerate(chosen)
    }
