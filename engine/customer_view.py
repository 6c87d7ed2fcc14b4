"""What Rapport knows of a customer, stated and learned, each with its reasons."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from engine.channel_preference import ChannelPrior, contact_channel, request_channels
from engine.config import EngineConfig
from engine.decide import contact_choice
from engine.decision import ContactChannel, Reasons
from engine.explain import habit_reasons, habit_status_reasons, request_channel_reasons
from engine.habits import UsualRequest, usual_requests
from engine.preferences import ConsentRecord, StatedPreference
from engine.profile import CaseRecord, Profile


class RequestChannelView(BaseModel):
    request: str
    channel: str
    probability: float
    confidence: float
    choices: int
    reasons: Reasons


class HabitView(BaseModel):
    request: str
    channel: str
    values: dict[str, Any]
    confidence: float
    matches: int
    window: int
    accepted: int
    declines: int
    offered: bool = Field(
        description="Offered at its kind of touchpoint at the time asked: False once declined "
        "too often, or while a habit with a rhythm is not due."
    )
    reasons: Reasons
    kind: str = Field("exact", description="exact repeats, or amounts within tolerance.")
    status: str = Field(
        "offered", description="offered, suppressed_after_declines or not_due (as the trace)."
    )
    explanation: Reasons | None = Field(None, description="Why it is not offered, if it is not.")
    rhythm: str | None = Field(None, description="E.g. 'monthly:1' or 'weekly:4'.")
    due: bool | None = None


class CustomerView(BaseModel):
    customer_id: str
    event_count: int
    first_seen: datetime | None
    last_seen: datetime | None
    stated: dict[str, StatedPreference]
    contact_channel: ContactChannel | None = Field(
        description="None when the customer consented to no contact channel."
    )
    request_channels: list[RequestChannelView]
    habits: list[HabitView]
    consents: list[ConsentRecord]
    open_cases: list[CaseRecord]


def describe_customer(
    profile: Profile, prior: ChannelPrior, *, at: datetime, config: EngineConfig
) -> CustomerView:
    """Stated preferences as stated; learned ones as probabilities with reasons."""
    by_request = request_channels(profile, prior, at=at, config=config)
    return CustomerView(
        customer_id=profile.customer_id,
        event_count=profile.event_count,
        first_seen=profile.first_seen,
        last_seen=profile.last_seen,
        stated={k: v for k, v in sorted(profile.stated.items()) if v.value is not None},
        contact_channel=contact_choice(contact_channel(profile, prior, at=at, config=config)),
        request_channels=[
            RequestChannelView(
                request=request,
                channel=estimate.channel,
                probability=estimate.probability,
                confidence=estimate.confidence,
                choices=estimate.choices,
                reasons=request_channel_reasons(request, estimate),
            )
            for request, estimate in by_request.items()
        ],
        habits=[
            _habit_view(habit, config)
            for habit in usual_requests(profile, config, include_suppressed=True, at=at)
        ],
        consents=sorted(profile.consents.values(), key=lambda c: (c.purpose, c.channel)),
        open_cases=profile.open_cases(),
    )


def _habit_view(habit: UsualRequest, config: EngineConfig) -> HabitView:
    """A habit as the decision trace would explain it at its touchpoint, without a request
    kind in the context and before any model's opinion."""
    if habit.suppressed:
        status = "suppressed_after_declines"
    elif habit.timed and habit.due is False:
        status = "not_due"
    else:
        status = "offered"
    return HabitView(
        request=habit.request,
        channel=habit.channel,
        values=habit.values,
        confidence=habit.confidence,
        matches=habit.matches,
        window=habit.window,
        accepted=habit.accepted,
        declines=habit.declines,
        offered=status == "offered",
        reasons=habit_reasons(habit),
        kind=habit.kind,
        status=status,
        explanation=None
        if status == "offered"
        else habit_status_reasons(
            habit,
            status,
            config_min_count=config.habit_min_count,
            config_min_share=config.habit_min_share,
        ),
        rhythm=f"{habit.rhythm.period}:{habit.rhythm.day}" if habit.rhythm else None,
        due=habit.due,
    )
