"""Use-cases of the serving path: the engine's pure functions over an `OnlineStore`.

Each function is what one API route calls; the API only parses and shapes answers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.customer_view import CustomerView, describe_customer
from engine.decide import decide, degraded_decision, exposure_events, outcome_event
from engine.decision import Decision, DecisionRequest, ExperimentExposure
from engine.events import Channel, Event, EventType, OutcomeKind
from engine.identity import HashedIdentity, Identity
from engine.next_best_action import DecisionPolicy
from engine.population import PopulationState
from engine.preferences import validate_preference
from engine.profile import Profile
from engine.scoring import Scorer
from engine.touchpoints import TouchpointStats, touchpoint_report
from feature_store.base import AppendStatus, CustomerExport, IdentityLink, OnlineStore
from feature_store.errors import CustomerErased, StoreError, StoreUnavailable

logger = logging.getLogger(__name__)


class UnknownCustomer(StoreError):
    """No event of this customer was ever folded."""


class UnknownDecision(StoreError):
    """No decision with this id is in the decision log."""


def new_decision_id() -> str:
    return f"dec_{uuid.uuid4().hex}"


#: The customer of a decision asked by an identifier nobody is linked to yet.
ANONYMOUS_CUSTOMER = "anonymous"


@dataclass(frozen=True)
class Treatment:
    """What an experiment's variant changes in one decision (`experiments.assignment` builds it).

    `profile` is the profile the decision sees (a holdout's has no learned state), `policy` and
    `scorer` the variant's (scorer None: the online rates), `exposures` are logged with it.
    """

    profile: Profile | None
    policy: DecisionPolicy | None
    scorer: Scorer | None
    exposures: list[ExperimentExposure]


#: The treatment of a customer's decision, from their profile and the request; None when the
#: customer takes part in no running experiment.
Assigner = Callable[[Profile | None, DecisionRequest], Treatment | None]


class PopulationCache:
    """One worker's population state (`PopulationState`), at most `max_staleness_seconds` old.

    Decisions read it with `current()`, which refreshes inline only when the state is older
    than the bound: the first decision, or while no background refresher (`refresh_every`)
    runs or the store failed it. The state is rebuilt only when the store's prior changed.
    Thread-safe: the state is swapped in one assignment.
    """

    def __init__(self, store: OnlineStore, *, max_staleness_seconds: float = 1.0) -> None:
        self._store = store
        self.max_staleness_seconds = max_staleness_seconds
        self._state: tuple[float, PopulationState] | None = None

    def refresh(self) -> PopulationState:
        """Read the store's prior now (may raise StoreUnavailable)."""
        taken = time.monotonic()
        prior = self._store.population_prior()
        cached = self._state
        state = cached[1] if cached and cached[1].prior is prior else PopulationState.of(prior)
        self._state = (taken, state)
        return state

    def current(self) -> PopulationState:
        cached = self._state
        if cached is None or time.monotonic() - cached[0] > self.max_staleness_seconds:
            return self.refresh()
        return cached[1]

    def refresh_every(self, seconds: float) -> threading.Event:
        """Refresh in a daemon thread every `seconds` (less than the bound) until the returned
        event is set. A failure is logged and retried at the next tick."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(seconds):
                try:
                    self.refresh()
                except Exception as error:
                    # The refresher must outlive any failure (an outage, a store closing under
                    # it at shutdown); decisions refresh inline once the state is too old.
                    logger.warning("population refresh failed: %s", type(error).__name__)

        threading.Thread(target=loop, name="population-refresh", daemon=True).start()
        return stop


def decide_for(
    store: OnlineStore,
    request: DecisionRequest,
    *,
    at: datetime,
    identity: HashedIdentity | None = None,
    policy: DecisionPolicy | None = None,
    scorer: Scorer | None = None,
    assigner: Assigner | None = None,
    population: PopulationCache | None = None,
    decision_id: str | None = None,
) -> Decision:
    """Decide and log. If the store is unreachable, answer safely with `degraded=True`.
    `scorer` is the served model; None for the online smoothed rates. With `assigner`, a
    customer in a running experiment gets their variant's treatment, logged as an exposure.
    `population` is the worker's cached population state (None: read from the store now).

    With `identity`, the customer is the one it is linked to (a decision never creates one:
    an unknown identifier decides for an anonymous customer). A degraded decision is not in
    the decision log (the log lives in the store), so no outcome can be recorded against it.
    An erased customer's decision is answered degraded too, and stores nothing under their id.
    `decision_id` is a new random one unless given (a simulation's, for reproducible runs).
    """
    decision_id = decision_id or new_decision_id()
    try:
        if identity is not None:
            customer_id = store.resolve_identity(identity) or ANONYMOUS_CUSTOMER
            request = request.model_copy(update={"customer_id": customer_id})
        profile = store.read_profile(request.customer_id)
        if (
            profile is None
            and request.customer_id != ANONYMOUS_CUSTOMER
            and store.is_erased(request.customer_id)
        ):
            return degraded_decision(request, decision_id=decision_id, at=at)
        state = (
            population.current()
            if population is not None
            else PopulationState.of(store.population_prior())
        )
    except StoreUnavailable:
        return degraded_decision(request, decision_id=decision_id, at=at)
    treatment = assigner(profile, request) if assigner else None
    if treatment is not None:
        profile, policy, scorer = treatment.profile, treatment.policy, treatment.scorer
    decision = decide(
        profile,
        request,
        prior=state.prior,
        config=store.config,
        decision_id=decision_id,
        at=at,
        policy=policy,
        scorer=scorer or state.online_rates,
    )
    if treatment is not None:
        decision = decision.model_copy(update={"experiments": treatment.exposures})
    # Returned actions count toward caps and cooldowns from now on.
    delivered = (
        exposure_events(decision, policy.purposes, policy.limited)
        if policy and decision.actions
        else []
    )
    try:
        store.record_decision(decision, delivered)
    except StoreUnavailable:
        # Without the exposures recorded a cap could be broken: answer safely instead.
        return degraded_decision(request, decision_id=decision_id, at=at)
    return decision


def record_outcome(
    store: OnlineStore,
    decision_id: str,
    item_id: str,
    outcome: OutcomeKind,
    *,
    at: datetime,
    value: float | None = None,
) -> AppendStatus:
    """Join the customer's answer to its decision and fold it into the profile.

    Raises UnknownDecision, or engine.errors.UnknownOutcomeTarget for an item the decision did
    not return. Repeating an outcome is a DUPLICATE and changes nothing.
    """
    decision = logged_decision(store, decision_id)
    [status] = store.apply_events([outcome_event(decision, item_id, outcome, at=at, value=value)])
    return status


def touchpoint_stats(store: OnlineStore) -> list[TouchpointStats]:
    return touchpoint_report(store.population_prior().counts)


def logged_decision(store: OnlineStore, decision_id: str) -> Decision:
    decision = store.read_decision(decision_id)
    if decision is None:
        raise UnknownDecision(decision_id)
    return decision


def preference_events(
    customer_id: str,
    preferences: Mapping[str, Any],
    *,
    touchpoint: str,
    channel: Channel,
    source: str | None,
    at: datetime,
) -> list[Event]:
    """Statements as `preference_stated` events (ValueError names a bad key or value)."""
    for key, value in preferences.items():
        validate_preference(key, value)
    statement = uuid.uuid4().hex
    return [
        Event(
            event_id=f"pref_{statement}_{key}",
            customer_id=customer_id,
            touchpoint=touchpoint,
            channel=channel,
            type=EventType.PREFERENCE_STATED,
            occurred_at=at,
            attributes={"key": key, "value": value, "source": source or touchpoint},
        )
        for key, value in sorted(preferences.items())
    ]


def ingest(store: OnlineStore, events: Sequence[Event]) -> list[AppendStatus]:
    """Log and fold events (atomic per customer, idempotent by event id)."""
    return store.apply_events(events) if events else []


def customer_view(store: OnlineStore, customer_id: str, *, at: datetime) -> CustomerView:
    profile = store.read_profile(customer_id)
    if profile is None:
        raise UnknownCustomer(customer_id)
    return describe_customer(profile, store.population_prior(), at=at, config=store.config)


def consent_events(
    customer_id: str,
    statements: Sequence[Mapping[str, Any]],
    *,
    touchpoint: str,
    channel: Channel,
    source: str | None,
    at: datetime,
) -> list[Event]:
    """Consent statements (`{"purpose", "channel"?, "status"}`) as `consent_changed` events.

    Raises pydantic's ValidationError, naming the attribute, for a bad statement.
    """
    statement = uuid.uuid4().hex
    return [
        Event(
            event_id=f"consent_{statement}_{position}",
            customer_id=customer_id,
            touchpoint=touchpoint,
            channel=channel,
            type=EventType.CONSENT_CHANGED,
            occurred_at=at,
            attributes={**consent, "source": source or touchpoint},
        )
        for position, consent in enumerate(statements)
    ]


def link_identities(
    store: OnlineStore,
    identities: Sequence[Identity],
    customer_id: str | None,
    *,
    secret: bytes,
    at: datetime,
) -> IdentityLink:
    """Link identifiers (kept only as keyed digests) to one customer, merging as needed."""
    return store.link_identities([i.hashed(secret) for i in identities], customer_id, at=at)


def resolve_customer(
    store: OnlineStore,
    customer_id: str | None,
    identities: Sequence[Identity],
    *,
    secret: bytes,
    at: datetime,
) -> str:
    """The customer an event or decision names, directly or through identifiers.

    One identifier that is already known is only read; anything else links (and may create a
    customer or merge two).
    """
    if customer_id is not None and not identities:
        return customer_id
    hashed = [identity.hashed(secret) for identity in identities]
    if customer_id is None and len(hashed) == 1:
        known = store.resolve_identity(hashed[0])
        if known is not None:
            return known
    return store.link_identities(hashed, customer_id, at=at).customer_id


def export_customer(store: OnlineStore, customer_id: str) -> CustomerExport:
    export = store.export_customer(customer_id)
    if export is None:
        raise UnknownCustomer(customer_id)
    return export


def erase_customer(store: OnlineStore, customer_id: str) -> bool:
    """Erase the customer; True if anything was removed, False if they were erased before.
    Raises UnknownCustomer for an id the store never held (nothing is recorded for it: a typo
    must not block a real customer's events for ever)."""
    if (
        store.read_profile(customer_id) is None
        and store.export_customer(customer_id) is None
        and not store.is_erased(customer_id)
    ):
        raise UnknownCustomer(customer_id)
    return store.erase_customer(customer_id)


@dataclass(frozen=True)
class PendingEvent:
    """A validated event whose customer may still have to be found through its identifiers."""

    event: Event
    identities: list[Identity]
    named: bool  # the event named its customer_id itself


def route_to_customers(
    store: OnlineStore, pending: Sequence[PendingEvent], *, secret: bytes, at: datetime
) -> list[Event | None]:
    """Each event with its customer resolved (linking its identifiers), or None if erased."""
    routed: list[Event | None] = []
    for item in pending:
        if not item.identities:
            routed.append(item.event)
            continue
        try:
            customer_id = resolve_customer(
                store,
                item.event.customer_id if item.named else None,
                item.identities,
                secret=secret,
                at=at,
            )
        except CustomerErased:
            routed.append(None)
            continue
        routed.append(item.event.model_copy(update={"customer_id": customer_id}))
    return routed
