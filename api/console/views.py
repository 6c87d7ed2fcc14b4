"""What the console's pages show, shaped from the serving use-cases (no HTTP here).

The touchpoint simulator is a dry run by construction: `simulate` takes a `ReadableStore`,
which has only the reads a decision needs, so it cannot log a decision or an exposure (mypy
checks it), and it never calls `decide_for`, the use-case that logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from api.serving import ANONYMOUS_CUSTOMER, Assigner, new_decision_id
from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import decide
from engine.decision import CandidateTrace, Decision, DecisionRequest
from engine.events import Channel, Event, EventType
from engine.fold import fold
from engine.habits import UsualRequest, usual_requests
from engine.identity import HashedIdentity
from engine.next_best_action import DecisionPolicy
from engine.policy import ChannelRefusal, DropReason
from engine.preferences import ConsentStatus, Purpose
from engine.profile import Profile
from engine.scoring import Scorer
from feature_store.base import CustomerExport


class ReadableStore(Protocol):
    """The reads a decision needs: what the simulator may touch of the store, and nothing else."""

    @property
    def config(self) -> EngineConfig: ...

    def read_profile(self, customer_id: str) -> Profile | None: ...

    def population_prior(self) -> ChannelPrior: ...

    def resolve_identity(self, identity: HashedIdentity) -> str | None: ...


# -- customer 360: the timeline ---------------------------------------------------------------


@dataclass(frozen=True)
class TimelineRow:
    at: datetime
    kind: str  # an event type, or "decision"
    channel: str
    touchpoint: str
    summary: str
    decision_id: str | None = None


def _event_summary(event: Event) -> str:
    attributes = event.attributes
    if event.type is EventType.REQUEST:
        values = {k: v for k, v in sorted(attributes.items()) if k != "request"}
        shown = ", ".join(f"{k}={v}" for k, v in values.items())
        return f"{attributes.get('request', '?')} {shown}".strip()
    if event.type is EventType.OUTCOME:
        return f"{attributes.get('outcome')} {attributes.get('target')}"
    if event.type is EventType.ACTION_EXPOSED:
        return f"shown {attributes.get('action_id')} by {attributes.get('delivery_channel')}"
    if event.type is EventType.CONSENT_CHANGED:
        scope = f"{attributes.get('purpose')} {attributes.get('channel') or '*'}"
        return f"{scope}: {attributes.get('status')}"
    if event.type is EventType.PREFERENCE_STATED:
        return f"{attributes.get('key')} = {attributes.get('value')}"
    if event.type is EventType.FEEDBACK:
        return f"score {attributes.get('score')}"
    return ", ".join(f"{k}={v}" for k, v in sorted(attributes.items()) if v is not None)


def _decision_summary(decision: Decision) -> str:
    picked = [a.id for a in decision.actions] + [d.id for d in decision.defaults]
    return ", ".join(picked) if picked else "nothing returned"


def timeline(
    export: CustomerExport, *, kind: str | None, channel: str | None, limit: int = 200
) -> list[TimelineRow]:
    """Events and decisions, newest first, filtered by kind (event type or "decision")."""
    rows = [
        TimelineRow(
            at=event.occurred_at,
            kind=event.type.value,
            channel=event.channel.value,
            touchpoint=event.touchpoint,
            summary=_event_summary(event),
            decision_id=event.attributes.get("decision_id"),
        )
        for event in export.events
    ]
    rows += [
        TimelineRow(
            at=decision.decided_at,
            kind="decision",
            channel=decision.touchpoint_channel,
            touchpoint=decision.touchpoint,
            summary=_decision_summary(decision),
            decision_id=decision.decision_id,
        )
        for decision in export.decisions
    ]
    chosen = [
        row
        for row in rows
        if (not kind or row.kind == kind) and (not channel or row.channel == channel)
    ]
    return sorted(chosen, key=lambda row: row.at, reverse=True)[:limit]


# -- decision inspector: the arbitration matrix ---------------------------------------------------

#: The order in which the policy's steps drop candidates, for reading the matrix.
FACTORS = ("propensity", "value", "weight", "lever", "priority")


#: The policy's steps, in the order they drop a candidate, as an operator reads them.
DROP_STEPS = {
    DropReason.NOT_VALID.value: "validity: outside the action's dates or catalogue",
    DropReason.NOT_ELIGIBLE.value: "eligibility: the customer does not meet its conditions",
    DropReason.SERVICE_FIRST.value: "service first: an open problem comes before sales",
    DropReason.SUPPRESSED.value: "suppression: declined too often",
    DropReason.COOLDOWN.value: "cooldown: shown too recently",
    DropReason.NO_CHANNEL.value: "no channel left (see the refusals)",
}
CHANNEL_REFUSALS = {
    ChannelRefusal.NO_CONSENT.value: "no consent for this purpose",
    ChannelRefusal.QUIET_HOURS.value: "quiet hours",
    ChannelRefusal.ACTION_CAP.value: "the action's cap is reached",
    ChannelRefusal.FREQUENCY_CAP.value: "the contact frequency cap is reached",
}


@dataclass(frozen=True)
class MatrixRow:
    action_id: str
    kind: str
    status: str
    step: str  # where it fell, or "returned"/"outranked"
    channels: str
    channel_refusals: dict[str, str]
    factors: dict[str, float]
    pick_probability: float | None
    rank: int | None
    reason_codes: list[str] = field(default_factory=list)


def arbitration_matrix(decision: Decision) -> list[MatrixRow]:
    """Every candidate: returned first (by rank), then outranked (by priority), then dropped."""
    chosen = {action.id: action for action in decision.actions}

    def row(trace: CandidateTrace) -> MatrixRow:
        action = chosen.get(trace.action_id)
        return MatrixRow(
            action_id=trace.action_id,
            kind=trace.kind,
            status=trace.status,
            step=DROP_STEPS.get(trace.dropped, trace.dropped) if trace.dropped else trace.status,
            channels=", ".join(trace.channels),
            channel_refusals={
                channel: CHANNEL_REFUSALS.get(why, why)
                for channel, why in trace.channel_refusals.items()
            },
            factors={name: trace.factors[name] for name in FACTORS if name in trace.factors},
            pick_probability=action.propensity if action else None,
            rank=action.rank if action else None,
            reason_codes=trace.reason_codes,
        )

    order = {"returned": 0, "outranked": 1, "dropped": 2}
    return sorted(
        (row(trace) for trace in decision.candidates),
        key=lambda r: (
            order[r.status],
            r.rank if r.rank is not None else 0,
            -r.factors.get("priority", 0.0),
            r.action_id,
        ),
    )


# -- touchpoint simulator -------------------------------------------------------------------------


@dataclass(frozen=True)
class WhatIf:
    """Changes applied to a copy of the profile before a simulated decision."""

    open_complaint: bool = False
    marketing_revoked: bool = False

    @property
    def any(self) -> bool:
        return self.open_complaint or self.marketing_revoked

    def label(self) -> str:
        parts = [
            "with an open complaint" if self.open_complaint else "",
            "with marketing consent revoked" if self.marketing_revoked else "",
        ]
        return " and ".join(p for p in parts if p) or "as the customer is"


def _what_if_events(customer_id: str, what_if: WhatIf, at: datetime) -> list[Event]:
    common: dict[str, Any] = {
        "customer_id": customer_id,
        "touchpoint": "console-simulator",
        "occurred_at": at,
    }
    events = []
    if what_if.open_complaint:
        events.append(
            Event(
                event_id="what-if-complaint",
                channel=Channel.CALL_CENTER,
                type=EventType.COMPLAINT_OPENED,
                attributes={"case_id": "what-if-complaint"},
                **common,
            )
        )
    if what_if.marketing_revoked:
        events.append(
            Event(
                event_id="what-if-marketing-revoked",
                channel=Channel.WEB,
                type=EventType.CONSENT_CHANGED,
                attributes={"purpose": Purpose.MARKETING.value, "status": ConsentStatus.REVOKED},
                **common,
            )
        )
    return events


def with_what_if(
    profile: Profile | None,
    customer_id: str,
    what_if: WhatIf,
    *,
    at: datetime,
    config: EngineConfig,
) -> Profile | None:
    """A copy of the profile with the what-if folded in (the stored profile is untouched)."""
    events = _what_if_events(customer_id, what_if, at)
    return fold(profile, events, config) if events else profile


@dataclass(frozen=True)
class Simulation:
    """A dry-run decision and the profile it was computed on (the what-if applied)."""

    decision: Decision
    profile: Profile | None


def simulate(
    store: ReadableStore,
    request: DecisionRequest,
    *,
    at: datetime,
    policy: DecisionPolicy,
    scorer: Scorer | None,
    assigner: Assigner | None,
    what_if: WhatIf = WhatIf(),
    identity: HashedIdentity | None = None,
) -> Simulation:
    """The decision the touchpoint would get, computed as `api.serving.decide_for` computes
    it, without logging it or its exposures: nothing is written anywhere."""
    if identity is not None:
        customer_id = store.resolve_identity(identity) or ANONYMOUS_CUSTOMER
        request = request.model_copy(update={"customer_id": customer_id})
    profile = store.read_profile(request.customer_id)
    treatment = assigner(profile, request) if assigner else None
    scored_policy: DecisionPolicy | None = policy
    if treatment is not None:
        profile, scored_policy, scorer = treatment.profile, treatment.policy, treatment.scorer
    if what_if.any:
        profile = with_what_if(profile, request.customer_id, what_if, at=at, config=store.config)
    decision = decide(
        profile,
        request,
        prior=store.population_prior(),
        config=store.config,
        decision_id=f"dry_{new_decision_id()}",
        at=at,
        policy=scored_policy,
        scorer=scorer,
    )
    if treatment is not None:
        decision = decision.model_copy(update={"experiments": treatment.exposures})
    return Simulation(decision=decision, profile=profile)


@dataclass(frozen=True)
class DefaultConsidered:
    """A habit of this kind of touchpoint, and whether the decision offered it, and why."""

    request: str
    values: dict[str, Any]
    evidence: str
    offered: bool
    why: str


def defaults_considered(
    profile: Profile | None, decision: Decision, config: EngineConfig
) -> list[DefaultConsidered]:
    """Every habit learned at this kind of touchpoint (and for the request asked, if any):
    offered, suppressed after declines, or held back by the model's acceptance estimate."""
    if profile is None:
        return []
    requested = decision.context.get("request")
    habits = usual_requests(
        profile,
        config,
        channel=decision.touchpoint_channel,
        request=requested if isinstance(requested, str) else None,
        include_suppressed=True,
    )
    returned = {default.request for default in decision.defaults}

    def why(habit: UsualRequest) -> str:
        if habit.request in returned:
            return "offered"
        if habit.suppressed:
            return f"suppressed after {habit.declines} declines"
        return (
            "held back: the model estimates its acceptance below "
            f"{config.min_default_acceptance:.0%}"
        )

    return [
        DefaultConsidered(
            request=habit.request,
            values=habit.values,
            evidence=f"{habit.matches} of the last {habit.window}",
            offered=habit.request in returned,
            why=why(habit),
        )
        for habit in habits
    ]


def touchpoint_screen(decision: Decision) -> list[str]:
    """What the touchpoint shows, in English: the pre-filled default, then the offers."""
    lines = []
    for default in decision.defaults:
        values = default.values
        if default.request == "cash_withdrawal" and "amount" in values:
            receipt = "" if values.get("receipt", True) else ", no receipt"
            lines.append(
                f"Your usual {values['amount']} {values.get('currency', '')}{receipt}?".replace(
                    " ,", ","
                )
            )
        else:
            shown = ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
            lines.append(f"Your usual {default.request.replace('_', ' ')}: {shown}?")
    lines += [f"{action.title.en}: {action.message.en}" for action in decision.actions]
    return lines


def channels() -> Sequence[str]:
    return [channel.value for channel in Channel]
