"""A seeded synthetic population: customers with a latent truth and their event streams.

`generate_population(spec)` draws each customer's truth (see `training.simulation.truth`) and the
months of multi-touchpoint events it would produce: requests at ATMs, web, app and branches that
follow habits with noise, inbound contacts on the customer's preferred channels, complaints that
open and resolve, feedback scores that drop around complaints, and a few stated preferences.
Consent changes and foreign currency orders before trips (see `training.simulation.affinity`)
come from a second generator with ids of their own (`syn-<seed>-x<n>`), so they were added
without changing any of the other events. Both generators are seeded by the spec: the same spec
gives the same events, byte for byte.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from engine.events import Channel, Event, EventType
from training.simulation.affinity import draw_latent_extras
from training.simulation.periodic import draw_periodic_habits, periodic_requests
from training.simulation.truth import (
    CASH_WITHDRAWAL,
    TOP_UP,
    TOP_UP_AMOUNTS,
    TOP_UP_WEIGHTS,
    WITHDRAWAL_AMOUNTS,
    WITHDRAWAL_WEIGHTS,
    Calendar,
    ComplaintCase,
    CustomerTruth,
    HabitPeriod,
    HabitValues,
    PopulationSpec,
    changed_habit,
    draw_customer_truth,
    pick_amount,
)

__all__ = [
    "ComplaintCase",
    "CustomerHistory",
    "CustomerTruth",
    "HabitPeriod",
    "Population",
    "PopulationSpec",
    "cyclic_gc_paused",
    "generate_population",
    "iter_customer_histories",
]

CONTACT_TOPICS: tuple[str, ...] = (
    "card",
    "account",
    "payments",
    "loan",
    "mortgage",
    "fees",
    "app_support",
    "fraud",
)
#: Amounts (EUR) withdrawn over a branch counter, always with a receipt.
BRANCH_WITHDRAWAL_AMOUNTS: tuple[int, ...] = (300, 500, 1000, 2000)
BRANCH_CITIES: tuple[str, ...] = ("milano", "roma", "torino", "napoli", "bologna", "firenze")
ATM_COUNT = 500
CALL_CENTER_AGENTS = 120
#: Share of a customer's ATM and branch visits made at their usual ones.
HOME_TOUCHPOINT_SHARE = 0.85
#: How long after a complaint is resolved it still weighs on feedback scores.
COMPLAINT_AFTERMATH = timedelta(days=14)
FOREIGN_CURRENCY_ORDER = "foreign_currency_order"
FOREIGN_CURRENCIES: tuple[str, ...] = ("USD", "GBP", "CHF", "JPY")
CURRENCY_ORDER_AMOUNTS: tuple[int, ...] = (200, 300, 500, 1000)
#: Foreign currency is ordered between 2 and 10 days before departure.
CURRENCY_ORDER_DAYS_BEFORE = (2, 11)
#: Stream of the latent generator, apart from the main one (the seed itself).
_LATENT_STREAM = 1
#: Stream of the periodic habits' generator (`training.simulation.periodic`).
_PERIODIC_STREAM = 2


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """One customer's truth and events, sorted by (occurred_at, event_id)."""

    truth: CustomerTruth
    events: list[Event]


@dataclass(frozen=True, slots=True)
class Population:
    """Events of all customers, sorted by (occurred_at, event_id), and each customer's truth."""

    spec: PopulationSpec
    events: list[Event]
    truth: dict[str, CustomerTruth]

    def events_by_customer(self) -> dict[str, list[Event]]:
        """Each customer's events, in time order."""
        by_customer: dict[str, list[Event]] = defaultdict(list)
        for event in self.events:
            by_customer[event.customer_id].append(event)
        return dict(by_customer)


def generate_population(spec: PopulationSpec) -> Population:
    """Generate the population of `spec`: the same spec always gives the same population."""
    truth: dict[str, CustomerTruth] = {}
    events: list[Event] = []
    with cyclic_gc_paused():
        for history in iter_customer_histories(spec):
            truth[history.truth.customer_id] = history.truth
            events.extend(history.events)
        events.sort(key=_time_order)
    return Population(spec=spec, events=events, truth=truth)


