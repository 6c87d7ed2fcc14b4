"""The customer profile: a small, bounded summary of one customer's event history.

Every collection here is bounded (top-K by time, capped key sets) and every record is kept in a
canonical order, so the profile of a set of events does not depend on the order they arrived in.
"""

from __future__ import annotations

import base64
import struct
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from engine.preferences import ConsentRecord, StatedPreference

SECONDS_PER_DAY = 86_400.0


class DecayedCount(BaseModel):
    """A count whose contributions halve every half-life: `value` as of time `at`.

    Decay is lazy: adding an event or reading the value at a later time rescales, so the stored
    pair stays exact whatever the order of additions (up to float rounding).
    """

    value: float = 0.0
    at: datetime | None = None
    total: int = Field(0, description="Raw, undecayed number of contributions.")

    def add(self, when: datetime, half_life_days: float) -> None:
        if self.at is None:
            self.value, self.at = 1.0, when
        elif when >= self.at:
            self.value = self.value * _decay(self.at, when, half_life_days) + 1.0
            self.at = when
        else:
            self.value += _decay(when, self.at, half_life_days)
        self.total += 1

    def value_at(self, when: datetime, half_life_days: float) -> float:
        """The decayed count as seen at `when` (never grows for times before `at`)."""
        if self.at is None:
            return 0.0
        if when <= self.at:
            return self.value
        return self.value * _decay(self.at, when, half_life_days)

    def merged(self, other: DecayedCount, half_life_days: float) -> DecayedCount:
        """The count of both histories together (commutative and associative)."""
        if other.at is None:
            return self.model_copy()
        if self.at is None:
            return other.model_copy()
        at = max(self.at, other.at)
        value = self.value_at(at, half_life_days) + other.value_at(at, half_life_days)
        return DecayedCount(value=value, at=at, total=self.total + other.total)


def _decay(earlier: datetime, later: datetime, half_life_days: float) -> float:
    elapsed_days = (later - earlier).total_seconds() / SECONDS_PER_DAY
    return float(0.5 ** (elapsed_days / half_life_days))


class RequestRecord(BaseModel):
    """One request, reduced to what a habit is made of."""

    event_id: str
    at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    receipt: bool | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The request's habit-forming values, as a touchpoint would pre-fill them."""
        values: dict[str, Any] = {}
        if self.amount is not None:
            values["amount"] = _plain_number(self.amount)
            values["currency"] = self.currency
        if self.receipt is not None:
            values["receipt"] = self.receipt
        values.update(sorted(self.options.items()))
        return values

    def signature(self) -> str:
        """A canonical key: two requests with the same values have the same signature."""
        parts = [f"{key}={value!r}" for key, value in sorted(self.values().items())]
        return ";".join(parts)


def _plain_number(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


class Stamp(BaseModel):
    """A point in time with the event that made it, ordered by (at, event_id)."""

    at: datetime
    event_id: str


class DefaultFeedback(BaseModel):
    """How the customer answered one offered default (a habit key and its values)."""

    accepted: int = 0
    last_accepted_at: datetime | None = None
    declines: list[Stamp] = Field(default_factory=list, description="Most recent declines.")
    last_at: datetime | None = None

    def declines_since_acceptance(self) -> int:
        if self.last_accepted_at is None:
            return len(self.declines)
        return sum(1 for stamp in self.declines if stamp.at > self.last_accepted_at)


class CaseRecord(BaseModel):
    """A complaint or other problem case. Open until a resolution is seen."""

    case_id: str
    kind: str = Field("complaint", description="complaint, failed_payment or outage.")
    opened_at: datetime | None = None
    resolved_at: datetime | None = None
    topic: str | None = None
    channel: str | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and self.resolved_at is None


class FeedbackRecord(BaseModel):
    event_id: str
    at: datetime
    touchpoint: str
    channel: str
    score: int


_SEEN_ENTRY = struct.Struct(">qQ")  # occurred_at in microseconds, 64-bit event id digest


def _pack_seen(seen: list[tuple[int, int]]) -> str:
    packed = b"".join(_SEEN_ENTRY.pack(at, digest) for at, digest in seen)
    return base64.b64encode(packed).decode("ascii")


def _unpack_seen(value: Any) -> Any:
    if isinstance(value, str):
        return list(_SEEN_ENTRY.iter_unpack(base64.b64decode(value)))
    return value


#: The idempotence ring, packed into 16 bytes an entry when written as JSON.
SeenRing = Annotated[
    list[tuple[int, int]],
    BeforeValidator(_unpack_seen),
    PlainSerializer(_pack_seen, return_type=str, when_used="json"),
]


class Exposure(BaseModel):
    """An action delivered to the customer (for frequency caps and cooldowns)."""

    event_id: str
    at: datetime
    action_id: str
    channel: str
    purpose: str


class ActionFeedback(BaseModel):
    """How the customer answered one catalogue action."""

    accepted: int = 0
    converted: int = 0
    converted_value: float = 0.0
    declines: list[Stamp] = Field(default_factory=list, description="Most recent declines.")


class Profile(BaseModel):
    """What Rapport knows of one customer: a pure function of the customer's events."""

    model_config = ConfigDict(validate_assignment=False)

    customer_id: str
    event_count: int = Field(0, description="Distinct events folded into this profile.")
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    seen: SeenRing = Field(
        default_factory=list,
        description="(occurred_at in microseconds, event id digest) of the latest events.",
    )
    channel_usage: dict[str, DecayedCount] = Field(default_factory=dict)
    contact_channels: dict[str, DecayedCount] = Field(default_factory=dict)
    request_channels: dict[str, dict[str, DecayedCount]] = Field(default_factory=dict)
    habits: dict[str, list[RequestRecord]] = Field(
        default_factory=dict, description="Recent requests by habit key 'request@channel'."
    )
    default_feedback: dict[str, dict[str, DefaultFeedback]] = Field(default_factory=dict)
    stated: dict[str, StatedPreference] = Field(default_factory=dict)
    consents: dict[str, ConsentRecord] = Field(default_factory=dict)
    profiling_revoked_at: datetime | None = Field(
        None, description="Latest profiling denial or revocation: nothing before it is kept."
    )
    cases: dict[str, CaseRecord] = Field(default_factory=dict)
    feedback: list[FeedbackRecord] = Field(default_factory=list)
    exposures: list[Exposure] = Field(
        default_factory=list, description="Latest actions delivered, oldest first."
    )
    action_feedback: dict[str, ActionFeedback] = Field(default_factory=dict)

    def open_cases(self) -> list[CaseRecord]:
        return sorted(
            (case for case in self.cases.values() if case.is_open), key=lambda c: c.case_id
        )


def habit_key(request: str, channel: str) -> str:
    return f"{request}@{channel}"


def split_habit_key(key: str) -> tuple[str, str]:
    request, _, channel = key.partition("@")
    return request, channel
