"""What touchpoints send: events, with typed attributes per event type.

An `Event` validates its `attributes` against the model of its `type` when it is built, so the
fold never meets a malformed event. The typed view is available as `event.typed`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Re-exported: where an event happened is part of the event.
from engine.channels import CONTACT_CHANNELS as CONTACT_CHANNELS
from engine.channels import Channel as Channel
from engine.preferences import ConsentStatus, Purpose, validate_preference


class EventType(StrEnum):
    REQUEST = "request"
    CONTACT = "contact"
    COMPLAINT_OPENED = "complaint_opened"
    COMPLAINT_RESOLVED = "complaint_resolved"
    FEEDBACK = "feedback"
    PREFERENCE_STATED = "preference_stated"
    CONSENT_CHANGED = "consent_changed"
    OUTCOME = "outcome"
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_RESOLVED = "incident_resolved"
    ACTION_EXPOSED = "action_exposed"


class OutcomeKind(StrEnum):
    ACCEPTED = "accepted"
    DECLINED = "declined"
    IGNORED = "ignored"
    CONVERTED = "converted"


class ProblemKind(StrEnum):
    """Open problems that put service before sales."""

    COMPLAINT = "complaint"
    FAILED_PAYMENT = "failed_payment"
    OUTAGE = "outage"
    LOW_FEEDBACK = "low_feedback"


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$")]
RequestKind = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z][a-z0-9_]*$")]
OptionValue = StrictStr | StrictBool | StrictInt


class _Attributes(BaseModel):
    # Touchpoints may send extra attributes; they are kept in the log but not learned from.
    model_config = ConfigDict(extra="allow", frozen=True)


class RequestAttributes(_Attributes):
    """A request or transaction, e.g. a cash withdrawal of 200 EUR without a receipt."""

    request: RequestKind
    amount: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    receipt: StrictBool | None = None
    options: dict[Annotated[str, Field(max_length=48)], OptionValue] = Field(
        default_factory=dict, max_length=16
    )

    @model_validator(mode="after")
    def _amount_has_currency(self) -> RequestAttributes:
        if self.amount is not None and self.currency is None:
            raise ValueError("currency is required when amount is given")
        if self.options and not _TYPED_REQUEST_FIELDS.isdisjoint(self.options):
            clashing = sorted(set(self.options) & _TYPED_REQUEST_FIELDS)
            raise ValueError(f"options must not repeat typed fields: {', '.join(clashing)}")
        return self


_TYPED_REQUEST_FIELDS = {"request", "amount", "currency", "receipt"}


class ContactAttributes(_Attributes):
    """A contact the customer chose to make (inbound call, chat, email)."""

    topic: RequestKind | None = None


class ComplaintAttributes(_Attributes):
    case_id: Identifier
    topic: RequestKind | None = None


class IncidentAttributes(_Attributes):
    """A problem the customer did not report: a failed payment, an outage affecting them."""

    case_id: Identifier
    kind: Literal[ProblemKind.FAILED_PAYMENT, ProblemKind.OUTAGE]
    topic: RequestKind | None = None


class ExposureAttributes(_Attributes):
    """An action a decision returned, as delivered: it counts toward caps and cooldowns."""

    decision_id: Identifier
    action_id: Annotated[str, Field(min_length=1, max_length=64)]
    delivery_channel: Channel
    purpose: Purpose
    segment: str | None = Field(None, max_length=32, description="For acceptance statistics.")
    limited: bool = Field(
        True, description="Counts toward caps or cooldowns: kept in the profile's deliveries."
    )


class FeedbackAttributes(_Attributes):
    score: StrictInt = Field(ge=0, le=10)


class PreferenceAttributes(_Attributes):
    """An explicit statement, e.g. `{"key": "contact_channel", "value": "sms"}`."""

    key: str
    value: Any
    source: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _known_key_and_value(self) -> PreferenceAttributes:
        object.__setattr__(self, "value", validate_preference(self.key, self.value))
        return self


class ConsentAttributes(_Attributes):
    """A consent statement; without `channel` it covers the purpose on every channel."""

    purpose: Purpose
    channel: Channel | None = None
    status: ConsentStatus
    source: str | None = Field(None, max_length=64)


class OutcomeAttributes(_Attributes):
    """The customer's answer to a default or action that a decision returned."""

    decision_id: Identifier
    target: Annotated[str, Field(min_length=1, max_length=96)]
    outcome: OutcomeKind
    kind: Literal["default", "action"] = "default"
    request: RequestKind | None = None
    habit_channel: Channel | None = None
    signature: str | None = Field(None, max_length=512)
    value: float | None = Field(None, ge=0, description="Business value of a conversion, EUR.")
    segment: str | None = Field(None, max_length=32, description="For acceptance statistics.")


ATTRIBUTE_MODELS: dict[EventType, type[_Attributes]] = {
    EventType.REQUEST: RequestAttributes,
    EventType.CONTACT: ContactAttributes,
    EventType.COMPLAINT_OPENED: ComplaintAttributes,
    EventType.COMPLAINT_RESOLVED: ComplaintAttributes,
    EventType.FEEDBACK: FeedbackAttributes,
    EventType.PREFERENCE_STATED: PreferenceAttributes,
    EventType.CONSENT_CHANGED: ConsentAttributes,
    EventType.OUTCOME: OutcomeAttributes,
    EventType.INCIDENT_OPENED: IncidentAttributes,
    EventType.INCIDENT_RESOLVED: IncidentAttributes,
    EventType.ACTION_EXPOSED: ExposureAttributes,
}


class Event(BaseModel):
    """One thing a customer did or said at a touchpoint. Immutable once built."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    customer_id: Identifier
    touchpoint: Annotated[str, Field(min_length=1, max_length=64)]
    channel: Channel
    type: EventType
    occurred_at: AwareDatetime
    attributes: dict[str, Any] = Field(default_factory=dict)

    _typed: _Attributes = PrivateAttr()

    @model_validator(mode="after")
    def _typed_attributes(self) -> Event:
        model = ATTRIBUTE_MODELS[self.type]
        try:
            self._typed = model.model_validate(self.attributes)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(["attributes", *(str(part) for part in first["loc"])])
            raise PydanticCustomError(
                "invalid_attribute",
                "{field}: {reason}",
                {"field": field, "reason": first["msg"]},
            ) from None
        return self

    @property
    def typed(self) -> _Attributes:
        """The attributes validated against the model of this event's type (when it was built)."""
        # Read from pydantic's store of private attributes directly: `self._typed` goes through
        # BaseModel.__getattr__, which cost about as much as folding the whole event.
        private = self.__pydantic_private__
        if private is None or "_typed" not in private:
            return self._typed  # not validated (model_construct): AttributeError, as ever
        typed: _Attributes = private["_typed"]
        return typed

    @property
    def at(self) -> datetime:
        return self.occurred_at
