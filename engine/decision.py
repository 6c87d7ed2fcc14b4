"""What a decision is: the question a touchpoint asks and the answer Rapport logs and returns."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from engine.events import Channel, Identifier


class Reasons(BaseModel):
    """A customer-readable explanation in every supported language."""

    model_config = ConfigDict(frozen=True)

    en: str
    it: str


class DecisionRequest(BaseModel):
    """A touchpoint asks: what should we do and pre-fill for this customer, here, now?"""

    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    touchpoint: str = Field(min_length=1, max_length=64)
    channel: Channel
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Optional: 'request' limits defaults to one request kind.",
    )
    at: AwareDatetime | None = Field(
        None, description="When the decision is asked; the server's clock if omitted."
    )


class Default(BaseModel):
    """A personalised default: values a touchpoint may pre-fill, e.g. 200 EUR, no receipt."""

    id: str = Field(description="Names the default within the decision: 'default:<request>'.")
    request: str
    channel: str = Field(description="The kind of touchpoint the habit was learned at.")
    values: dict[str, Any]
    confidence: float = Field(ge=0, le=1)
    reasons: Reasons
    matches: int = Field(description="Recent requests with exactly these values.")
    window: int = Field(description="Recent requests considered.")
    signature: str = Field(description="Canonical form of the learned values (before overrides).")


class ContactChannel(BaseModel):
    """The channel to reach the customer by, and why."""

    channel: str
    source: Literal["stated", "learned", "population"]
    probability: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)
    reasons: Reasons


class Decision(BaseModel):
    """One logged answer. Outcomes join to it by `decision_id` and the item `id`."""

    decision_id: str
    customer_id: str
    touchpoint: str
    touchpoint_channel: str
    decided_at: AwareDatetime
    known_customer: bool
    defaults: list[Default] = Field(default_factory=list)
    channel: ContactChannel | None = None
    actions: list[dict[str, Any]] = Field(
        default_factory=list, description="Next-best-actions, ranked (filled by arbitration)."
    )
    degraded: bool = False
    policy_version: str
    model_version: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)

    def default(self, item_id: str) -> Default | None:
        return next((d for d in self.defaults if d.id == item_id), None)
