"""Explicit preferences and consents: what the customer said, with its source and time.

Known preference keys form a closed registry so that a typo at a touchpoint is an error, not a
new, silently ignored preference.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.channels import CONTACT_CHANNELS
from engine.errors import InvalidPreference


class Purpose(StrEnum):
    SERVICE = "service"
    MARKETING = "marketing"
    PROFILING = "profiling"


class ConsentStatus(StrEnum):
    GRANTED = "granted"
    DENIED = "denied"
    REVOKED = "revoked"


def _one_of(*allowed: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _channel(value: Any) -> Any:
    allowed = [c.value for c in CONTACT_CHANNELS]
    return _one_of(*allowed)(value)


#: Known explicit preferences and the check each value must pass.
PREFERENCE_KEYS: dict[str, Callable[[Any], Any]] = {
    "contact_channel": _channel,
    "receipt": _boolean,
    "language": _one_of("en", "it"),
    "statements": _one_of("paper", "paperless"),
    "contact_time": _one_of("morning", "afternoon", "evening"),
}


def validate_preference(key: str, value: Any) -> Any:
    """Return `value` if it is valid for the preference `key`; raise InvalidPreference if not.

    `None` withdraws an earlier statement: the preference is then learned again.
    """
    check = PREFERENCE_KEYS.get(key)
    if check is None:
        known = ", ".join(sorted(PREFERENCE_KEYS))
        raise InvalidPreference(key, f"is not a known preference (known: {known})")
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise InvalidPreference(key, str(exc)) from None


class StatedPreference(BaseModel):
    """A preference as the customer stated it. The latest statement wins (ties: event id)."""

    model_config = ConfigDict(frozen=True)

    value: Any
    source: str
    stated_at: datetime
    event_id: str


class ConsentRecord(BaseModel):
    """The latest consent statement for one purpose and channel."""

    model_config = ConfigDict(frozen=True)

    purpose: Purpose
    channel: str = Field(description="A channel, or '*' for every channel.")
    status: ConsentStatus
    source: str
    changed_at: datetime
    event_id: str
