"""Deciding: personalised defaults and the contact channel for a customer at a touchpoint.

`decide` is pure: the profile, the population prior, the time and the decision id are given.
Next-best-action arbitration fills `Decision.actions` (a later stage); the shape is fixed here.
"""

from __future__ import annotations

from datetime import datetime

from engine.channel_preference import ChannelEstimate, ChannelPrior, contact_channel
from engine.config import EngineConfig
from engine.decision import ContactChannel, Decision, DecisionRequest, Default, Reasons
from engine.errors import UnknownOutcomeTarget
from engine.events import Event, EventType, OutcomeKind
from engine.explain import (
    contact_channel_reasons,
    habit_reasons,
    join_reasons,
    stated_override_reasons,
)
from engine.habits import UsualRequest, usual_requests
from engine.profile import Profile

#: Version of the decision logic, logged with every decision.
POLICY_VERSION = "defaults-v1"

#: Stated preferences that override a learned default's value of the same name.
_OVERRIDABLE_VALUES = ("receipt",)


def decide(
    profile: Profile | None,
    request: DecisionRequest,
    *,
    prior: ChannelPrior,
    config: EngineConfig,
    decision_id: str,
    at: datetime,
) -> Decision:
    """Answer a touchpoint: the defaults to pre-fill here and the channel to contact by."""
    requested = request.context.get("request")
    habits = (
        usual_requests(
            profile,
            config,
            channel=request.channel.value,
            request=requested if isinstance(requested, str) else None,
        )
        if profile
        else []
    )
    return Decision(
        decision_id=decision_id,
        customer_id=request.customer_id,
        touchpoint=request.touchpoint,
        touchpoint_channel=request.channel.value,
        decided_at=at,
        known_customer=profile is not None,
        defaults=[personalised_default(habit, profile) for habit in habits if profile],
        channel=contact_choice(contact_channel(profile, prior, at=at, config=config)),
        policy_version=POLICY_VERSION,
        context=request.context,
    )


def degraded_decision(request: DecisionRequest, *, decision_id: str, at: datetime) -> Decision:
    """The safe answer when the store cannot be read: nothing personal, flagged degraded."""
    return Decision(
        decision_id=decision_id,
        customer_id=request.customer_id,
        touchpoint=request.touchpoint,
        touchpoint_channel=request.channel.value,
        decided_at=at,
        known_customer=False,
        degraded=True,
        policy_version=POLICY_VERSION,
        context=request.context,
    )


def personalised_default(habit: UsualRequest, profile: Profile) -> Default:
    """A habit as a default; explicit preferences override learned values (and say so)."""
    values = dict(habit.values)
    reasons: list[Reasons] = [habit_reasons(habit)]
    for key in _OVERRIDABLE_VALUES:
        stated = profile.stated.get(key)
        if stated and stated.value is not None and key in values and values[key] != stated.value:
            values[key] = stated.value
            reasons.append(stated_override_reasons(key, stated.value))
    return Default(
        id=f"default:{habit.request}",
        request=habit.request,
        channel=habit.channel,
        values=values,
        confidence=habit.confidence,
        reasons=join_reasons(reasons),
        matches=habit.matches,
        window=habit.window,
        signature=habit.signature,
    )


def contact_choice(estimate: ChannelEstimate | None) -> ContactChannel | None:
    if estimate is None:
        return None
    return ContactChannel(
        channel=estimate.channel,
        source=estimate.source,
        probability=estimate.probability,
        confidence=estimate.confidence,
        reasons=contact_channel_reasons(estimate),
    )


def outcome_event(decision: Decision, item_id: str, outcome: OutcomeKind, *, at: datetime) -> Event:
    """The event that teaches the profile how the customer answered one item of a decision.

    Its id is derived from the decision and the item, so a repeated outcome is a duplicate.
    """
    default = decision.default(item_id)
    if default is None:
        raise UnknownOutcomeTarget(f"decision {decision.decision_id} returned no item {item_id!r}")
    return Event(
        event_id=f"outcome:{decision.decision_id}:{item_id}",
        customer_id=decision.customer_id,
        touchpoint=decision.touchpoint,
        channel=decision.touchpoint_channel,
        type=EventType.OUTCOME,
        occurred_at=at,
        attributes={
            "decision_id": decision.decision_id,
            "target": item_id,
            "outcome": outcome.value,
            "kind": "default",
            "request": default.request,
            "habit_channel": default.channel,
            "signature": default.signature,
        },
    )