def _time_order(event: Event) -> tuple[datetime, str]:
    return event.occurred_at, event.event_id


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (reference counting still frees memory).

    Generation builds about a million long-lived objects and hardly any garbage cycles; the
    collector would rescan them over and over, which took a third of the time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def iter_customer_histories(spec: PopulationSpec) -> Iterator[CustomerHistory]:
    """Customer by customer, the same histories `generate_population` gathers (less memory)."""
    simulator = _PopulationSimulator(spec)
    for number in range(1, spec.customers + 1):
        yield simulator.history(f"cust-{number:06d}")


@dataclass(frozen=True, slots=True)
class _HomeTouchpoints:
    """The ATMs, branch and app a customer usually uses."""

    atms: tuple[str, ...]
    branch: str
    app: str

    def pick(self, rng: np.random.Generator, channel: Channel) -> str:
        if channel is Channel.ATM:
            if rng.random() < HOME_TOUCHPOINT_SHARE:
                return self.atms[int(rng.integers(len(self.atms)))]
            return _atm(rng)
        if channel is Channel.BRANCH:
            return self.branch if rng.random() < HOME_TOUCHPOINT_SHARE else _branch(rng)
        if channel is Channel.MOBILE_APP:
            return self.app
        if channel is Channel.CALL_CENTER:
            return f"cc-agent-{int(rng.integers(1, CALL_CENTER_AGENTS + 1)):03d}"
        return channel.value


def _atm(rng: np.random.Generator) -> str:
    return f"atm-{int(rng.integers(1, ATM_COUNT + 1)):04d}"


def _branch(rng: np.random.Generator) -> str:
    city = BRANCH_CITIES[int(rng.integers(len(BRANCH_CITIES)))]
    return f"branch-{city}-{int(rng.integers(1, 13)):02d}"


