"""Request and response bodies of the HTTP API (the wire contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from api.bounds import InputBounds, event_violation
from api.errors import field_errors
from api.params import Instant
from api.serving import ANONYMOUS_CUSTOMER, PendingEvent
from engine.decision import ChosenAction, Decision, DecisionRequest, HabitTrace, Reasons
from engine.events import Channel, Event, Identifier, OutcomeKind
from engine.identity import Identity
from engine.preferences import ConsentStatus, Purpose
from feature_store.base import AppendStatus

MAX_EVENTS_PER_BATCH = 1000


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Raw here: each event is validated on its own so one bad event rejects only itself.
    events: list[Any] = Field(
        min_length=1,
        max_length=MAX_EVENTS_PER_BATCH,
        description="Event objects. Each is validated alone: one that is not an object, or not "
        "a valid event, is rejected in its result, and the others are applied.",
    )


class EventResult(BaseModel):
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    folded: bool | None = Field(
        None, description="False for an accepted event older than the profile's horizon."
    )
    error: str | None = None
    field: str | None = None


class EventBatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


#: Stands in for the customer id of an event that names its customer by identifiers only.
UNRESOLVED_CUSTOMER = "unresolved"
ERASED_REASON = "the customer was erased: nothing is stored for them"


def _rejected(raw: dict[str, Any], field: str, reason: str) -> EventResult:
    event_id = raw.get("event_id")
    return EventResult(
        event_id=event_id if isinstance(event_id, str) else None,
        status="rejected",
        error=f"{field}: {reason}",
        field=field,
    )


def parse_event(raw: Any, bounds: InputBounds, now: datetime) -> PendingEvent | EventResult:
    """An event to route and apply, or its rejection naming the field and the reason.

    Besides `customer_id`, an event may name its customer by `identity` ({"type", "value"})
    and carry more `identities` to link (e.g. a web login with email and device). What it may
    carry is bounded (`api.bounds`).
    """
    if not isinstance(raw, dict):
        return EventResult(event_id=None, status="rejected", error="event: must be an object",
                           field="event")  # fmt: skip
    violation = event_violation(raw, bounds, now)
    if violation is not None:
        return _rejected(raw, *violation)
    raw = dict(raw)
    identity_fields = [raw.pop("identity")] if "identity" in raw else []
    extra = raw.pop("identities", [])
    if not isinstance(extra, list):
        return _rejected(raw, "identities", "must be a list of {type, value}")
    identities: list[Identity] = []
    for position, identity in enumerate([*identity_fields, *extra]):
        try:
            identities.append(Identity.model_validate(identity))
        except ValidationError as exc:
            [first, *_] = field_errors(list(exc.errors()), prefix=(f"identities.{position}",))
            return _rejected(raw, first["field"], first["reason"])
    named = raw.get("customer_id") is not None
    if not named:
        if not identities:
            return _rejected(raw, "customer_id", "a customer_id or an identity is required")
        raw["customer_id"] = UNRESOLVED_CUSTOMER
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        [first, *_] = field_errors(list(exc.errors()))
        return _rejected(raw, first["field"], first["reason"])
    return PendingEvent(event=event, identities=identities, named=named)


def batch_result(
    parsed: list[PendingEvent | EventResult],
    routed: list[Event | None],
    statuses: list[AppendStatus],
) -> EventBatchResult:
    """One result per posted event, in order: `routed` has an entry per PendingEvent, and
    `statuses` one per routed event that was not None."""
    routed_events = iter(routed)
    applied = iter(statuses)
    results = []
    for item in parsed:
        if isinstance(item, EventResult):
            results.append(item)
            continue
        event = next(routed_events)
        status = AppendStatus.ERASED if event is None else next(applied)
        event_id = item.event.event_id
        if status is AppendStatus.ERASED:
            results.append(EventResult(event_id=event_id, status="rejected", error=ERASED_REASON))
        elif status is AppendStatus.DUPLICATE:
            results.append(EventResult(event_id=event_id, status="duplicate"))
        else:
            folded = status is AppendStatus.ACCEPTED
            results.append(EventResult(event_id=event_id, status="accepted", folded=folded))
    return EventBatchResult(
        accepted=sum(r.status == "accepted" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        rejected=sum(r.status == "rejected" for r in results),
        results=results,
    )


class PreferencesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preferences: dict[str, Any] = Field(
        min_length=1,
        description="Stated preferences, e.g. {'contact_channel': 'sms', 'receipt': false}; "
        "null withdraws a statement.",
    )
    touchpoint: str = Field("api", min_length=1, max_length=64)
    channel: Channel = Channel.WEB
    source: str | None = Field(None, max_length=64)
    stated_at: Instant | None = None


class DecisionIn(BaseModel):
    """The touchpoint's question; it names the customer by `customer_id` or by `identity`."""

    model_config = ConfigDict(
        extra="forbid",
        # "Exactly one of customer_id and identity", as the validator below checks it.
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["customer_id"],
                    "properties": {"customer_id": {"type": "string"}, "identity": {"type": "null"}},
                },
                {
                    "required": ["identity"],
                    "properties": {"identity": {"type": "object"}, "customer_id": {"type": "null"}},
                },
            ]
        },
    )

    customer_id: Identifier | None = None
    identity: Identity | None = None
    touchpoint: str = Field(min_length=1, max_length=64)
    channel: Channel
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Optional: 'request' limits defaults to one request kind.",
    )
    at: Instant | None = Field(
        None, description="When the decision is asked; the server's clock if omitted."
    )
    dry_run: StrictBool = Field(
        False,
        description="True: answer the decision this touchpoint would get, and log nothing: no "
        "decision log entry, no exposure counted toward caps or cooldowns (its id starts with "
        "'dry_' and is unknown to GET /v1/decisions/{id}).",
    )

    @model_validator(mode="after")
    def _names_a_customer(self) -> DecisionIn:
        if (self.customer_id is None) == (self.identity is None):
            raise ValueError("give exactly one of customer_id and identity")
        return self

    def as_request(self) -> DecisionRequest:
        return DecisionRequest(
            customer_id=self.customer_id or ANONYMOUS_CUSTOMER,
            touchpoint=self.touchpoint,
            channel=self.channel,
            context=self.context,
            at=self.at,
        )


