"""Next-best-action: the catalogue's actions through the contact policy and arbitration.

Pure: the catalogue, policy, acceptance scorer, time and decision id are all given. Returns the
ranked actions and a trace of every candidate (returned, outranked, or dropped and why).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
from engine.decision import CandidateTrace, ChosenAction, DecisionRequest, assemble
from engine.explain import action_reasons
from engine.facts import Facts, facts_for
from engine.policy import Admission, CompiledAction, ContactPolicy, Moment, admit, cap_refusal
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

    def compiled(self) -> CompiledPolicy:
        """The catalogue under the contact policy, prepared once for the policy's life.

        Kept on the instance with the catalogue and contact policy it was compiled from, so
        that a copy with another one (`model_copy(update=...)` copies the instance's state)
        compiles its own."""
        cached = self.__dict__.get("_compiled")
        if (
            isinstance(cached, CompiledPolicy)
            and cached.catalogue is self.catalogue
            and cached.contact is self.contact
        ):
            return cached
        compiled = CompiledPolicy.of(self.catalogue, self.contact)
        self.__dict__["_compiled"] = compiled
        return compiled

    @property
    def limited(self) -> frozenset[str]:
        """Actions whose deliveries some cap, cooldown or marketing frequency cap counts."""
        return self.compiled().limited

    @property
    def purposes(self) -> dict[str, str]:
        """The consent purpose of each catalogue action, by id."""
        return self.compiled().purposes


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A catalogue's actions compiled under a contact policy (see `DecisionPolicy.compiled`)."""

    catalogue: Catalogue
    contact: ContactPolicy
    actions: tuple[CompiledAction, ...]
    limited: frozenset[str]
    purposes: dict[str, str]

    @classmethod
    def of(cls, catalogue: Catalogue, contact: ContactPolicy) -> CompiledPolicy:
        actions = tuple(_compiled_action(action, contact) for action in catalogue.actions)
        return cls(
            catalogue=catalogue,
            contact=contact,
            actions=actions,
            limited=frozenset(action.id for action in actions if action.limited()),
            purposes={action.id: action.purpose.value for action in actions},
        )


#: Actions compiled under a contact policy, by identity: an experiment variant's catalogue is a
#: subset of the served one, built per decision, and reuses its compiled actions.
_COMPILED: dict[tuple[int, int], tuple[Action, ContactPolicy, CompiledAction]] = {}
_COMPILED_KEPT = 4096


def _compiled_action(action: Action, contact: ContactPolicy) -> CompiledAction:
    key = (id(action), id(contact))
    cached = _COMPILED.get(key)
    # The objects are kept with the entry, so their ids cannot be reused while it lives.
    if cached is not None and cached[0] is action and cached[1] is contact:
        return cached[2]
    if len(_COMPILED) >= _COMPILED_KEPT:
        _COMPILED.clear()
    compiled = CompiledAction.of(action, contact)
    _COMPILED[key] = (action, contact, compiled)
    return compiled


@dataclass(slots=True)
class ActionPlan:
    actions: list[ChosenAction]
    candidates: list[CandidateTrace]
    segment: str
    open_problems: list[str]


@dataclass(frozen=True, slots=True)
class _Slate:
    """What picking one decision's slate needs besides its candidates."""

    moment: Moment
    contact: ChannelEstimate | None
    exploration: Exploration
    decision_id: str


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
    facts: Facts | None = None,
) -> ActionPlan:
    """`facts`: the customer's facts (`facts_for`) if the caller has them already."""
    if facts is None:
        facts = facts_for(profile, request, at=at, config=config)
    # The facts hold both already (an unknown customer: no problems, the mass segment).
    problems = sorted(str(problem) for problem in facts.open_problems)
    segment = str(facts.values["profile.value_segment"])
    moment = Moment.of(
        profile,
        problems,
        touchpoint_channel=request.channel.value,
        at=at,
        policy=policy.contact,
        config=config,
    )
    compiled = policy.compiled()
    admissions = {
        action.id: (action, admit(action, moment, eligible=action.is_eligible(facts)))
        for action in compiled.actions
    }
    allowed = [action for action, admission in admissions.values() if admission.dropped is None]
    posteriors = (
        scorer.action_posteriors(
            [action.id for action in allowed], facts=facts, segment=segment, request=request
        )
        if allowed
        else []
    )
    objective = policy.objective
    scored = [
        assemble(
            Scored,
            action_id=action.id,
            propensity=float(alpha / (alpha + beta)),
            value=action.action.value,
            weight=action.action.weight,
            first=not action.addresses.isdisjoint(problems),
            alpha=float(alpha),
            beta=float(beta),
            objective=objective,
        )
        for action, (alpha, beta) in zip(allowed, posteriors, strict=True)
    ]
    slate = _Slate(
        moment=moment, contact=contact, exploration=policy.exploration, decision_id=decision_id
    )
    chosen = _fill_slate(scored, admissions, slate)
    by_id = {s.action_id: s for s in scored}
    returned = {a.id for a in chosen}
    traces = [
        _trace(action, admission, by_id.get(action.id), returned)
        for action, admission in admissions.values()
    ]
    return ActionPlan(actions=chosen, candidates=traces, segment=segment, open_problems=problems)


