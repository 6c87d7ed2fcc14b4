"""The policies the next-best-action simulation compares, each replaying a world of its own.

A `Replay` holds one policy's profiles, population counters, products sold and deliveries, and
offers the slate Rapport's `decide` returns (up to `max_actions`, 3 by default). The others offer
a slate of as many of the actions the engine allows (the decision's trace, `status !=
"dropped"`), picked their own way:

* `RandomReplay`: uniformly, without replacement;
* `OracleReplay`: the ones the customer is most likely to accept (it knows the latent affinities);
* `ValueOracleReplay`: Rapport's own ranking with the latent affinities in place of the learned
  ones: problems first, then affinity x value x weight.

The customer answers each offer of the slate: accepted if the moment's uniform number for that
rank is below their latent affinity for it, declined otherwise. Offers and answers are folded
back (exposures, then outcomes a minute later), so caps, cooldowns and suppression apply to what
follows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from engine.arbitration import AcceptanceRates
from engine.catalogue import Action
from engine.channel_preference import ChannelPrior, contact_channel, population_dimensions
from engine.config import EngineConfig
from engine.decide import decide, exposure_events, outcome_event
from engine.decision import ChosenAction, Decision, DecisionRequest, Reasons
from engine.events import Event, OutcomeKind, RequestAttributes
from engine.fold import FoldStatus, apply_in_place, new_profile
from engine.next_best_action import DecisionPolicy, delivery_channel
from engine.profile import Profile
from engine.scoring import OnlineRates
from engine.touchpoints import TOUCHPOINT_DIMENSION
from training.simulation.checks import Delivery, Violations, check_offer
from training.simulation.population import CustomerTruth

#: Products a customer holds once they accept the offer that sells them.
PRODUCT_SOLD: dict[str, str] = {
    "savings_plan": "savings_account",
    "credit_card_upgrade": "premium_credit_card",
    "travel_insurance": "travel_insurance",
}
#: Market context: mortgage rates fall by this many basis points from this day of the period.
MORTGAGE_RATE_DROP = (60, 35)
ANSWER_DELAY = timedelta(minutes=1)
#: How long a decision uses the same population prior and rates. A store caches them for 5 s
#: of wall clock; here an hour of simulated time, about two decisions at 10,000 in 180 days.
PRIOR_TTL = timedelta(hours=1)


class PolicyResult(BaseModel):
    policy: str
    decisions_with_actions: int = Field(description="Decisions that offered an action.")
    first_accepted: int = Field(description="Of those, decisions whose first offer was accepted.")
    acceptance_rate: float = Field(
        description="first_accepted / decisions_with_actions, in [0, 1]."
    )
    offers: int = Field(description="Actions offered, every rank of every slate.")
    offers_accepted: int
    value_accepted_eur: float = Field(description="Catalogue value of the accepted offers, EUR.")
    expected_value_eur: float = Field(
        description="Sum over offers of latent affinity x value, EUR: the same, without the luck."
    )
    offers_by_kind: dict[str, int]
    violations: Violations


@dataclass(frozen=True, slots=True)
class Moment:
    """A decision asked at a touch, with the customer's random answer to whatever is offered."""

    number: int
    touch: Event
    truth: CustomerTruth
    answers: tuple[float, ...]  # uniform in [0, 1), by rank: accepted if below the affinity
    picks: tuple[float, ...]  # uniform in [0, 1), by rank: the random policy's choices


@dataclass
class _Tally:
    decisions: int = 0
    first_accepted: int = 0
    offers: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    value: float = 0.0
    expected_value: float = 0.0
    violations: Violations = field(default_factory=Violations)