class DefaultOut(BaseModel):
    id: str
    request: str
    values: dict[str, Any]
    confidence: float
    reasons: Reasons


class ContactChannelOut(BaseModel):
    channel: str
    source: Literal["stated", "learned", "population"]
    probability: float
    confidence: float
    reasons: Reasons


class DecisionOut(BaseModel):
    decision_id: str
    customer_id: str
    touchpoint: str
    decided_at: datetime
    defaults: list[DefaultOut]
    channel: ContactChannelOut | None
    actions: list[ChosenAction]
    degraded: bool
    policy_version: str
    model_version: str | None
    habits: list[HabitTrace] = Field(
        default_factory=list,
        description="Every habit considered at this touchpoint, offered as a default or not, "
        "with why (below count or share, suppressed after declines, below the model's "
        "acceptance threshold, filtered by context.request, not due yet).",
    )

    @classmethod
    def of(cls, decision: Decision) -> DecisionOut:
        return cls.model_validate(decision.model_dump())


#: The fields of a `Decision` that `DecisionOut` returns, as `model_dump_json(include=...)`
#: takes them: the same JSON as `DecisionOut.of(decision).model_dump_json()`, in one pass.
_ANSWER: dict[str, Any] = {
    **{name: True for name in DecisionOut.model_fields},
    "defaults": {"__all__": set(DefaultOut.model_fields)},
    "channel": set(ContactChannelOut.model_fields),
}


def decision_answer(decision: Decision) -> bytes:
    """The JSON answer of `POST /v1/decisions` (a `DecisionOut`), serialised once."""
    return decision.model_dump_json(include=_ANSWER).encode()


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: Identifier
    id: str = Field(min_length=1, max_length=96, description="An item id from the decision.")
    outcome: OutcomeKind
    value: float | None = Field(None, ge=0, description="Value of a conversion, EUR.")
    at: Instant | None = None


class OutcomeOut(BaseModel):
    decision_id: str
    id: str
    outcome: OutcomeKind
    status: Literal["accepted", "duplicate"] = Field(
        description="What happened to the report (not to the offer): `accepted` means it was "
        "recorded, whatever the customer answered; `duplicate`, it had been already."
    )
    recorded: bool = Field(
        description="True when this report was recorded now; false for a repeat. The "
        "customer's answer itself is `outcome`."
    )


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier | None = Field(None, description="The customer to keep, if known.")
    identities: list[Identity] = Field(min_length=1, max_length=10)


class ConsentStatement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    channel: Channel | None = Field(None, description="Omit for every channel.")
    status: ConsentStatus


class ConsentsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consents: list[ConsentStatement] = Field(min_length=1, max_length=50)
    touchpoint: str = Field("api", min_length=1, max_length=64)
    channel: Channel = Channel.WEB
    source: str | None = Field(None, max_length=64)
    changed_at: Instant | None = None


class ErasureOut(BaseModel):
    customer_id: str
    erased: bool = Field(description="Always true: the customer is erased now.")
    removed: bool = Field(description="False when there was nothing left to remove.")
