"""What a decision is: the question a touchpoint asks and the answer Rapport logs and returns."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from engine.events import Channel, Identifier

_Model = TypeVar("_Model", bound=BaseModel)


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
    matches: int = Field(
        description="Recent requests with these values (amounts within tolerance)."
    )
    window: int = Field(description="Recent requests considered.")
    signature: str = Field(description="Canonical form of the learned values (before overrides).")


class ContactChannel(BaseModel):
    """The channel to reach the customer by, and why."""

    channel: str
    source: Literal["stated", "learned", "population"]
    probability: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)
    reasons: Reasons


class ChosenAction(BaseModel):
    """A next-best-action as returned: ranked, with the probability it was picked."""

    id: str = Field(description="The catalogue action's id; outcomes name it.")
    kind: str
    rank: int
    score: float = Field(
        description="Priority: propensity x value x weight (objective expected_value) or "
        "propensity x weight (objective acceptance)."
    )
    propensity: float = Field(description="Probability this action was picked at this rank.")
    channel: str = Field(description="The channel to deliver it by.")
    title: Reasons
    message: Reasons
    reasons: Reasons
    reason_codes: list[str]


class CandidateTrace(BaseModel):
    """Why a catalogue action was returned, dropped or outranked (for operators and audit)."""

    action_id: str
    kind: str
    status: Literal["returned", "outranked", "dropped"]
    dropped: str | None = Field(None, description="The policy rule that dropped it.")
    channel_refusals: dict[str, str] = Field(default_factory=dict)
    channels: list[str] = Field(default_factory=list)
    reason_codes: list[str] = Field(default_factory=list)
    factors: dict[str, float] = Field(
        default_factory=dict, description="propensity, value, weight, lever and priority."
    )


HabitStatus = Literal[
    "offered",
    "below_count",
    "below_share",
    "suppressed_after_declines",
    "below_acceptance",
    "filtered_by_request",
    "not_due",
]


class HabitTrace(BaseModel):
    """A habit considered at this touchpoint, offered as a default or not, and why."""

    request: str
    channel: str
    values: dict[str, Any]
    signature: str
    kind: str = Field(description="exact or approximate.")
    status: HabitStatus
    offered: bool
    matches: int
    window: int
    declines: int = 0
    acceptance: float | None = Field(None, description="The model's acceptance probability.")
    threshold: float | None = Field(None, description="The least acceptance offered.")
    rhythm: str | None = Field(None, description="E.g. 'monthly:1' or 'weekly:4'.")
    due: bool | None = None
    reasons: Reasons


class ExperimentExposure(BaseModel):
    """The experiment variant whose policy made a decision: logged with it, joined to outcomes."""

    model_config = ConfigDict(frozen=True)

    experiment_id: str
    variant: str


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
    actions: list[ChosenAction] = Field(default_factory=list, description="Ranked actions.")
    candidates: list[CandidateTrace] = Field(default_factory=list)
    habits: list[HabitTrace] = Field(
        default_factory=list,
        description="Every habit considered at this touchpoint, offered or not, with the reason.",
    )
    segment: str | None = Field(None, description="The customer's value segment.")
    open_problems: list[str] = Field(default_factory=list)
    catalogue_version: str | None = None
    exploration: str | None = None
    degraded: bool = False
    policy_version: str
    model_version: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    experiments: list[ExperimentExposure] = Field(
        default_factory=list, description="The experiment variants this decision applied."
    )

    def default(self, item_id: str) -> Default | None:
        return next((d for d in self.defaults if d.id == item_id), None)

    def action(self, item_id: str) -> ChosenAction | None:
        return next((a for a in self.actions if a.id == item_id), None)


def assemble(model: type[_Model], **values: Any) -> _Model:
    """A model of values the engine built itself and knows valid, without validating them
    again (a decision builds dozens of these records; validation was most of their cost).
    Every field must be given, as a validated instance would hold it."""
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance
