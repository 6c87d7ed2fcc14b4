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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from engine.catalogue import Action, ActionKind
from engine.conditions import Predicate, compile_condition
from engine.config import EngineConfig
from engine.consent import may_contact
from engine.decision import Reasons
from engine.events import Channel
from engine.facts import Facts
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

    def is_quiet(self, hour: int) -> bool:
        """Whether `hour` (0-23) is within the quiet hours."""
        start, end = self.quiet_hours
        return start <= hour or hour < end if start > end else start <= hour < end


@dataclass(slots=True)
class Admission:
    """The policy's verdict on one action: dropped (and why), or the deliverable channels."""

    action_id: str
    dropped: DropReason | None = None
    channels: list[str] = field(default_factory=list)
    channel_refusals: dict[str, ChannelRefusal] = field(default_factory=dict)
    reason_codes: list[str] = field(default_factory=list)


SALES_KINDS = frozenset({ActionKind.SALES, ActionKind.RETENTION})


@dataclass(frozen=True, slots=True)
class CapRule:
    """A rolling window over earlier deliveries: at most `count` within `window`. `action_id`
    counts only that action's deliveries; `purpose` and `channel` (None: any) count those."""

    window: timedelta
    count: int
    action_id: str | None = None
    purpose: str | None = None
    channel: str | None = None

    def is_full(self, exposures: Sequence[Exposure], at: datetime) -> bool:
        since = at - self.window
        used = 0
        for x in exposures:
            if (
                x.at > since
                and (self.action_id is None or x.action_id == self.action_id)
                and (self.purpose is None or x.purpose == self.purpose)
                and (self.channel is None or x.channel == self.channel)
            ):
                used += 1
        return used >= self.count


