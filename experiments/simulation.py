"""A synthetic experiment run through the real serving path, for the demo and the tests.

Customers already in `store` (e.g. the synthetic demo population) ask for decisions at
touchpoints, through `api.serving.decide_for` with the experiment's assigner, so
assignment, the variant's policy and the exposure logging are the production ones. The
customers answer by a latent truth the engine never sees:

- each customer has an activity level (log-normal, fixed by a hash of the seed and the id);
- each (value segment, action) pair has an affinity in [0.3, 3] (fixed the same way);
- the first action offered is accepted with probability
  min(0.9, BASE_ACCEPTANCE x activity x affinity of the customer's real segment), and a
  sales or retention acceptance converts with probability CONVERSION_SHARE, worth the
  action's value in EUR;
- after any decision a customer may open a complaint, opt out of marketing, or give a
  feedback score, at rates that do not depend on the variant.

A pre-period (the experiment's `covariate_days` before its start) runs on the serving policy,
outside the experiment, so the review has a CUPED covariate. Everything is seeded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from pydantic import BaseModel

from api.serving import decide_for, record_outcome
from engine.decision import Decision, DecisionRequest
from engine.events import Channel, Event, EventType, OutcomeKind
from engine.facts import value_segment
from engine.next_best_action import DecisionPolicy
from experiments.assignment import ExperimentAssigner, ScorerLookup
from experiments.definitions import Experiment
from feature_store.base import OnlineStore

BASE_ACCEPTANCE = 0.04
CONVERSION_SHARE = 0.4
COMPLAINT_RATE = 0.002
OPT_OUT_RATE = 0.002
FEEDBACK_RATE = 0.08
#: Touchpoint channels decisions are asked from, and how often.
CHANNELS: dict[Channel, float] = {
    Channel.MOBILE_APP: 0.4,
    Channel.WEB: 0.3,
    Channel.ATM: 0.2,
    Channel.CALL_CENTER: 0.1,
}
#: When the experiment has no stop, it is simulated for this long.
DEFAULT_DURATION = timedelta(days=14)


@dataclass(frozen=True)
class SimulationSpec:
    """How many decisions to simulate in the experiment and in its pre-period, and the seed."""

    decisions: int = 6000
    pre_period_decisions: int = 2000
    seed: int = 7


class SimulationReport(BaseModel):
    """What the simulation did: decisions asked (and exposed), answers and guardrail events."""

    decisions: int
    exposed_decisions: int
    accepted: int
    converted: int
    complaints: int
    opt_outs: int
    feedback: int
    start: datetime
    end: datetime


def simulate_experiment(
    store: OnlineStore,
    experiment: Experiment,
    customer_ids: Sequence[str],
    *,
    policy: DecisionPolicy,
    spec: SimulationSpec = SimulationSpec(),
    scorers: ScorerLookup | None = None,
    end: datetime | None = None,
) -> SimulationReport:
    """Run the pre-period and the experiment through `store` (see the module docstring), the
    experiment until `end` (by default its stop, or 14 days after its start)."""
    if not customer_ids:
        raise ValueError("customer_ids must name at least one customer in the store")
    run = _Run(store, experiment, list(customer_ids), policy, spec, scorers)
    pre_start = experiment.start - timedelta(days=experiment.covariate_days)
    end = end or experiment.stop or experiment.start + DEFAULT_DURATION
    if experiment.covariate_days:
        run.period(pre_start, experiment.start, spec.pre_period_decisions, in_experiment=False)
    run.period(experiment.start, end, spec.decisions, in_experiment=True)
    return SimulationReport(**run.counts, start=pre_start, end=end)


class _Run:
    def __init__(
        self,
        store: OnlineStore,
        experiment: Experiment,
        customer_ids: list[str],
        policy: DecisionPolicy,
        spec: SimulationSpec,
        scorers: ScorerLookup | None,
    ) -> None:
        self.store, self.experiment, self.customers = store, experiment, customer_ids
        self.policy, self.spec, self.scorers = policy, spec, scorers
        self.rng = np.random.default_rng(spec.seed)
        self.segments: dict[str, str] = {}
        self.counts = dict.fromkeys(
            (
                "decisions",
                "exposed_decisions",
                "accepted",
                "converted",
                "complaints",
                "opt_outs",
                "feedback",
            ),
            0,
        )

    def period(
        self, start: datetime, end: datetime, decisions: int, *, in_experiment: bool
    ) -> None:
        channels, shares = list(CHANNELS), np.array(list(CHANNELS.values()))
        assigner = (
            ExperimentAssigner([self.experiment], policy=self.policy, scorers=self.scorers)
            if in_experiment
            else None
        )
        for index in range(decisions):
            at = start + (end - start) * ((index + 0.5) / decisions)
            customer = self.customers[int(self.rng.integers(len(self.customers)))]
            channel = channels[int(self.rng.choice(len(channels), p=shares / shares.sum()))]
            request = DecisionRequest(
                customer_id=customer, touchpoint=f"{channel.value}-sim", channel=channel
            )
            # Ids from the seed, not random: exploration draws from the decision id, so a seed
            # gives the same decisions, and figures, on every run.
            decision_id = f"dec_sim_{self.rng.integers(2**63):016x}"
            decision = decide_for(
                self.store,
                request,
                at=at,
                policy=self.policy,
                assigner=assigner,
                decision_id=decision_id,
            )
            self.counts["decisions"] += 1
            self.counts["exposed_decisions"] += bool(decision.experiments)
            self._answer(decision, at)
            self._guardrail_events(customer, channel, at, index, in_experiment)

    def _answer(self, decision: Decision, at: datetime) -> None:
        if not decision.actions:
            return
        action = decision.actions[0]
        customer = decision.customer_id
        probability = min(
            0.9, BASE_ACCEPTANCE * self._activity(customer) * self._affinity(customer, action.id)
        )
        if self.rng.random() >= probability:
            return
        later = at + timedelta(minutes=5)
        record_outcome(self.store, decision.decision_id, action.id, OutcomeKind.ACCEPTED, at=later)
        self.counts["accepted"] += 1
        if action.kind in ("sales", "retention") and self.rng.random() < CONVERSION_SHARE:
            value = self.policy.catalogue.action(action.id)
            record_outcome(
                self.store,
                decision.decision_id,
                action.id,
                OutcomeKind.CONVERTED,
                at=later + timedelta(hours=1),
                value=value.value if value else None,
            )
            self.counts["converted"] += 1

    def _guardrail_events(
        self, customer: str, channel: Channel, at: datetime, index: int, in_experiment: bool
    ) -> None:
        draws = self.rng.random(3)
        prefix = f"sim-{self.spec.seed}-{'x' if in_experiment else 'p'}{index}"
        events = []
        if draws[0] < COMPLAINT_RATE:
            events.append(
                self._event(f"{prefix}-complaint", customer, Channel.CALL_CENTER, at,
                            EventType.COMPLAINT_OPENED, {"case_id": f"{prefix}-case"})
            )  # fmt: skip
            self.counts["complaints"] += 1
        if draws[1] < OPT_OUT_RATE:
            events.append(
                self._event(f"{prefix}-optout", customer, channel, at, EventType.CONSENT_CHANGED,
                            {"purpose": "marketing", "status": "revoked"})
            )  # fmt: skip
            self.counts["opt_outs"] += 1
        if draws[2] < FEEDBACK_RATE:
            score = int(np.clip(round(self.rng.normal(8.0, 1.5)), 0, 10))
            events.append(
                self._event(f"{prefix}-feedback", customer, channel, at, EventType.FEEDBACK,
                            {"score": score})
            )  # fmt: skip
            self.counts["feedback"] += 1
        if events:
            self.store.apply_events(events)

    def _event(
        self,
        event_id: str,
        customer: str,
        channel: Channel,
        at: datetime,
        kind: EventType,
        attributes: dict[str, object],
    ) -> Event:
        return Event(
            event_id=event_id,
            customer_id=customer,
            touchpoint=f"{channel.value}-sim",
            channel=channel,
            type=kind,
            occurred_at=at + timedelta(minutes=30),
            attributes=attributes,
        )

    def _activity(self, customer: str) -> float:
        return math.exp(0.6 * _normal(self.spec.seed, "activity", customer))

    def _affinity(self, customer: str, action_id: str) -> float:
        segment = self.segments.get(customer)
        if segment is None:
            profile = self.store.read_profile(customer)
            segment = value_segment(profile).value if profile else "mass"
            self.segments[customer] = segment
        return 0.3 + 2.7 * _uniform(self.spec.seed, "affinity", f"{segment}|{action_id}")


def _uniform(seed: int, stream: str, key: str) -> float:
    digest = hashlib.sha256(f"{seed}|{stream}|{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64


def _normal(seed: int, stream: str, key: str) -> float:
    """A standard normal draw fixed by (seed, stream, key) (Box-Muller on two hashes)."""
    u1, u2 = _uniform(seed, stream, key), _uniform(seed, stream + "2", key)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
