"""The contact policy: which catalogue actions may be offered, here, now, and by which channel.

For each candidate action the policy either drops it with a reason code or admits it with the
channels it may be delivered by. The rules, in order:

1. validity dates of the catalogue;
2. service before sales: while the customer has an open problem (complaint, failed payment,
   outage, a recent low feedback score), no sales, retention or marketing action, anywhere;
   then the action's eligibility conditions;
3. suppression: an action declined `decline_limit` times in `suppression_days` is not offered;
4. cooldown: not offered again within the action's `cooldown_days`;
5. per channel: consent for the action's purpose, quiet hours for outbound channels, the
   action's caps and the policy's frequency caps per channel and purpose (rolling windows).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from engine.catalogue import Action, ActionKind
from engine.config import EngineConfig
from engine.consent import may_contact
from engine.events import Channel
from engine.preferences import Purpose
from engine.profile import Exposure, Profile


class DropReason(StrEnum):
    NOT_VALID = "not_valid"
    NOT_ELIGIBLE = "not_eligible"
    SERVICE_FIRST = "service_first"
    SUPPRESSED = "suppressed_after_declines"
    COOLDOWN = "cooldown"
    NO_CHANNEL = "no_channel"  # every channel refused: see `channel_refusals`


class ChannelRefusal(StrEnum):
    NO_CONSENT = "no_consent"
    QUIET_HOURS = "quiet_hours"
    ACTION_CAP = "action_cap"
    FREQUENCY_CAP = "frequency_cap"


class FrequencyCap(BaseModel):
    """At most `count` deliveries for `purpose` on `channel` (None: all channels) per window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    purpose: Purpose
    channel: Channel | None = None
    count: int = Field(ge=1)
    days: int = Field(ge=1)


class ContactPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "contact-policy-v1"
    outbound_channels: frozenset[Channel] = frozenset(
        {Channel.EMAIL, Channel.SMS, Channel.CALL_CENTER, Channel.MOBILE_APP}
    )
    quiet_hours: tuple[int, int] = Field(
        (21, 8), description="[start, end) hours (0-23) when outbound contact is not made."
    )
    frequency_caps: tuple[FrequencyCap, ...] = (
        FrequencyCap(purpose=Purpose.MARKETING, channel=Channel.EMAIL, count=2, days=7),
        FrequencyCap(purpose=Purpose.MARKETING, channel=Channel.SMS, count=1, days=7),
        FrequencyCap(purpose=Purpose.MARKETING, count=4, days=7),
    )
    decline_limit: int = Field(2, ge=1, description="Declines (K) that suppress an action.")
    suppression_days: int = Field(30, ge=1, description="How long (D) declines count.")


class Admission(BaseModel):
    """The policy's verdict on one action."""

    action_id: str
    dropped: DropReason | None = None
    channels: list[str] = Field(default_factory=list, description="Deliverable channels.")
    channel_refusals: dict[str, ChannelRefusal] = Field(default_factory=dict)
    reason_codes: list[str] = Field(default_factory=list)


SALES_KINDS = frozenset({ActionKind.SALES, ActionKind.RETENTION})


def admit(
    action: Action,
    *,
    profile: Profile | None,
    open_problems: Iterable[str],
    eligible: bool,
    touchpoint_channel: str,
    hour: int,
    at: datetime,
    policy: ContactPolicy,
    config: EngineConfig,
) -> Admission:
    """Whether `action` may be offered now, and by which channels (pure).

    The touchpoint's own channel is inbound (the customer is there now): quiet hours do not
    apply to it; consent and caps do.
    """
    verdict = Admission(action_id=action.id)
    problems = sorted(open_problems)
    drop = _drop_reason(action, profile, problems, eligible, at, policy)
    if drop is not None:
        verdict.dropped = drop
        if drop is DropReason.SERVICE_FIRST:
            verdict.reason_codes = [f"open_problem:{p}" for p in problems]
        return verdict
    exposures = profile.exposures if profile else []
    for channel in action.channels:
        outbound = channel in policy.outbound_channels and channel.value != touchpoint_channel
        refusal = _channel_refusal(
            action, channel, profile, exposures, outbound, hour, at, policy, config
        )
        if refusal is None:
            verdict.channels.append(channel.value)
        else:
            verdict.channel_refusals[channel.value] = refusal
    if not verdict.channels:
        verdict.dropped = DropReason.NO_CHANNEL
    addressed = sorted(set(problems) & {p.value for p in action.addresses})
    verdict.reason_codes = [f"addresses:{p}" for p in addressed]
    return verdict


def _drop_reason(
    action: Action,
    profile: Profile | None,
    problems: list[str],
    eligible: bool,
    at: datetime,
    policy: ContactPolicy,
) -> DropReason | None:
    if not action.is_valid_on(at.date()):
        return DropReason.NOT_VALID
    # The overriding rule first, so that the trace shows it.
    if problems and (action.kind in SALES_KINDS or action.purpose is Purpose.MARKETING):
        return DropReason.SERVICE_FIRST
    if not eligible:
        return DropReason.NOT_ELIGIBLE
    if profile is None:
        return None
    feedback = profile.action_feedback.get(action.id)
    if feedback is not None:
        since = at - timedelta(days=policy.suppression_days)
        if sum(1 for stamp in feedback.declines if stamp.at > since) >= policy.decline_limit:
            return DropReason.SUPPRESSED
    if action.cooldown_days:
        since = at - timedelta(days=action.cooldown_days)
        if any(x.action_id == action.id and x.at > since for x in profile.exposures):
            return DropReason.COOLDOWN
    return None


def _channel_refusal(
    action: Action,
    channel: Channel,
    profile: Profile | None,
    exposures: list[Exposure],
    outbound: bool,
    hour: int,
    at: datetime,
    policy: ContactPolicy,
    config: EngineConfig,
) -> ChannelRefusal | None:
    if not may_contact(profile, action.purpose, channel.value, config):
        return ChannelRefusal.NO_CONSENT
    start, end = policy.quiet_hours
    quiet = start <= hour or hour < end if start > end else start <= hour < end
    if outbound and quiet:
        return ChannelRefusal.QUIET_HOURS
    return cap_refusal(action, channel, exposures, at, policy)


def cap_refusal(
    action: Action,
    channel: Channel,
    exposures: Sequence[Exposure],
    at: datetime,
    policy: ContactPolicy,
) -> ChannelRefusal | None:
    """The cap that delivering `action` on `channel` now would break, given `exposures`
    (earlier deliveries, and the actions already picked in this decision)."""
    for cap in action.caps:
        since = at - timedelta(days=cap.days)
        if sum(1 for x in exposures if x.action_id == action.id and x.at > since) >= cap.count:
            return ChannelRefusal.ACTION_CAP
    for rule in policy.frequency_caps:
        if rule.purpose is not action.purpose or rule.channel not in (None, channel):
            continue
        since = at - timedelta(days=rule.days)
        used = sum(
            1
            for x in exposures
            if x.purpose == rule.purpose.value
            and x.at > since
            and (rule.channel is None or x.channel == rule.channel.value)
        )
        if used >= rule.count:
            return ChannelRefusal.FREQUENCY_CAP
    return None