@dataclass(frozen=True, slots=True)
class CompiledAction:
    """A catalogue action as the contact policy applies it, prepared once per policy: its
    condition a closure, its caps and the frequency caps of each channel as windows, its texts
    as the `Reasons` a decision returns."""

    action: Action
    id: str
    kind: str
    purpose: Purpose
    channels: tuple[tuple[Channel, str], ...]
    valid_from: date | None
    valid_until: date | None
    eligible: Predicate | None
    not_while_problems: bool  # service before sales: dropped while a problem is open
    cooldown: timedelta | None
    action_caps: tuple[CapRule, ...]
    frequency_caps: dict[str, tuple[CapRule, ...]]  # by channel
    addresses: frozenset[str]
    title: Reasons
    message: Reasons
    purpose_code: str

    @classmethod
    def of(cls, action: Action, policy: ContactPolicy) -> CompiledAction:
        return cls(
            action=action,
            id=action.id,
            kind=action.kind.value,
            purpose=action.purpose,
            channels=tuple((channel, channel.value) for channel in action.channels),
            valid_from=action.validity.valid_from,
            valid_until=action.validity.valid_until,
            eligible=None if action.eligibility is None else compile_condition(action.eligibility),
            not_while_problems=action.kind in SALES_KINDS or action.purpose is Purpose.MARKETING,
            cooldown=timedelta(days=action.cooldown_days) if action.cooldown_days else None,
            action_caps=tuple(
                CapRule(timedelta(days=cap.days), cap.count, action_id=action.id)
                for cap in action.caps
            ),
            frequency_caps={
                channel.value: tuple(
                    CapRule(
                        timedelta(days=rule.days),
                        rule.count,
                        purpose=rule.purpose.value,
                        channel=None if rule.channel is None else rule.channel.value,
                    )
                    for rule in policy.frequency_caps
                    if rule.purpose is action.purpose and rule.channel in (None, channel)
                )
                for channel in action.channels
            },
            addresses=frozenset(problem.value for problem in action.addresses),
            title=Reasons(en=action.title.en, it=action.title.it),
            message=Reasons(en=action.message.en, it=action.message.it),
            purpose_code=f"purpose:{action.purpose.value}",
        )

    def is_valid_on(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (
            self.valid_until is None or day <= self.valid_until
        )

    def is_eligible(self, facts: Facts) -> bool:
        return self.eligible is None or self.eligible(facts)

    def limited(self) -> bool:
        """Some cap, cooldown or marketing frequency cap counts its deliveries."""
        return bool(self.action_caps or self.cooldown or self.purpose is Purpose.MARKETING)


@dataclass(frozen=True, slots=True)
class Moment:
    """One decision as the contact policy sees it: the customer, their open problems (sorted),
    the touchpoint's channel (inbound: the customer is there now), the time, and whether
    outbound contact is quiet then."""

    profile: Profile | None
    problems: tuple[str, ...]
    touchpoint_channel: str
    at: datetime
    quiet: bool
    policy: ContactPolicy
    config: EngineConfig
    consents: dict[tuple[Purpose, str], bool] = field(default_factory=dict)

    def may_contact(self, purpose: Purpose, channel: str) -> bool:
        """Consent for `purpose` on `channel`, looked up once per decision."""
        key = (purpose, channel)
        allowed = self.consents.get(key)
        if allowed is None:
            allowed = self.consents[key] = may_contact(self.profile, purpose, channel, self.config)
        return allowed

    @classmethod
    def of(
        cls,
        profile: Profile | None,
        problems: Sequence[str],
        *,
        touchpoint_channel: str,
        at: datetime,
        policy: ContactPolicy,
        config: EngineConfig,
    ) -> Moment:
        return cls(
            profile=profile,
            problems=tuple(sorted(set(problems))),
            touchpoint_channel=touchpoint_channel,
            at=at,
            quiet=policy.is_quiet(at.hour),
            policy=policy,
            config=config,
        )


def admit(action: CompiledAction, moment: Moment, *, eligible: bool) -> Admission:
    """Whether `action` may be offered at `moment`, and by which channels (pure).

    The touchpoint's own channel is inbound (the customer is there now): quiet hours do not
    apply to it; consent and caps do.
    """
    verdict = Admission(action_id=action.id)
    drop = _drop_reason(action, moment, eligible)
    if drop is not None:
        verdict.dropped = drop
        if drop is DropReason.SERVICE_FIRST:
            verdict.reason_codes = [f"open_problem:{p}" for p in moment.problems]
        return verdict
    exposures = moment.profile.exposures if moment.profile else []
    for channel, name in action.channels:
        refusal = _channel_refusal(action, channel, name, exposures, moment)
        if refusal is None:
            verdict.channels.append(name)
        else:
            verdict.channel_refusals[name] = refusal
    if not verdict.channels:
        verdict.dropped = DropReason.NO_CHANNEL
    if action.addresses:
        addressed = [p for p in moment.problems if p in action.addresses]
        verdict.reason_codes = [f"addresses:{p}" for p in addressed]
    return verdict


def _drop_reason(action: CompiledAction, moment: Moment, eligible: bool) -> DropReason | None:
    at, profile = moment.at, moment.profile
    if not action.is_valid_on(at.date()):
        return DropReason.NOT_VALID
    # The overriding rule first, so that the trace shows it.
    if moment.problems and action.not_while_problems:
        return DropReason.SERVICE_FIRST
    if not eligible:
        return DropReason.NOT_ELIGIBLE
    if profile is None:
        return None
    feedback = profile.action_feedback.get(action.id)
    if feedback is not None and feedback.declines:
        policy = moment.policy
        since = at - timedelta(days=policy.suppression_days)
        if sum(1 for stamp in feedback.declines if stamp.at > since) >= policy.decline_limit:
            return DropReason.SUPPRESSED
    if action.cooldown is not None:
        since = at - action.cooldown
        if any(x.action_id == action.id and x.at > since for x in profile.exposures):
            return DropReason.COOLDOWN
    return None


def _channel_refusal(
    action: CompiledAction,
    channel: Channel,
    name: str,
    exposures: Sequence[Exposure],
    moment: Moment,
) -> ChannelRefusal | None:
    if not moment.may_contact(action.purpose, name):
        return ChannelRefusal.NO_CONSENT
    if (
        moment.quiet
        and name != moment.touchpoint_channel
        and channel in moment.policy.outbound_channels
    ):
        return ChannelRefusal.QUIET_HOURS
    return cap_refusal(action, name, exposures, moment.at)


def cap_refusal(
    action: CompiledAction, channel: str, exposures: Sequence[Exposure], at: datetime
) -> ChannelRefusal | None:
    """The cap that delivering `action` on `channel` now would break, given `exposures`
    (earlier deliveries, and the actions already picked in this decision)."""
    if not exposures:
        return None
    for rule in action.action_caps:
        if rule.is_full(exposures, at):
            return ChannelRefusal.ACTION_CAP
    for rule in action.frequency_caps[channel]:
        if rule.is_full(exposures, at):
            return ChannelRefusal.FREQUENCY_CAP
    return None
