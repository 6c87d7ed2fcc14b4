"""What the console's pages show, shaped from logged data: the customer's timeline, the
decision inspector's arbitration matrix and the touchpoint's screen (no HTTP here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.decision import CandidateTrace, Decision
from engine.events import Channel, Event, EventType
from engine.policy import ChannelRefusal, DropReason
from feature_store.base import CustomerExport, OnlineStore

# -- recently active customers -------------------------------------------------------------------

#: How many of the latest events the home page looks through for recently active customers.
RECENT_WINDOW = 2000


@dataclass(frozen=True)
class RecentCustomer:
    customer_id: str
    last_event_at: datetime
    events: int  # in the window looked through


def recently_active(store: OnlineStore, limit: int) -> list[RecentCustomer]:
    """The customers of the latest `RECENT_WINDOW` events logged, latest first. Two reads of
    the log, whatever its length (`seq` only grows, so the tail starts at the high water
    mark minus the window)."""
    high_water = store.read_log("events", 0, 1).high_water
    tail = store.read_log("events", max(0, high_water - RECENT_WINDOW), RECENT_WINDOW).records
    latest: dict[str, RecentCustomer] = {}
    for record in reversed(tail):
        at = datetime.fromtimestamp(record.at_us / 1_000_000, tz=UTC)
        seen = latest.get(record.customer_id)
        latest[record.customer_id] = RecentCustomer(
            customer_id=record.customer_id,
            last_event_at=max(at, seen.last_event_at) if seen else at,
            events=seen.events + 1 if seen else 1,
        )
    return list(latest.values())[:limit]


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


#: What each kind of touchpoint shows a decision as.
SCREENS = {
    Channel.ATM.value: "ATM screen",
    Channel.MOBILE_APP.value: "App offer card",
    Channel.WEB.value: "Web page banner",
    Channel.CALL_CENTER.value: "Agent script",
    Channel.BRANCH.value: "Teller prompt",
    Channel.CHAT.value: "Chat reply",
}


@dataclass(frozen=True)
class TouchpointScreen:
    title: str
    lines: list[str]


def touchpoint_screen(decision: Decision) -> TouchpointScreen:
    """What the touchpoint shows, in English: the pre-filled defaults, then the offers (as an
    agent's script, at a call centre)."""
    lines = [_default_prompt(default.request, default.values) for default in decision.defaults]
    lines += [_offer(action.title.en, action.message.en) for action in decision.actions]
    channel = decision.touchpoint_channel
    if channel == Channel.CALL_CENTER.value:
        lines = [f"Offer: “{line}”" for line in lines]
    return TouchpointScreen(title=SCREENS.get(channel, f"{channel} message"), lines=lines)


def _offer(title: str, message: str) -> str:
    return f"{title} {message}" if title.endswith(("?", "!", ".")) else f"{title}: {message}"


def _default_prompt(request: str, values: dict[str, Any]) -> str:
    if request == "cash_withdrawal" and "amount" in values:
        currency = f" {values['currency']}" if values.get("currency") else ""
        receipt = "" if values.get("receipt", True) else ", no receipt"
        return f"Your usual {values['amount']}{currency}{receipt}?"
    shown = ", ".join(f"{key} {value}" for key, value in sorted(values.items()))
    return f"Your usual {request.replace('_', ' ')}: {shown}?"


def channels() -> Sequence[str]:
    return [channel.value for channel in Channel]
