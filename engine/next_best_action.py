"""Next-best-action: the catalogue's actions through the contact policy and arbitration.

Pure: the catalogue, policy, acceptance rates, time and decision id are all given. Returns the
ranked actions and a trace of every candidate (returned, outranked, or dropped and why).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from engine.arbitration import AcceptanceRates, Exploration, Scored, decision_rng, select
from engine.catalogue import Action, Catalogue
from engine.channel_preference import ChannelEstimate
from engine.config import EngineConfig
from engine.decision import CandidateTrace, ChosenAction, DecisionRequest, Reasons
from engine.explain import action_reasons
from engine.facts import facts_for, open_problems, value_segment
from engine.policy import Admission, ContactPolicy, admit
from engine.profile import Profile


class DecisionPolicy(BaseModel):
    """What a decision applies: the catalogue, the contact policy and the exploration."""

    model_config = ConfigDict(frozen=True)

    catalogue: Catalogue
    contact: ContactPolicy = ContactPolicy()
    exploration: Exploration = Exploration()

    @property
    def version(self) -> str:
        return f"{self.catalogue.version}/{self.contact.version}/{self.exploration.strategy}"

    @property
    def purposes(self) -> dict[str, str]:
        """The consent purpose of each catalogue action, by id."""
        return {action.id: action.purpose.value for action in self.catalogue.actions}


class ActionPlan(BaseModel):
    actions: list[ChosenAction]
    candidates: list[CandidateTrace]
    segment: str
    open_problems: list[str]


def next_best_actions(
    profile: Profile | None,
    request: DecisionRequest,
    *,
    policy: DecisionPolicy,
    rates: AcceptanceRates,
    contact: ChannelEstimate | None,
    decision_id: str,
    at: datetime,
    config: EngineConfig,
) -> ActionPlan:
    facts = facts_for(profile, request, at=at, config=config)
    problems = sorted(p.value for p in open_problems(profile, at, config)) if profile else []
    segment = value_segment(profile).value if profile else "mass"
    admissions: dict[str, tuple[Action, Admission]] = {}
    scored: list[Scored] = []
    for action in policy.catalogue.actions:
        admission = admit(
            action,
            profile=profile,
            open_problems=problems,
            eligible=action.is_eligible(facts),
            touchpoint_channel=request.channel.value,
            hour=at.hour,
            at=at,
            policy=policy.contact,
            config=config,
        )
        admissions[action.id] = (action, admission)
        if admission.dropped is None:
            alpha, beta = rates.posterior(action.id, segment)
            scored.append(
                Scored(
                    action_id=action.id,
                    propensity=alpha / (alpha + beta),
                    value=action.value,
                    weight=action.weight,
                    first=bool(set(problems) & {p.value for p in action.addresses}),
                    alpha=alpha,
                    beta=beta,
                )
            )
    picks = select(scored, policy.exploration, decision_rng(decision_id))
    by_id = {s.action_id: s for s in scored}
    chosen = [
        _chosen(
            admissions[p.action_id],
            by_id[p.action_id],
            p.rank,
            p.probability,
            request,
            contact,
            problems,
        )
        for p in picks
    ]
    returned = {a.id for a in chosen}
    traces = [
        _trace(action, admission, by_id.get(action.id), returned)
        for action, admission in admissions.values()
    ]
    return ActionPlan(actions=chosen, candidates=traces, segment=segment, open_problems=problems)


def _chosen(
    entry: tuple[Action, Admission],
    score: Scored,
    rank: int,
    probability: float,
    request: DecisionRequest,
    contact: ChannelEstimate | None,
    problems: list[str],
) -> ChosenAction:
    action, admission = entry
    addressed = sorted(set(problems) & {p.value for p in action.addresses})
    return ChosenAction(
        id=action.id,
        kind=action.kind.value,
        rank=rank,
        score=score.priority,
        propensity=probability,
        channel=delivery_channel(admission.channels, request.channel.value, contact),
        title=Reasons(en=action.title.en, it=action.title.it),
        message=Reasons(en=action.message.en, it=action.message.it),
        reasons=action_reasons(addressed, score.propensity),
        reason_codes=[*admission.reason_codes, f"purpose:{action.purpose.value}"],
    )


def delivery_channel(
    allowed: list[str], touchpoint_channel: str, contact: ChannelEstimate | None
) -> str:
    """Here, if the action can be delivered where the customer is; else the customer's
    preferred contact channel (stated or most likely learned) among the allowed ones."""
    if touchpoint_channel in allowed:
        return touchpoint_channel
    if contact is not None:
        likelihood = dict(contact.distribution)
        likelihood[contact.channel] = 2.0  # a stated or top channel first
        return max(allowed, key=lambda ch: (likelihood.get(ch, 0.0), -allowed.index(ch)))
    return allowed[0]


def _trace(
    action: Action, admission: Admission, score: Scored | None, returned: set[str]
) -> CandidateTrace:
    status = (
        "dropped"
        if admission.dropped is not None
        else ("returned" if action.id in returned else "outranked")
    )
    factors = (
        {
            "propensity": score.propensity,
            "value": score.value,
            "weight": score.weight,
            "priority": score.priority,
        }
        if score
        else {}
    )
    return CandidateTrace(
        action_id=action.id,
        kind=action.kind.value,
        status=status,
        dropped=admission.dropped.value if admission.dropped else None,
        channel_refusals={ch: r.value for ch, r in admission.channel_refusals.items()},
        channels=admission.channels,
        reason_codes=admission.reason_codes,
        factors=factors,
    )