class _PopulationSimulator:
    """Draws customers one after another from the one seeded generator it owns."""

    def __init__(self, spec: PopulationSpec) -> None:
        self._spec = spec
        self._rng = np.random.Generator(np.random.PCG64(spec.seed))
        self._latent_rng = np.random.Generator(np.random.PCG64([spec.seed, _LATENT_STREAM]))
        self._calendar = Calendar(spec.start, spec.days)
        self._next_event_number = 0
        self._next_latent_number = 0
        self._periodic_rng = np.random.Generator(np.random.PCG64([spec.seed, _PERIODIC_STREAM]))
        self._next_periodic_number = 0

    def history(self, customer_id: str) -> CustomerHistory:
        truth = draw_customer_truth(self._rng, self._spec, self._calendar, customer_id)
        truth = draw_latent_extras(self._latent_rng, self._spec, self._calendar, truth)
        if self._spec.periodic_share > 0:
            periodic = draw_periodic_habits(self._periodic_rng, self._spec, self._calendar)
            truth = truth.model_copy(update={"periodic": periodic})
        home = self._draw_home_touchpoints()
        touches = [*self._requests(truth, home), *self._contacts(truth, home)]
        events = [
            *touches,
            *self._complaints(truth, home),
            *self._statement(truth, home),
            *self._feedback(truth, touches),
            *self._consents(truth, home),
            *self._currency_orders(truth, home),
            *self._periodic_requests(truth, home),
        ]
        # In time order: folding them in another order could find some "too late" to fold.
        events.sort(key=_time_order)
        return CustomerHistory(truth=truth, events=events)

    def _draw_home_touchpoints(self) -> _HomeTouchpoints:
        rng = self._rng
        atms = tuple(_atm(rng) for _ in range(int(rng.integers(1, 4))))
        app = "app-ios" if rng.random() < 0.55 else "app-android"
        return _HomeTouchpoints(atms=atms, branch=_branch(rng), app=app)

    def _event(
        self,
        truth: CustomerTruth,
        channel: Channel,
        touchpoint: str,
        event_type: EventType,
        at: datetime,
        attributes: dict[str, Any],
        *,
        latent: bool = False,
        periodic: bool = False,
    ) -> Event:
        """An event with the next id; events of the latent generator are numbered apart, so
        adding them leaves the ids of every other event unchanged."""
        if periodic:
            number = f"p{self._next_periodic_number}"
            self._next_periodic_number += 1
        elif latent:
            number = f"x{self._next_latent_number}"
            self._next_latent_number += 1
        else:
            number = str(self._next_event_number)
            self._next_event_number += 1
        return Event(
            event_id=f"syn-{self._spec.seed}-{number}",
            customer_id=truth.customer_id,
            touchpoint=touchpoint,
            channel=channel,
            type=event_type,
            occurred_at=at,
            attributes=attributes,
        )

    def _split_by_channel(
        self, expected: float, channel_shares: dict[Channel, float]
    ) -> list[tuple[Channel, int]]:
        """A Poisson number of choices with mean `expected`, split over channels by share."""
        shares = np.array(list(channel_shares.values()))
        counts = self._rng.multinomial(int(self._rng.poisson(expected)), shares / shares.sum())
        return list(zip(channel_shares, (int(count) for count in counts), strict=True))

    def _requests(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        events = []
        for request, per_month in truth.requests_per_month.items():
            expected = per_month * self._spec.months
            for channel, count in self._split_by_channel(expected, truth.request_channels[request]):
                for at in self._calendar.moments(self._rng, channel, count):
                    attributes = {
                        "request": request,
                        **self._request_values(truth, request, channel, at),
                    }
                    touchpoint = home.pick(self._rng, channel)
                    events.append(
                        self._event(truth, channel, touchpoint, EventType.REQUEST, at, attributes)
                    )
        return events

    def _request_values(
        self, truth: CustomerTruth, request: str, channel: Channel, at: datetime
    ) -> HabitValues:
        """The habit's values, except for noise; one-off values where there is no habit."""
        usual = truth.usual_values_at(request, channel, at)
        if usual is None:
            return self._one_off_values(request, channel)
        if self._rng.random() >= self._spec.habit_noise:
            return usual
        if "receipt" in usual and self._rng.random() < 0.5:
            return {**usual, "receipt": not usual["receipt"]}
        return changed_habit(self._rng, request, usual, receipt_flip=0.0)

    def _one_off_values(self, request: str, channel: Channel) -> HabitValues:
        rng, currency = self._rng, self._spec.currency
        if request == CASH_WITHDRAWAL and channel is Channel.BRANCH:
            amount = BRANCH_WITHDRAWAL_AMOUNTS[int(rng.integers(len(BRANCH_WITHDRAWAL_AMOUNTS)))]
            return {"amount": amount, "currency": currency, "receipt": True}
        if request == CASH_WITHDRAWAL:
            amount = pick_amount(rng, WITHDRAWAL_AMOUNTS, WITHDRAWAL_WEIGHTS)
            return {"amount": amount, "currency": currency, "receipt": bool(rng.random() < 0.5)}
        if request == TOP_UP:
            return {
                "amount": pick_amount(rng, TOP_UP_AMOUNTS, TOP_UP_WEIGHTS),
                "currency": currency,
            }
        return {}

    def _contacts(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        """Inbound contacts, each on a channel drawn from the customer's latent distribution."""
        events = []
        expected = truth.contacts_per_month * self._spec.months
        for channel, count in self._split_by_channel(expected, truth.contact_channels):
            for at in self._calendar.moments(self._rng, channel, count):
                topic = CONTACT_TOPICS[int(self._rng.integers(len(CONTACT_TOPICS)))]
                touchpoint = home.pick(self._rng, channel)
                events.append(
                    self._event(truth, channel, touchpoint, EventType.CONTACT, at, {"topic": topic})
                )
        return events

    def _complaints(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        events = []
        for case in truth.complaints:
            attributes = {"case_id": case.case_id, "topic": case.topic}
            steps = [(EventType.COMPLAINT_OPENED, case.opened_at)]
            if case.resolved_at is not None:
                steps.append((EventType.COMPLAINT_RESOLVED, case.resolved_at))
            for event_type, at in steps:
                touchpoint = home.pick(self._rng, case.channel)
                events.append(
                    self._event(truth, case.channel, touchpoint, event_type, at, dict(attributes))
                )
        return events

    def _statement(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        """The contact channel the customer states, in the app's or the website's settings."""
        if truth.stated_contact_channel is None or truth.stated_at is None:
            return []
        channel = Channel.MOBILE_APP if self._rng.random() < 0.5 else Channel.WEB
        attributes = {"key": "contact_channel", "value": truth.stated_contact_channel.value}
        return [
            self._event(
                truth,
                channel,
                home.pick(self._rng, channel),
                EventType.PREFERENCE_STATED,
                truth.stated_at,
                attributes,
            )
        ]

    def _feedback(self, truth: CustomerTruth, touches: list[Event]) -> list[Event]:
        """Survey answers: at the touchpoint just after some touches, by email after complaints."""
        spec, rng = self._spec, self._rng
        surveyed = [
            (touch.occurred_at + timedelta(seconds=int(rng.integers(30, 900))), touch)
            for touch in touches
            if rng.random() < spec.feedback_rate
        ]
        answers = [(at, touch.channel, touch.touchpoint) for at, touch in surveyed]
        for case in truth.complaints:
            if case.resolved_at is not None and rng.random() < spec.complaint_feedback_rate:
                at = case.resolved_at + timedelta(seconds=int(rng.integers(3_600, 2 * 86_400)))
                answers.append((at, Channel.EMAIL, Channel.EMAIL.value))
        events = []
        for at, channel, touchpoint in answers:
            if at < self._calendar.end:
                score = {"score": self._feedback_score(truth, at)}
                events.append(
                    self._event(truth, channel, touchpoint, EventType.FEEDBACK, at, score)
                )
        return events

    def _feedback_score(self, truth: CustomerTruth, at: datetime) -> int:
        """A score from 0 to 10 around the customer's usual one, lower around a complaint."""
        mean = truth.satisfaction
        if truth.complaint_weighs_at(at, COMPLAINT_AFTERMATH):
            mean -= self._spec.complaint_feedback_penalty
        return int(np.clip(round(float(self._rng.normal(mean, 1.0))), 0, 10))

    def _consents(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        """Consent changes, made in the app's or the website's settings."""
        events = []
        for change in truth.consents:
            channel = self._digital_channel()
            attributes = {
                "purpose": change.purpose.value,
                "status": change.status.value,
                "channel": change.channel.value if change.channel else None,
            }
            touchpoint = home.pick(self._latent_rng, channel)
            events.append(
                self._event(
                    truth,
                    channel,
                    touchpoint,
                    EventType.CONSENT_CHANGED,
                    change.at,
                    attributes,
                    latent=True,
                )
            )
        return events

    def _currency_orders(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        """Before some trips, foreign currency ordered online: the only sign of travelling."""
        rng, events = self._latent_rng, []
        for departure in truth.trips:
            if rng.random() >= self._spec.currency_order_share:
                continue
            day = self._calendar.day_of(departure) - int(rng.integers(*CURRENCY_ORDER_DAYS_BEFORE))
            if day < 0:
                continue
            channel = self._digital_channel()
            at = self._calendar.moment_on_day(rng, channel, day)
            if at < self._calendar.start:
                continue
            attributes = {
                "request": FOREIGN_CURRENCY_ORDER,
                "amount": CURRENCY_ORDER_AMOUNTS[int(rng.integers(len(CURRENCY_ORDER_AMOUNTS)))],
                "currency": FOREIGN_CURRENCIES[int(rng.integers(len(FOREIGN_CURRENCIES)))],
            }
            touchpoint = home.pick(rng, channel)
            events.append(
                self._event(
                    truth, channel, touchpoint, EventType.REQUEST, at, attributes, latent=True
                )
            )
        return events

    def _periodic_requests(self, truth: CustomerTruth, home: _HomeTouchpoints) -> list[Event]:
        """Requests of the habits with varying amounts and rhythms (`periodic_share` only)."""
        if not truth.periodic:
            return []
        return [
            self._event(
                truth,
                channel,
                home.pick(self._periodic_rng, channel),
                EventType.REQUEST,
                at,
                values,
                periodic=True,
            )
            for at, channel, values in periodic_requests(
                self._periodic_rng, truth.periodic, self._calendar
            )
        ]

    def _digital_channel(self) -> Channel:
        return Channel.MOBILE_APP if self._latent_rng.random() < 0.5 else Channel.WEB
