"""The answers of the API, as the client reads them: every field the API documents, and any
field it adds later kept as is (`extra="allow"`), so a newer server never breaks an older
client."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class Reasons(_Answer):
    """A customer-readable explanation in every supported language."""

    en: str
    it: str


class Default(_Answer):
    """A personalised default to pre-fill, e.g. `{"amount": 200, "receipt": false}`."""

    id: str
    request: str
    values: dict[str, Any]
    confidence: float
    reasons: Reasons


class ContactChannel(_Answer):
    channel: str
    source: Literal["stated", "learned", "population"]
    probability: float
    confidence: float
    reasons: Reasons


class ChosenAction(_Answer):
    """A next-best-action, ranked, with the channel to deliver it by and its texts."""

    id: str
    kind: str
    rank: int
    score: float
    propensity: float
    channel: str
    title: Reasons
    message: Reasons
    reasons: Reasons
    reason_codes: list[str]


class Decision(_Answer):
    decision_id: str
    customer_id: str
    touchpoint: str
    decided_at: datetime
    defaults: list[Default]
    channel: ContactChannel | None
    actions: list[ChosenAction]
    degraded: bool
    policy_version: str
    model_version: str | None


class EventResult(_Answer):
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    folded: bool | None = None
    error: str | None = None
    field: str | None = None


class EventBatchResult(_Answer):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class Outcome(_Answer):
    decision_id: str
    id: str
    outcome: Literal["accepted", "declined"]
    status: Literal["accepted", "duplicate"]
    recorded: bool = True