class Replay:
    """One policy's world, offering the slate Rapport's `decide` returns."""

    name = "rapport"

    def __init__(self, policy: DecisionPolicy, config: EngineConfig, start: datetime) -> None:
        """`start`: of the simulated period, when the market context begins."""
        self.policy, self.config, self.start = policy, config, start
        self.profiles: dict[str, Profile] = {}
        #: Population counters, as the stores keep them (less touchpoint stats: no decision
        #: reads them, and there is one dimension per touchpoint).
        self.counts: dict[str, Counter[str]] = {}
        self.sold: dict[str, set[str]] = {}
        self.deliveries: dict[str, list[Delivery]] = {}
        self.tally = _Tally()
        self.actions = {action.id: action for action in policy.catalogue.actions}
        self._purposes = {action.id: action.purpose.value for action in policy.catalogue.actions}
        self._prior: tuple[datetime, ChannelPrior, AcceptanceRates] | None = None

    def fold(self, event: Event) -> None:
        """Fold as a store does: into the profile and, once applied, the population counters."""
        profile = self.profiles.get(event.customer_id)
        if profile is None:
            profile = self.profiles[event.customer_id] = new_profile(event.customer_id)
        if apply_in_place(profile, event, self.config) is FoldStatus.APPLIED:
            for dimension, key in population_dimensions(event):
                if not dimension.startswith(TOUCHPOINT_DIMENSION):
                    self.counts.setdefault(dimension, Counter())[key] += 1

    def offer(self, moment: Moment) -> None:
        """Decide at `moment`, check the offers, deliver them and fold the customer's answers."""
        profile = self.profiles.get(moment.touch.customer_id)
        prior, rates = self._learned(moment.touch.occurred_at)
        decision = decide(
            profile,
            self._request(moment),
            prior=prior,
            config=self.config,
            decision_id=f"sim-{moment.number:06d}",
            at=moment.touch.occurred_at,
            policy=self.policy,
            scorer=OnlineRates(rates),
        )
        decision = self.choose(decision, profile, prior, moment)
        if decision.actions:
            self._deliver(decision, profile, moment)
            self._answer(decision, moment)
            self.tally.decisions += 1

    def choose(
        self, decision: Decision, profile: Profile | None, prior: ChannelPrior, moment: Moment
    ) -> Decision:
        """The decision as offered: Rapport's own pick."""
        return decision

    def result(self) -> PolicyResult:
        tally = self.tally
        return PolicyResult(
            policy=self.name,
            decisions_with_actions=tally.decisions,
            first_accepted=tally.first_accepted,
            acceptance_rate=tally.first_accepted / tally.decisions if tally.decisions else 0.0,
            offers=tally.offers.total(),
            offers_accepted=tally.accepted,
            value_accepted_eur=tally.value,
            expected_value_eur=round(self.tally.expected_value, 2),
            offers_by_kind=dict(sorted(self.tally.offers.items())),
            violations=self.tally.violations,
        )

    def _learned(self, at: datetime) -> tuple[ChannelPrior, AcceptanceRates]:
        """The population prior and acceptance rates, rebuilt once their time is up."""
        if self._prior is None or at - self._prior[0] >= PRIOR_TTL:
            prior = ChannelPrior.from_counts(self.counts)
            self._prior = (at, prior, AcceptanceRates.from_population(prior.counts))
        return self._prior[1], self._prior[2]

    def _request(self, moment: Moment) -> DecisionRequest:
        """What the touchpoint knows: the request under way, products held, the market."""
        touch, at = moment.touch, moment.touch.occurred_at
        held = sorted({*moment.truth.products, *self.sold.get(touch.customer_id, set())})
        day, drop = MORTGAGE_RATE_DROP
        fallen = at >= self.start + timedelta(days=day)
        context: dict[str, object] = {
            "products": held,
            "market": {"mortgage_rate_drop_bp": drop if fallen else 0},
        }
        if isinstance(touch.typed, RequestAttributes):
            context["request"] = touch.typed.request
        return DecisionRequest(
            customer_id=touch.customer_id,
            touchpoint=touch.touchpoint,
            channel=touch.channel,
            context=context,
        )

    def _deliver(self, decision: Decision, profile: Profile | None, moment: Moment) -> None:
        """Check each offer against the profile and what was delivered before (this slate's
        earlier offers included), then deliver the slate."""
        deliveries = self.deliveries.setdefault(decision.customer_id, [])
        for offered in decision.actions:
            action = self.actions[offered.id]
            self.tally.violations += check_offer(
                offered,
                action,
                profile=profile,
                deliveries=deliveries,
                at=decision.decided_at,
                policy=self.policy.contact,
                config=self.config,
            )
            deliveries.append(Delivery.of(offered, action, decision.decided_at))
            self.tally.offers[offered.kind] += 1
            self.tally.expected_value += moment.truth.action_affinity[action.id] * action.value
        for event in exposure_events(decision, self._purposes, self.policy.limited):
            self.fold(event)

    def _answer(self, decision: Decision, moment: Moment) -> None:
        """The customer answers each offer; the first one's answer is the acceptance rate's."""
        for rank, offered in enumerate(decision.actions):
            action = self.actions[offered.id]
            accepted = moment.answers[rank] < moment.truth.action_affinity[action.id]
            outcome = OutcomeKind.ACCEPTED if accepted else OutcomeKind.DECLINED
            at = decision.decided_at + ANSWER_DELAY
            self.fold(outcome_event(decision, action.id, outcome, at=at))
            if accepted:
                self.tally.first_accepted += int(rank == 0)
                self.tally.accepted += 1
                self.tally.value += action.value
                if action.id in PRODUCT_SOLD:
                    self.sold.setdefault(decision.customer_id, set()).add(PRODUCT_SOLD[action.id])