def _fill_slate(
    scored: list[Scored],
    admissions: dict[str, tuple[CompiledAction, Admission]],
    slate: _Slate,
) -> list[ChosenAction]:
    """Pick slot by slot. Actions picked in this decision count toward the caps of the next
    ones, so a slate never breaks a cap that each of its actions keeps alone."""
    moment = slate.moment
    profile, at = moment.profile, moment.at
    rng = decision_rng(slate.decision_id)
    delivered = list(profile.exposures) if profile else []
    remaining = ranked(scored)
    chosen: list[ChosenAction] = []
    while len(chosen) < slate.exploration.max_actions:
        remaining = [c for c in remaining if _open_channels(admissions[c.action_id], delivered, at)]
        if not remaining:
            break
        index, probability = pick_one(remaining, slate.exploration, rng)
        score = remaining.pop(index)
        action, admission = admissions[score.action_id]
        channels = _open_channels((action, admission), delivered, at)
        pick = _chosen(action, admission, channels, score, len(chosen) + 1, probability, slate)
        chosen.append(pick)
        delivered.append(
            Exposure(
                event_id=f"slate:{slate.decision_id}:{pick.rank}",
                at=at,
                action_id=action.id,
                channel=pick.channel,
                purpose=action.purpose.value,
            )
        )
    return chosen


def _open_channels(
    entry: tuple[CompiledAction, Admission], delivered: list[Exposure], at: datetime
) -> list[str]:
    action, admission = entry
    return [
        channel
        for channel in admission.channels
        if cap_refusal(action, channel, delivered, at) is None
    ]


def _chosen(
    action: CompiledAction,
    admission: Admission,
    channels: list[str],
    score: Scored,
    rank: int,
    probability: float,
    slate: _Slate,
) -> ChosenAction:
    addressed = [p for p in slate.moment.problems if p in action.addresses]
    return assemble(
        ChosenAction,
        id=action.id,
        kind=action.kind,
        rank=rank,
        score=score.priority,
        propensity=probability,
        channel=delivery_channel(channels, slate.moment.touchpoint_channel, slate.contact),
        title=action.title,
        message=action.message,
        reasons=action_reasons(addressed, score.propensity),
        reason_codes=[*admission.reason_codes, action.purpose_code],
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
    action: CompiledAction, admission: Admission, score: Scored | None, returned: set[str]
) -> CandidateTrace:
    dropped = admission.dropped
    status = (
        "dropped" if dropped is not None else ("returned" if action.id in returned else "outranked")
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
    return assemble(
        CandidateTrace,
        action_id=action.id,
        kind=action.kind,
        status=status,
        dropped=None if dropped is None else dropped.value,
        channel_refusals={ch: r.value for ch, r in admission.channel_refusals.items()},
        channels=admission.channels,
        reason_codes=admission.reason_codes,
        factors=factors,
    )
