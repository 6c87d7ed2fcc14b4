"""Next-best-action: the catalogue's actions through the contact policy and arbitration.

Pure: the catalogue, policy, acceptance scorer, time and decision id are all given. Returns the
ranked actions and a trace of every candidate (returned, outranked, or dropped and why).
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property

from pydantic import BaseModel, ConfigDict

from engine.arbitration import (
    Exploration,
    Objective,
    Scored,
    decision_rng,
    pick_one,
    ranked,
)
from engine.catalogue import Action, Catalogue
from engine.channel_preference import ChannelEstimate
from engine.config import EngineConfig
from engine.decision import CandidateTrace, ChosenAction, DecisionRequest, Reasons
from engine.events import Channel
from engine.explain import action_reasons
from engine.facts import facts_for, open_problems, value_segment
from engine.policy import Admission, ContactPolicy, admit, cap_refusal
from engine.preferences import Purpose
from engine.profile import Exposure, Profile
from engine.scoring import Scorer


class DecisionPolicy(BaseModel):
    """What a decision applies: the catalogue, the contact policy and the exploration."""

    model_config = ConfigDict(frozen=True)

    catalogue: Catalogue
    contact: ContactPolicy = ContactPolicy()
    exploration: Exploration = Exploration()
    objective: Objective = "expected_value"

    @property
    def version(self) -> str:
        version = f"{self.catalogue.version}/{self.contact.version}/{self.exploration.strategy}"
        return version if self.objective == "expected_value" else f"{version}/{self.objective}"

    @cached_property  # the catalogue is fixed for the policy's life: computed once
    def limited(self) -> frozenset[str]:
        """Actions whose deliveries some cap, cooldown or marketing frequency cap counts."""
        return frozenset(
            action.id
            for action in self.catalogue.actions
            if action.caps or action.cooldown_days or action.purpose is Purpose.MARKETING
        )

    @cached_property
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
    scorer: Scorer,
    contact: ChannelEstimate | None,
    decision_id: str,
    at: datetime,
    config: EngineConfig,
) -> ActionPlan:
    facts = facts_for(profile, request, at=at, config=config)
    problems = sorted(p.value for p in open_problems(profile, at, config)) if profile else []
    segment = value_segment(profile).value if profile else "mass"
    admissions: dict[str, tuple[Action, Admission]] = {}
    for action in policy.catalogue.actions:
        admissions[action.id] = (
            action,
            admit(
                action,
                profile=profile,
                open_problems=problems,
                eligible=action.is_eligible(facts),
                touchpoint_channel=request.channel.value,
                hour=at.hour,
                at=at,
                policy=policy.contact,
                config=config,
            ),
        )
    allowed = [action for action, admission in admissions.values() if admission.dropped is None]
    posteriors = (
        scorer.action_posteriors(
            [action.id for action in allowed], facts=facts, segment=segment, request=request
        )
        if allowed
        else []
    )
    scored = [
        Scored(
            action_id=action.id,
            propensity=alpha / (alpha + beta),
            value=action.value,
            weight=action.weight,
            first=bool(set(problems) & {p.value for p in action.addresses}),
            alpha=alpha,
            beta=beta,
            objective=policy.objective,
        )
        for action, (alpha, beta) in zip(allowed, posteriors, strict=True)
    ]
    chosen = _fill_slate(
        scored, admissions, profile, request, contact, problems, policy, decision_id, at
    )
    by_id = {s.action_id: s for s in scored}
    returned = {a.id for a in chosen}
    traces = [
        _trace(action, admission, by_id.get(action.id), returned)
        for action, admission in admissions.values()
    ]
    return ActionPlan(actions=chosen, candidates=traces, segment=segment, open_problems=problems)


def _fill_slate(
    scored: list[Scored],
    admissions: dict[str, tuple[Action, Admission]],
    profile: Profile | None,
    request: DecisionRequest,
    contact: ChannelEstimate | None,
    problems: list[str],
    policy: DecisionPolicy,
    decision_id: str,
    at: datetime,
) -> list[ChosenAction]:
    """Pick slot by slot. Actions picked in this decision count toward the caps of the next
    ones, so a slate never breaks a cap that each of its actions keeps alone."""
    rng = decision_rng(decision_id)
    delivered = list(profile.exposures) if profile else []
    remaining = ranked(scored)
    chosen: list[ChosenAction] = []
    while len(chosen) < policy.exploration.max_actions:
        remaining = [
            c for c in remaining if _open_channels(admissions[c.action_id], delivered, at, policy)
        ]
        if not remaining:
            break
        index, probability = pick_one(remaining, policy.exploration, rng)
        score = remaining.pop(index)
        action, admission = admissions[score.action_id]
        channels = _open_channels((action, admission), delivered, at, policy)
        pick = _chosen(
            action,
            channels,
            score,
            len(chosen) + 1,
            probability,
            request,
            contact,
            problems,
            admission,
        )
        chosen.append(pick)
        delivered.append(
            Exposure(
                event_id=f"slate:{decision_id}:{pick.rank}",
                at=at,
                action_id=action.id,
                channel=pick.channel,
                purpose=action.purpose.value,
            )
        )
    return chosen


def _open_channels(
    entry: tuple[Action, Admission], delivered: list[Exposure], at: datetime, policy: DecisionPolicy
) -> list[str]:
    action, admission = entry
    return [
        channel
        for channel in admission.channels
        if cap_refusal(action, Channel(channel), delivered, at, policy.contact) is None
    ]


def _chosen(
    action: Action,
    channels: list[str],
    score: Scored,
    rank: int,
    probability: float,
    request: DecisionRequest,
    contact: ChannelEstimate | None,
    problems: list[str],
    admission: Admission,
) -> ChosenAction:
    addressed = sorted(set(problems) & {p.value for p in action.addresses})
    return ChosenAction(
        id=action.id,
        kind=action.kind.value,
        rank=rank,
        score=score.priority,
        propensity=probability,
        channel=delivery_channel(channels, request.channel.value, contact),
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
            "lever": score.lever,
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
