"""Off-policy evaluation of a candidate policy over an experiment's logged decisions.

Each logged decision records the probability with which its first action was picked
(`ChosenAction.propensity`, rank 1). A candidate policy says with which probability it would
have picked that same action first in the same decision (`TargetPropensity`); the estimators
of `experiments.ope` then give the mean reward per decision the candidate would have had.
Only first actions are used: the propensities of later ranks are conditional on the earlier
picks, which a candidate would have made differently.

Where a candidate's propensities come from is the caller's business: a trained model's
action probabilities, or `greedy_candidate`, the logged ranking without exploration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from engine.catalogue import Catalogue
from engine.decision import ChosenAction, Decision
from experiments.errors import InvalidLogs
from experiments.logs import ExposedDecision
from experiments.ope import PolicyValueEstimate, ips, snips

#: The probability, in [0, 1], that the candidate picks this action first in this decision.
TargetPropensity = Callable[[Decision, ChosenAction], float]


@dataclass(frozen=True)
class CandidatePolicy:
    """A policy to evaluate: its name, what it is in a few words, and its propensities."""

    name: str
    description: str
    propensity: TargetPropensity


class OffPolicyEvaluation(BaseModel):
    """The candidate's estimated value against the value the logged policies had.

    Values are mean rewards per decision in the primary metric's units (a conversion
    probability, or EUR). `estimates` holds SNIPS (the headline: less variable) and IPS.
    """

    model_config = ConfigDict(frozen=True)

    candidate: str
    description: str
    decisions: int
    logged_value: float
    estimates: list[PolicyValueEstimate]

    @property
    def headline(self) -> PolicyValueEstimate:
        return self.estimates[0]


def evaluate_candidate(
    decisions: Sequence[ExposedDecision], candidate: CandidatePolicy, *, alpha: float = 0.05
) -> OffPolicyEvaluation | None:
    """SNIPS and IPS estimates of `candidate` over the decisions that returned an action;
    None when fewer than 2 did or the candidate never picks a logged action."""
    rewards: list[float] = []
    logged: list[float] = []
    target: list[float] = []
    for exposed in decisions:
        decision = exposed.decision()
        if decision is None or exposed.action_id is None or not exposed.propensity:
            continue
        chosen = decision.action(exposed.action_id)
        if chosen is None:
            continue
        rewards.append(exposed.reward)
        logged.append(exposed.propensity)
        target.append(candidate.propensity(decision, chosen))
    if len(rewards) < 2:
        return None
    try:
        estimates = [
            snips(rewards, logged, target, alpha=alpha),
            ips(rewards, logged, target, alpha=alpha),
        ]
    except InvalidLogs:
        return None  # e.g. the candidate takes none of the logged actions
    return OffPolicyEvaluation(
        candidate=candidate.name,
        description=candidate.description,
        decisions=len(rewards),
        logged_value=sum(rewards) / len(rewards),
        estimates=estimates,
    )


def greedy_candidate(catalogue: Catalogue) -> CandidatePolicy:
    """The logged ranking without exploration: the first action is the best-ranked candidate
    that was not dropped (an action addressing an open problem first, then the highest
    priority, ties by id), with probability 1.

    An approximation where a cap left the best-ranked action without an open channel (the
    trace does not say so): such decisions count against the candidate.
    """
    addresses = {action.id: {p.value for p in action.addresses} for action in catalogue.actions}

    def propensity(decision: Decision, chosen: ChosenAction) -> float:
        problems = set(decision.open_problems)
        allowed = [c for c in decision.candidates if c.status != "dropped" and c.factors]
        if not allowed:
            return 0.0
        best = min(
            allowed,
            key=lambda c: (
                not (addresses.get(c.action_id, set()) & problems),
                -c.factors.get("priority", 0.0),
                c.action_id,
            ),
        )
        return 1.0 if best.action_id == chosen.id else 0.0

    return CandidatePolicy(
        name="greedy",
        description="the same ranking without exploration",
        propensity=propensity,
    )