class _Substitute(Replay):
    """Offers a slate of the actions the engine allows (its trace), picked its own way."""

    def choose(
        self, decision: Decision, profile: Profile | None, prior: ChannelPrior, moment: Moment
    ) -> Decision:
        allowed = [trace for trace in decision.candidates if trace.status != "dropped"]
        if not allowed:
            return decision
        slate = self.rank([self.actions[t.action_id] for t in allowed], decision, moment)
        contact = contact_channel(profile, prior, at=decision.decided_at, config=self.config)
        offered = [
            _offered(
                self.actions[allowed[index].action_id],
                rank,
                delivery_channel(allowed[index].channels, decision.touchpoint_channel, contact),
                self.name,
            )
            for rank, index in enumerate(slate[: self.policy.exploration.max_actions], start=1)
        ]
        return decision.model_copy(update={"actions": offered})

    def rank(self, allowed: list[Action], decision: Decision, moment: Moment) -> list[int]:
        """Indices in `allowed`, best first: the slate is the first `max_actions` of them."""
        raise NotImplementedError


class RandomReplay(_Substitute):
    name = "random"

    def rank(self, allowed: list[Action], decision: Decision, moment: Moment) -> list[int]:
        remaining, ranked = list(range(len(allowed))), []
        for pick in moment.picks[: len(allowed)]:
            ranked.append(remaining.pop(min(int(pick * len(remaining)), len(remaining) - 1)))
        return ranked


class OracleReplay(_Substitute):
    name = "oracle"

    def rank(self, allowed: list[Action], decision: Decision, moment: Moment) -> list[int]:
        affinity = moment.truth.action_affinity
        return sorted(range(len(allowed)), key=lambda index: -affinity[allowed[index].id])


class ValueOracleReplay(_Substitute):
    name = "oracle_value"

    def rank(self, allowed: list[Action], decision: Decision, moment: Moment) -> list[int]:
        affinity, problems = moment.truth.action_affinity, set(decision.open_problems)

        def priority(index: int) -> tuple[bool, float]:
            action = allowed[index]
            first = bool(problems & {problem.value for problem in action.addresses})
            return first, affinity[action.id] * action.value * action.weight

        return sorted(range(len(allowed)), key=priority, reverse=True)


def _offered(action: Action, rank: int, channel: str, policy: str) -> ChosenAction:
    return ChosenAction(
        id=action.id,
        kind=action.kind.value,
        rank=rank,
        score=0.0,
        propensity=1.0,
        channel=channel,
        title=Reasons(en=action.title.en, it=action.title.it),
        message=Reasons(en=action.message.en, it=action.message.it),
        reasons=Reasons(en=f"Chosen by the {policy} policy", it=f"Scelta dalla politica {policy}"),
        reason_codes=[f"purpose:{action.purpose.value}"],
    )
