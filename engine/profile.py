"""The customer profile: a small, bounded summary of one customer's event history.

Every collection here is bounded (top-K by time, capped key sets) and every record is kept in a
canonical order, so the profile of a set of events does not depend on the order they arrived in.

`Profile` is a pydantic model: its JSON form is the reference one (tests, exports, and what
stores wrote before the compact binary form of `feature_store.profile_codec`, which still reads
it). The records the fold creates or updates on almost every event (decayed counts, requests,
stamps, feedback, exposures) are slotted dataclasses instead: pydantic validates and serialises
them inside a `Profile` exactly as it did when they were models (same JSON, same schema), but
building one costs about a seventh and setting a field about a twelfth of what it costs on a
model (Python 3.11, pydantic 2.14), and the fold does both on every event: replaying a history
is bound by it. Records the fold rarely touches and the API also returns on their own (cases, stated
preferences, consents) stay models.
"""

from __future__ import annotations

import base64
import itertools
import struct
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, TypeAdapter

from engine.preferences import ConsentRecord, StatedPreference

SECONDS_PER_DAY = 86_400.0


@dataclass(slots=True)
class DecayedCount:
    """A count whose contributions halve every half-life: `value` as of time `at`.

    Decay is lazy: adding an event or reading the value at a later time rescales, so the stored
    pair stays exact whatever the order of additions (up to float rounding).
    """

    value: float = 0.0
    at: datetime | None = None
    total: Annotated[int, Field(description="Raw, undecayed number of contributions.")] = 0

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
            return replace(self)
        if self.at is None:
            return replace(other)
        at = max(self.at, other.at)
        value = self.value_at(at, half_life_days) + other.value_at(at, half_life_days)
        return DecayedCount(value=value, at=at, total=self.total + other.total)


def _decay(earlier: datetime, later: datetime, half_life_days: float) -> float:
    elapsed_days = (later - earlier).total_seconds() / SECONDS_PER_DAY
    decay: float = 0.5 ** (elapsed_days / half_life_days)  # a float: the base is positive
    return decay


@dataclass(slots=True)
class RequestRecord:
    """One request, reduced to what a habit is made of."""

    event_id: str
    at: datetime
    amount: Decimal | None = None
    currency: str | None = None
    receipt: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The request's habit-forming values, as a touchpoint would pre-fill them."""
        values: dict[str, Any] = {}
        if self.amount is not None:
            values["amount"] = _plain_number(self.amount)
            values["currency"] = self.currency
        if self.receipt is not None:
            values["receipt"] = self.receipt
        if self.options:
            values.update(sorted(self.options.items()))
        return values

    def signature(self) -> str:
        """A canonical key: two requests with the same values have the same signature."""
        values = self.values()
        return ";".join([f"{key}={values[key]!r}" for key in sorted(values)])


def _plain_number(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


@dataclass(slots=True)
class Stamp:
    """A point in time with the event that made it, ordered by (at, event_id)."""

    at: datetime
    event_id: str


@dataclass(slots=True)
class DefaultFeedback:
    """How the customer answered one offered default (a habit key and its values)."""

    accepted: int = 0
    last_accepted_at: datetime | None = None
    declines: Annotated[list[Stamp], Field(description="Most recent declines.")] = field(
        default_factory=list
    )
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


@dataclass(slots=True)
class FeedbackRecord:
    """A feedback score (0-10) the customer gave at a touchpoint."""

    event_id: str
    at: datetime
    touchpoint: str
    channel: str
    score: int


_SEEN_ENTRY = struct.Struct(">qQ")  # occurred_at in microseconds, 64-bit event id digest


def _pack_seen(seen: list[tuple[int, int]]) -> str:
    # One pack call for the whole ring, not one per entry: stores write it with every update.
    packed = struct.pack(f">{'qQ' * len(seen)}", *itertools.chain.from_iterable(seen))
    return base64.b64encode(packed).decode("ascii")


def _unpack_seen(value: Any) -> list[tuple[int, int]]:
    if isinstance(value, str):
        # Unpacked entries are pairs of ints by construction; validating all 128 again, one by
        # one, cost a third of unpacking the ring, which stores do on every request.
        return list(_SEEN_ENTRY.iter_unpack(base64.b64decode(value)))
    return _SEEN_LIST.validate_python(value)


_SEEN_LIST = TypeAdapter(list[tuple[int, int]])

#: The idempotence ring, packed into 16 bytes an entry when written as JSON.
SeenRing = Annotated[
    list[tuple[int, int]],
    PlainValidator(_unpack_seen, json_schema_input_type=list[tuple[int, int]]),
    PlainSerializer(_pack_seen, return_type=str, when_used="json"),
]


@dataclass(slots=True)
class Exposure:
    """An action delivered to the customer (for frequency caps and cooldowns)."""

    event_id: str
    at: datetime
    action_id: str
    channel: str
    purpose: str


@dataclass(slots=True)
class ActionFeedback:
    """How the customer answered one catalogue action."""

    accepted: int = 0
    converted: int = 0
    converted_value: float = 0.0
    declines: Annotated[list[Stamp], Field(description="Most recent declines.")] = field(
        default_factory=list
    )


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

    def count_event(self, seen_at: datetime | None) -> None:
        """One more distinct event; if `seen_at` is given, the customer was seen then."""
        # Writes the fields as pydantic's __setattr__ would (value, then the set of fields
        # set), without its dispatch, which cost as much as the rest of this method and runs
        # for every event folded.
        fields, fields_set = self.__dict__, self.__pydantic_fields_set__
        fields["event_count"] += 1
        fields_set.add("event_count")
        if seen_at is None:
            return
        first_seen, last_seen = fields["first_seen"], fields["last_seen"]
        if first_seen is None or seen_at < first_seen:
            fields["first_seen"] = seen_at
            fields_set.add("first_seen")
        if last_seen is None or seen_at > last_seen:
            fields["last_seen"] = seen_at
            fields_set.add("last_seen")

    def open_cases(self) -> list[CaseRecord]:
        return sorted(
            (case for case in self.cases.values() if case.is_open), key=lambda c: c.case_id
        )


def habit_key(request: str, channel: str) -> str:
    return f"{request}@{channel}"


def split_habit_key(key: str) -> tuple[str, str]:
    request, _, channel = key.partition("@")
    return request, channel
