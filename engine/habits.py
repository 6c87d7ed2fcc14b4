"""Usual requests: a repeated request becomes a default once it is clearly the customer's habit.

For each request kind at a kind of touchpoint (e.g. cash_withdrawal at ATMs), the most frequent
values among the recent requests form a habit when both their count and their share pass the
thresholds of `EngineConfig`. A habit the customer declined `default_max_declines` times since
they last accepted it is not offered; another habit can still form later.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from engine.config import EngineConfig
from engine.decision import assemble
from engine.profile import Profile, RequestRecord, split_habit_key


class UsualRequest(BaseModel):
    """A detected habit, with the evidence behind it."""

    request: str
    channel: str
    values: dict[str, Any]
    signature: str
    matches: int = Field(description="Recent requests with exactly these values.")
    window: int = Field(description="Recent requests considered.")
    confidence: float = Field(ge=0, le=1, description="Laplace-smoothed share of matches.")
    accepted: int = Field(0, description="Times this default was accepted.")
    declines: int = Field(0, description="Declines since it was last accepted.")
    suppressed: bool = Field(False, description="Declined too often: not offered.")


def usual_requests(
    profile: Profile,
    config: EngineConfig,
    *,
    channel: str | None = None,
    request: str | None = None,
    include_suppressed: bool = False,
) -> list[UsualRequest]:
    """The customer's habits, optionally only at one kind of touchpoint or for one request kind.

    Sorted by request kind then channel. Suppressed habits are left out unless asked for.
    """
    habits = []
    for key, records in sorted(profile.habits.items()):
        habit_request, habit_channel = split_habit_key(key)
        if channel is not None and habit_channel != channel:
            continue
        if request is not None and habit_request != request:
            continue
        habit = _detect(profile, key, records, config)
        if habit is not None and (include_suppressed or not habit.suppressed):
            habits.append(habit)
    return habits


def _detect(
    profile: Profile, key: str, records: list[RequestRecord], config: EngineConfig
) -> UsualRequest | None:
    if not records:
        return None
    signatures: dict[str, int] = {}  # in order of first use, each signature computed once
    latest: dict[str, RequestRecord] = {}  # records are oldest first: the latest one wins
    for record in records:
        signed = record.signature()
        signatures[signed] = signatures.get(signed, 0) + 1
        latest[signed] = record
    # Most frequent values; on a tie the most recently used ones.
    signature = max(signatures, key=lambda sig: (signatures[sig], latest[sig].at))
    matches, window = signatures[signature], len(records)
    values = latest[signature].values()
    if not values:
        return None  # nothing to pre-fill
    if matches < config.habit_min_count or matches / window < config.habit_min_share:
        return None
    feedback = profile.default_feedback.get(key, {}).get(signature)
    declines = feedback.declines_since_acceptance() if feedback else 0
    request, channel = split_habit_key(key)
    return assemble(
        UsualRequest,
        request=request,
        channel=channel,
        values=values,
        signature=signature,
        matches=matches,
        window=window,
        confidence=(matches + 1) / (window + 2),
        accepted=feedback.accepted if feedback else 0,
        declines=declines,
        suppressed=declines >= config.default_max_declines,
    )
