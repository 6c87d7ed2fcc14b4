"""Request and response bodies of the HTTP API (the wire contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from api.errors import field_errors
from engine.decision import Decision, Reasons
from engine.events import Channel, Event, Identifier, OutcomeKind
from feature_store.base import AppendStatus

MAX_EVENTS_PER_BATCH = 1000


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Raw here: each event is validated on its own so one bad event rejects only itself.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


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


def parse_events(raw_events: list[dict[str, Any]]) -> tuple[list[Event], list[EventResult | None]]:
    """Validate each event. Returns the valid events and, per position, a rejection or None."""
    valid: list[Event] = []
    rejections: list[EventResult | None] = []
    for raw in raw_events:
        try:
            valid.append(Event.model_validate(raw))
            rejections.append(None)
        except ValidationError as exc:
            [first, *_] = field_errors(list(exc.errors()))
            event_id = raw.get("event_id")
            rejections.append(
                EventResult(
                    event_id=event_id if isinstance(event_id, str) else None,
                    status="rejected",
                    error=f"{first['field']}: {first['reason']}",
                    field=first["field"],
                )
            )
    return valid, rejections


def batch_result(
    valid: list[Event], rejections: list[EventResult | None], statuses: list[AppendStatus]
) -> EventBatchResult:
    applied = iter(zip(valid, statuses, strict=True))
    results = []
    for rejection in rejections:
        if rejection is not None:
            results.append(rejection)
            continue
        event, status = next(applied)
        duplicate = status is AppendStatus.DUPLICATE
        results.append(
            EventResult(
                event_id=event.event_id,
                status="duplicate" if duplicate else "accepted",
                folded=None if duplicate else status is AppendStatus.ACCEPTED,
            )
        )
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
    stated_at: AwareDatetime | None = None


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
    actions: list[dict[str, Any]]
    degraded: bool
    policy_version: str
    model_version: str | None

    @classmethod
    def of(cls, decision: Decision) -> DecisionOut:
        return cls.model_validate(decision.model_dump())


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: Identifier
    id: str = Field(min_length=1, max_length=96, description="An item id from the decision.")
    outcome: OutcomeKind
    at: AwareDatetime | None = None


class OutcomeOut(BaseModel):
    decision_id: str
    id: str
    outcome: OutcomeKind
    status: Literal["accepted", "duplicate"]
