"""Independent checks of next-best-action offers: the promises of the contact policy, recomputed
from the profile at decision time and a log of what was delivered, not from the engine's trace.

* service before sales: no sales, retention or marketing offer while a problem is open;
* consent: the delivery channel is consented to for the action's purpose;
* caps: the action's caps and cooldown, and the contact policy's frequency caps, over rolling
  windows of the deliveries log (every delivery, not only those the profile keeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from engine.catalogue import Action, ActionKind
from engine.config import EngineConfig
from engine.consent import may_contact
from engine.decision import ChosenAction
from engine.facts import open_problems
from engine.policy import ContactPolicy
from engine.preferences import Purpose
from engine.profile import Profile

_SALES_KINDS = frozenset({ActionKind.SALES, ActionKind.RETENTION})


class Violations(BaseModel):
    """Offers that broke a promise, by promise."""

    service_first: int = Field(0, description="Sales or marketing while a problem was open.")
    no_consent: int = Field(0, description="Delivered on a channel without consent.")
    caps: int = Field(0, description="Over an action cap, a cooldown or a frequency cap.")

    def __add__(self, other: Violations) -> Violations:
        return Violations(
            service_first=self.service_first + other.service_first,
            no_consent=self.no_consent + other.no_consent,
            caps=self.caps + other.caps,
        )

    @property
    def total(self) -> int:
        return self.service_first + self.no_consent + self.caps


@dataclass(frozen=True, slots=True)
class Delivery:
    """An action delivered to a customer."""

    at: datetime
    action_id: str
    channel: str
    purpose: Purpose

    @classmethod
    def of(cls, offered: ChosenAction, action: Action, at: datetime) -> Delivery:
        return cls(at=at, action_id=action.id, channel=offered.channel, purpose=action.purpose)


def check_offer(
    offered: ChosenAction,
    action: Action,
    *,
    profile: Profile | None,
    deliveries: list[Delivery],
    at: datetime,
    policy: ContactPolicy,
    config: EngineConfig,
) -> Violations:
    """The promises `offered` breaks, given the customer's profile and deliveries before `at`."""
    return Violations(
        service_first=int(_sells_during_a_problem(action, profile, at, config)),
        no_consent=int(not may_contact(profile, action.purpose, offered.channel, config)),
        caps=int(_breaks_a_cap(action, offered.channel, deliveries, at, policy)),
    )


def _sells_during_a_problem(
    action: Action, profile: Profile | None, at: datetime, config: EngineConfig
) -> bool:
    selling = action.kind in _SALES_KINDS or action.purpose is Purpose.MARKETING
    return selling and profile is not None and bool(open_problems(profile, at, config))


def _breaks_a_cap(
    action: Action, channel: str, deliveries: list[Delivery], at: datetime, policy: ContactPolicy
) -> bool:
    def recent(days: int) -> list[Delivery]:
        since = at - timedelta(days=days)
        return [delivery for delivery in deliveries if delivery.at > since]

    def of_action(days: int) -> int:
        return sum(1 for delivery in recent(days) if delivery.action_id == action.id)

    if action.cooldown_days and of_action(action.cooldown_days) > 0:
        return True
    if any(of_action(cap.days) >= cap.count for cap in action.caps):
        return True
    for rule in policy.frequency_caps:
        on_channel = rule.channel is None or rule.channel.value == channel
        if rule.purpose is not action.purpose or not on_channel:
            continue
        used = sum(
            1
            for delivery in recent(rule.days)
            if delivery.purpose is rule.purpose
            and (rule.channel is None or delivery.channel == rule.channel.value)
        )
        if used >= rule.count:
            return True
    return False
