"""Deciding: personalised defaults and the contact channel for a customer at a touchpoint.

`decide` is pure: the profile, the population prior, the time and the decision id are given.
Next-best-action arbitration fills `Decision.actions` (a later stage); the shape is fixed here.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from engine.arbitration import AcceptanceRates
from engine.channel_preference import ChannelEstimate, ChannelPrior, contact_channel
from engine.config import EngineConfig
from engine.decision import (
    ContactChannel,
    Decision,
    DecisionRequest,
    Default,
    HabitStatus,
    HabitTrace,
    Reasons,
    assemble,
)
from engine.errors import UnknownOutcomeTarget
from engine.events import Channel, Event, EventType, OutcomeKind
from engine.explain import (
    contact_channel_reasons,
    habit_reasons,
    habit_status_reasons,
    join_reasons,
    stated_override_reasons,
)
from engine.facts import facts_for
from engine.habits import UsualRequest, usual_requests
from engine.next_best_action import DecisionPolicy, next_best_actions
from engine.profile import Profile
from engine.scoring import OnlineRates, Scorer

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
    policy: DecisionPolicy | None = None,
    scorer: Scorer | None = None,
) -> Decision:
    """Answer a touchpoint: the defaults to pre-fill here, the channel to contact by and,
    with a `policy`, the next-best-actions.

    `scorer` estimates acceptance: a served model, or by default the online smoothed rates of
    the population counters (a server passes them prepared: `engine.population`). A scorer
    that estimates defaults' acceptance also decides which habits are offered: only those at
    or above `config.min_default_acceptance`."""
    scorer = scorer or OnlineRates(AcceptanceRates.from_population(prior.counts))
    considered = (
        usual_requests(
            profile,
            config,
            include_suppressed=True,
            include_unformed=True,
            at=at,
            timed_channel=request.channel.value,
            exact_rhythms=False,
        )
        if profile
        else []
    )
    habits = [habit for habit in considered if habit.formed and not habit.suppressed]
    offered, traces = _offered_habits(considered, request, scorer, config)
    contact = contact_channel(profile, prior, at=at, config=config)
    plan = (
        next_best_actions(
            profile,
            request,
            policy=policy,
            scorer=scorer,
            contact=contact,
            decision_id=decision_id,
            at=at,
            config=config,
            facts=facts_for(profile, request, at=at, config=config, habits=habits),
        )
        if policy is not None
        else None
    )
    return assemble(
        Decision,
        decision_id=decision_id,
        customer_id=request.customer_id,
        touchpoint=request.touchpoint,
        touchpoint_channel=request.channel.value,
        decided_at=at,
        known_customer=profile is not None,
        defaults=[personalised_default(habit, profile) for habit in offered if profile],
        channel=contact_choice(contact),
        actions=plan.actions if plan else [],
        candidates=plan.candidates if plan else [],
        habits=traces,
        segment=plan.segment if plan else None,
        open_problems=plan.open_problems if plan else [],
        catalogue_version=policy.catalogue.version if policy else None,
        exploration=policy.exploration.strategy if policy else None,
        degraded=False,
        policy_version=policy.version if policy else POLICY_VERSION,
        model_version=scorer.model_version,
        context=dict(request.context),
        experiments=[],
    )


def _offered_habits(
    considered: list[UsualRequest],
    request: DecisionRequest,
    scorer: Scorer,
    config: EngineConfig,
) -> tuple[list[UsualRequest], list[HabitTrace]]:
    """The habits to offer as defaults here, and the trace of every habit considered here.

    Offered: those learned at this kind of touchpoint (and for the request kind the context
    names, if any), formed and not suppressed, due if their rhythm decides when (unless the
    context names their request kind: the customer is about to make it), and that the scorer,
    if it has an opinion, expects accepted often enough. Without a request kind in the
    context, habits that are due come first."""
    requested = request.context.get("request")
    kind = requested if isinstance(requested, str) else None
    channel = request.channel.value
    status: dict[int, HabitStatus] = {}
    here = [h for h in considered if h.channel == channel]
    candidates: list[UsualRequest] = []
    for index, habit in enumerate(here):
        if not habit.formed:
            status[index] = "below_count" if habit.below == "count" else "below_share"
        elif habit.suppressed:
            status[index] = "suppressed_after_declines"
        elif kind is not None and habit.request != kind:
            status[index] = "filtered_by_request"
        elif kind is None and habit.timed and habit.due is False:
            status[index] = "not_due"
        else:
            candidates.append(habit)
    acceptance = scorer.default_acceptance(candidates, request=request) if candidates else None
    probability: dict[int, float] = {}
    offered: list[UsualRequest] = []
    for position, habit in enumerate(candidates):
        index = here.index(habit)
        if acceptance is not None:
            probability[index] = acceptance[position]
            if acceptance[position] < config.min_default_acceptance:
                status[index] = "below_acceptance"
                continue
        status[index] = "offered"
        offered.append(habit)
    if kind is None:
        offered.sort(key=lambda habit: habit.due is not True)  # stable: due ones first
    traces = [
        _habit_trace(habit, status[index], probability.get(index), kind, config)
        for index, habit in enumerate(here)
    ]
    return offered, traces


def _habit_trace(
    habit: UsualRequest,
    status: HabitStatus,
    acceptance: float | None,
    requested: str | None,
    config: EngineConfig,
) -> HabitTrace:
    rhythm = habit.rhythm
    return assemble(
        HabitTrace,
        request=habit.request,
        channel=habit.channel,
        values=habit.values,
        signature=habit.signature,
        kind=habit.kind,
        status=status,
        offered=status == "offered",
        matches=habit.matches,
        window=habit.window,
        declines=habit.declines,
        acceptance=acceptance,
        threshold=config.min_default_acceptance if acceptance is not None else None,
        rhythm=f"{rhythm.period}:{rhythm.day}" if rhythm else None,
        due=habit.due,
        reasons=habit_status_reasons(
            habit,
            status,
            config_min_count=config.habit_min_count,
            config_min_share=config.habit_min_share,
            acceptance=acceptance,
            threshold=config.min_default_acceptance,
            requested=requested,
        ),
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
    return assemble(
        Default,
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
    return assemble(
        ContactChannel,
        channel=estimate.channel,
        source=estimate.source,
        probability=estimate.probability,
        confidence=estimate.confidence,
        reasons=contact_channel_reasons(estimate),
    )


def outcome_event(
    decision: Decision,
    item_id: str,
    outcome: OutcomeKind,
    *,
    at: datetime,
    value: float | None = None,
) -> Event:
    """The event that teaches the profile how the customer answered one item of a decision.

    Its id is derived from the decision and the item (and, for an action, the answer), so a
    repeated outcome is a duplicate, while a conversion after an acceptance is a new answer.
    """
    action = decision.action(item_id)
    if action is not None:
        return Event(
            event_id=f"outcome:{decision.decision_id}:{item_id}:{outcome.value}",
            customer_id=decision.customer_id,
            touchpoint=decision.touchpoint,
            channel=Channel(action.channel),
            type=EventType.OUTCOME,
            occurred_at=at,
            attributes={
                "decision_id": decision.decision_id,
                "target": item_id,
                "outcome": outcome.value,
                "kind": "action",
                "segment": decision.segment,
                "value": value,
            },
        )
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


def exposure_events(
    decision: Decision, purposes: dict[str, str], limited: Collection[str] | None = None
) -> list[Event]:
    """The returned actions as delivered: they count toward caps and cooldowns from now on.

    `purposes` maps action ids to their consent purpose (from the catalogue); `limited` names
    the actions some cap, cooldown or marketing frequency cap counts (None: all of them).
    """
    return [
        Event(
            event_id=f"exposure:{decision.decision_id}:{action.id}",
            customer_id=decision.customer_id,
            touchpoint=decision.touchpoint,
            channel=Channel(action.channel),
            type=EventType.ACTION_EXPOSED,
            occurred_at=decision.decided_at,
            attributes={
                "decision_id": decision.decision_id,
                "action_id": action.id,
                "delivery_channel": action.channel,
                "purpose": purposes[action.id],
                "segment": decision.segment,
                "limited": limited is None or action.id in limited,
            },
        )
        for action in decision.actions
    ]
