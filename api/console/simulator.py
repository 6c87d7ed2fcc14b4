"""The touchpoint simulator: the decision a touchpoint would get, as a dry run.

A dry run by construction: `simulate` takes a `ReadableStore`, which has only the reads a
decision needs, so it cannot log a decision or an exposure (mypy checks every call it makes),
and it never calls `api.serving.decide_for`, the use-case that logs. What-if changes are
folded into a copy of the profile, never into the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from api.serving import ANONYMOUS_CUSTOMER, Assigner, new_decision_id
from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import decide
from engine.decision import Decision, DecisionRequest
from engine.events import Channel, Event, EventType
from engine.fold import fold
from engine.habits import UsualRequest, usual_requests
from engine.identity import HashedIdentity
from engine.next_best_action import DecisionPolicy
from engine.preferences import ConsentStatus, Purpose
from engine.profile import Profile
from engine.scoring import Scorer


class ReadableStore(Protocol):
    """The reads a decision needs: what the simulator may touch of the store, and nothing else."""

    @property
    def config(self) -> EngineConfig: ...

    def read_profile(self, customer_id: str) -> Profile | None: ...

    def population_prior(self) -> ChannelPrior: ...

    def resolve_identity(self, identity: HashedIdentity) -> str | None: ...


@dataclass(frozen=True)
class WhatIf:
    """Changes applied to a copy of the profile before a simulated decision."""

    open_complaint: bool = False
    marketing_revoked: bool = False

    @property
    def any(self) -> bool:
        return self.open_complaint or self.marketing_revoked

    def label(self) -> str:
        parts = [
            "with an open complaint" if self.open_complaint else "",
            "with marketing consent revoked" if self.marketing_revoked else "",
        ]
        return " and ".join(p for p in parts if p) or "as the customer is"


def _what_if_events(customer_id: str, what_if: WhatIf, at: datetime) -> list[Event]:
    common: dict[str, Any] = {
        "customer_id": customer_id,
        "touchpoint": "console-simulator",
        "occurred_at": at,
    }
    events = []
    if what_if.open_complaint:
        events.append(
            Event(
                event_id="what-if-complaint",
                channel=Channel.CALL_CENTER,
                type=EventType.COMPLAINT_OPENED,
                attributes={"case_id": "what-if-complaint"},
                **common,
            )
        )
    if what_if.marketing_revoked:
        events.append(
            Event(
                event_id="what-if-marketing-revoked",
                channel=Channel.WEB,
                type=EventType.CONSENT_CHANGED,
                attributes={"purpose": Purpose.MARKETING.value, "status": ConsentStatus.REVOKED},
                **common,
            )
        )
    return events


def with_what_if(
    profile: Profile | None,
    customer_id: str,
    what_if: WhatIf,
    *,
    at: datetime,
    config: EngineConfig,
) -> Profile | None:
    """A copy of the profile with the what-if folded in (the stored profile is untouched)."""
    events = _what_if_events(customer_id, what_if, at)
    return fold(profile, events, config) if events else profile


@dataclass(frozen=True)
class Simulation:
    """A dry-run decision and the profile it was computed on (the what-if applied)."""

    decision: Decision
    profile: Profile | None


def simulate(
    store: ReadableStore,
    request: DecisionRequest,
    *,
    at: datetime,
    policy: DecisionPolicy,
    scorer: Scorer | None,
    assigner: Assigner | None,
    what_if: WhatIf = WhatIf(),
    identity: HashedIdentity | None = None,
) -> Simulation:
    """The decision the touchpoint would get, computed as `api.serving.decide_for` computes
    it, without logging it or its exposures: nothing is written anywhere."""
    if identity is not None:
        customer_id = store.resolve_identity(identity) or ANONYMOUS_CUSTOMER
        request = request.model_copy(update={"customer_id": customer_id})
    profile = store.read_profile(request.customer_id)
    treatment = assigner(profile, request) if assigner else None
    scored_policy: DecisionPolicy | None = policy
    if treatment is not None:
        profile, scored_policy, scorer = treatment.profile, treatment.policy, treatment.scorer
    if what_if.any:
        profile = with_what_if(profile, request.customer_id, what_if, at=at, config=store.config)
    decision = decide(
        profile,
        request,
        prior=store.population_prior(),
        config=store.config,
        decision_id=f"dry_{new_decision_id()}",
        at=at,
        policy=scored_policy,
        scorer=scorer,
    )
    if treatment is not None:
        decision = decision.model_copy(update={"experiments": treatment.exposures})
    return Simulation(decision=decision, profile=profile)


@dataclass(frozen=True)
class DefaultConsidered:
    """A habit of this kind of touchpoint, and whether the decision offered it, and why."""

    request: str
    values: dict[str, Any]
    evidence: str
    offered: bool
    why: str


def defaults_considered(
    profile: Profile | None, decision: Decision, config: EngineConfig
) -> list[DefaultConsidered]:
    """Every habit learned at this kind of touchpoint (and for the request asked, if any):
    offered, suppressed after declines, or held back by the model's acceptance estimate."""
    if profile is None:
        return []
    requested = decision.context.get("request")
    habits = usual_requests(
        profile,
        config,
        channel=decision.touchpoint_channel,
        request=requested if isinstance(requested, str) else None,
        include_suppressed=True,
    )
    returned = {default.request for default in decision.defaults}

    def why(habit: UsualRequest) -> str:
        if habit.request in returned:
            return "offered"
        if habit.suppressed:
            return f"suppressed after {habit.declines} declines"
        return (
            "held back: the model estimates its acceptance below "
            f"{config.min_default_acceptance:.0%}"
        )

    return [
        DefaultConsidered(
            request=habit.request,
            values=habit.values,
            evidence=f"{habit.matches} of the last {habit.window}",
            offered=habit.request in returned,
            why=why(habit),
        )
        for habit in habits
    ]
