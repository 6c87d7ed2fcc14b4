"""Who the synthetic customers are: the latent ground truth behind the generated events.

`PopulationSpec` sets the population's rates; `draw_customer_truth` draws one customer's hidden
preferences from it (preferred contact channel, channels per request kind, habits that may
change once in the period, complaint cases). `training.simulation.affinity` adds what the
engine can only partly see (value tier, channel style, travel, products held), the consents the
customer gives and takes back, and how likely they are to accept each catalogue action. The event
stream in `training.simulation.population` is generated from this truth, so evaluation can compare
what the
engine learned, and what it offered, with what is true.
Times are UTC and fall at plausible hours for the channel (hours only: weekdays are not modelled).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from engine.events import CONTACT_CHANNELS, Channel, OptionValue
from engine.preferences import ConsentStatus, Purpose

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PerMonth = Annotated[float, Field(ge=0.0)]
HabitValues = dict[str, OptionValue]

SECONDS_PER_DAY = 86_400
DAYS_PER_MONTH = 30.4375

CASH_WITHDRAWAL = "cash_withdrawal"
BALANCE_ENQUIRY = "balance_enquiry"
BILL_ENQUIRY = "bill_enquiry"
TOP_UP = "top_up"

#: Usual ATM withdrawal amounts (EUR) and how common each is as a habit.
WITHDRAWAL_AMOUNTS: tuple[int, ...] = (20, 50, 100, 150, 200, 250, 300, 400)
WITHDRAWAL_WEIGHTS: tuple[float, ...] = (0.06, 0.18, 0.22, 0.10, 0.22, 0.08, 0.09, 0.05)
#: Usual mobile top-up amounts (EUR) and how common each is as a habit.
TOP_UP_AMOUNTS: tuple[int, ...] = (10, 15, 20, 25, 30, 50)
TOP_UP_WEIGHTS: tuple[float, ...] = (0.22, 0.12, 0.28, 0.14, 0.12, 0.12)

#: Population shares of each channel as a request kind's channel; customers vary around them.
REQUEST_CHANNEL_SHARES: dict[str, dict[Channel, float]] = {
    CASH_WITHDRAWAL: {Channel.ATM: 0.9, Channel.BRANCH: 0.1},
    BALANCE_ENQUIRY: {Channel.MOBILE_APP: 0.55, Channel.WEB: 0.3, Channel.ATM: 0.15},
    BILL_ENQUIRY: {
        Channel.WEB: 0.35,
        Channel.MOBILE_APP: 0.3,
        Channel.CALL_CENTER: 0.2,
        Channel.CHAT: 0.15,
    },
    TOP_UP: {Channel.MOBILE_APP: 0.7, Channel.WEB: 0.2, Channel.ATM: 0.1},
}
#: How often each contact channel is a customer's preferred one.
CONTACT_CHANNEL_POPULARITY: dict[Channel, float] = {
    Channel.CALL_CENTER: 0.25,
    Channel.EMAIL: 0.2,
    Channel.SMS: 0.1,
    Channel.MOBILE_APP: 0.3,
    Channel.CHAT: 0.15,
}
COMPLAINT_TOPICS: tuple[str, ...] = (
    "cash_not_dispensed",
    "card_blocked",
    "unexpected_fee",
    "app_outage",
    "failed_payment",
    "rude_service",
)

# Relative activity by UTC hour of day; staffed channels are further limited to opening hours.
_HOURLY_ACTIVITY = np.array(
    [
        *(0.2, 0.1, 0.05, 0.05, 0.05, 0.2, 0.6, 1.2, 2.0, 2.4, 2.6, 2.8),  # 00:00 to 11:59
        *(3.2, 3.0, 2.6, 2.5, 2.6, 3.0, 3.4, 3.2, 2.6, 1.8, 1.0, 0.5),  # 12:00 to 23:59
    ]
)
#: Chance that a life change also turns the receipt habit around.
_LIFE_CHANGE_RECEIPT_FLIP = 0.25
_OPENING_HOURS: dict[Channel, tuple[int, int]] = {
    Channel.BRANCH: (8, 16),
    Channel.CALL_CENTER: (8, 21),
    Channel.CHAT: (8, 22),
}


class PopulationSpec(BaseModel):
    """What population to generate. Rates are per customer; the same spec gives the same data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: int = Field(ge=1, le=10_000_000)
    start: AwareDatetime
    days: int = Field(180, ge=1, le=3_660)
    seed: int = Field(ge=0)
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    activity_spread: float = Field(
        0.5, ge=0, le=2, description="Sigma of the lognormal activity multiplier of a customer."
    )
    withdrawals_per_month: PerMonth = Field(
        3.0, description="Median cash withdrawals per month; a customer's rate is kept in [1, 8]."
    )
    balance_enquiries_per_month: PerMonth = 4.0
    bill_enquiries_per_month: PerMonth = 0.5
    top_ups_per_month: PerMonth = Field(2.0, description="Median, for customers who top up.")
    top_up_share: Probability = Field(0.6, description="Customers with a mobile top-up habit.")
    contacts_per_month: PerMonth = Field(1.0, description="Median inbound contacts per month.")
    complaints_per_month: PerMonth = 0.03
    complaint_resolution_days: float = Field(
        4.0, ge=1, description="Mean whole days from a complaint to its resolution."
    )
    habit_noise: Probability = Field(0.2, description="Chance a habitual request deviates.")
    life_change_probability: Probability = Field(
        0.15, description="Chance a customer's habit changes once during the period."
    )
    receipt_preference_share: Probability = Field(
        0.3, description="Customers whose usual ATM withdrawal takes a receipt."
    )
    stated_preference_share: Probability = Field(
        0.1, description="Customers who state their contact channel early in the period."
    )
    stated_differs_share: Probability = Field(
        0.2, description="Of those, the share who state a channel other than the one they use."
    )
    preferred_contact_mass: tuple[Probability, Probability] = Field(
        (0.6, 0.85), description="Range of the latent probability of the preferred channel."
    )
    feedback_rate: Probability = Field(0.05, description="Chance of a survey after a touch.")
    complaint_feedback_rate: Probability = Field(
        0.6, description="Chance of a survey after a complaint is resolved."
    )
    complaint_feedback_penalty: float = Field(
        4.0, ge=0, le=10, description="Points off the usual score around a complaint."
    )
    marketing_consent_share: Probability = Field(
        0.35, description="Customers who grant marketing consent on every channel."
    )
    channel_marketing_consent_share: Probability = Field(
        0.15, description="Customers who grant marketing consent on one or two channels only."
    )
    marketing_revocation_share: Probability = Field(
        0.1, description="Of the customers who granted marketing, those who revoke it later."
    )
    profiling_revocation_share: Probability = Field(
        0.04, description="Customers who revoke profiling (the engine then forgets them)."
    )
    profiling_regrant_share: Probability = Field(
        0.3, description="Of those, the share who grant profiling again later."
    )
    traveller_share: tuple[Probability, Probability, Probability] = Field(
        (0.15, 0.3, 0.45), description="Share of travellers in the mass, affluent, premium tiers."
    )
    trips_per_year: float = Field(3.0, ge=0, description="Mean trips abroad of a traveller.")
    currency_order_share: Probability = Field(
        0.6, description="Trips before which the traveller orders foreign currency."
    )
    affinity_noise: float = Field(
        0.7, ge=0, le=3, description="Sigma (logit) of a customer's own taste for each action."
    )
    periodic_share: Probability = Field(
        0.0,
        description="Customers who also have habits with varying amounts and rhythms (bills, "
        "salary-day transfers, grocery orders); 0 gives the classic population.",
    )
    responsiveness_spread: float = Field(
        0.5, ge=0, le=3, description="Sigma (logit) of how open a customer is to any offer."
    )

    @model_validator(mode="after")
    def _mass_range_is_ordered(self) -> PopulationSpec:
        low, high = self.preferred_contact_mass
        if low > high:
            raise ValueError("preferred_contact_mass must be (low, high) with low <= high")
        return self

    @property
    def end(self) -> datetime:
        return self.start.astimezone(UTC) + timedelta(days=self.days)

    @property
    def months(self) -> float:
        return self.days / DAYS_PER_MONTH


class HabitPeriod(BaseModel):
    """A habit over [start, end): the values a touchpoint would pre-fill for this request."""

    model_config = ConfigDict(frozen=True)

    request: str
    channel: Channel
    values: HabitValues
    start: AwareDatetime
    end: AwareDatetime

    def covers(self, request: str, channel: str, at: datetime) -> bool:
        return self.request == request and self.channel == channel and self.start <= at < self.end


class PeriodicHabit(BaseModel):
    """A habit whose amount varies around `centre`, with a rhythm (`period`) or at any time.

    Requests fall on `day` (of the month, or of the week: 0 = Monday) give or take
    `jitter_days`, over [start, end); without a period, `per_month` of them at random times."""

    model_config = ConfigDict(frozen=True)

    request: str
    channel: Channel
    currency: str
    centre: float = Field(gt=0, description="The true usual amount.")
    spread: float = Field(ge=0, description="Relative standard deviation of the amount.")
    unit: float = Field(gt=0, description="How the customer rounds: 0.01 (cents), 10 (tens).")
    period: Literal["monthly", "weekly"] | None = None
    day: int = Field(0, ge=0, le=31)
    jitter_days: int = Field(0, ge=0)
    per_month: float = Field(0.0, ge=0)
    start: AwareDatetime
    end: AwareDatetime

    def covers(self, request: str, channel: str, at: datetime) -> bool:
        return self.request == request and self.channel == channel and self.start <= at < self.end


class ComplaintCase(BaseModel):
    """A complaint: opened on a contact channel, resolved later or still open (None)."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    topic: str
    channel: Channel
    opened_at: AwareDatetime
    resolved_at: AwareDatetime | None = None


class LatentTraits(BaseModel):
    """What drives a customer's answers to offers; the engine sees each only through events."""

    model_config = ConfigDict(frozen=True)

    value_tier: Literal["mass", "affluent", "premium"] = Field(
        "mass", description="Wealth; the engine guesses it from withdrawal amounts."
    )
    digital: Probability = Field(0.0, description="Expected share of touches on web and app.")
    assisted: Probability = Field(
        0.0, description="Expected share of touches in branches and with the call centre."
    )
    traveller: bool = Field(
        False, description="Travels abroad; seen only through foreign currency orders."
    )
    responsiveness: float = Field(0.0, description="Openness to any offer, on the logit scale.")


class ConsentChange(BaseModel):
    """A consent the customer gives or takes back (no channel: every channel)."""

    model_config = ConfigDict(frozen=True)

    at: AwareDatetime
    purpose: Purpose
    channel: Channel | None = None
    status: ConsentStatus


class CustomerTruth(BaseModel):
    """The latent truth about one customer, which the engine should learn from the events."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    preferred_contact_channel: Channel
    contact_channels: dict[Channel, Probability] = Field(
        description="Latent probability of each contact channel for an inbound contact."
    )
    request_channels: dict[str, dict[Channel, Probability]] = Field(
        description="Latent probability of each channel, by request kind."
    )
    requests_per_month: dict[str, PerMonth]
    contacts_per_month: PerMonth
    habits: list[HabitPeriod]
    periodic: list[PeriodicHabit] = Field(
        default_factory=list,
        description="Habits with varying amounts (and rhythms): with `periodic_share` only.",
    )
    life_change_at: AwareDatetime | None = Field(
        None, description="When one habit period ended and another began, if it did."
    )
    stated_contact_channel: Channel | None = None
    stated_at: AwareDatetime | None = None
    complaints: list[ComplaintCase] = Field(default_factory=list)
    satisfaction: float = Field(ge=0, le=10, description="Usual feedback score, 0 to 10.")
    traits: LatentTraits = Field(default_factory=LatentTraits)
    products: tuple[str, ...] = Field((), description="Products held, as core systems list them.")
    trips: list[AwareDatetime] = Field(default_factory=list, description="Departures abroad.")
    consents: list[ConsentChange] = Field(default_factory=list, description="In time order.")
    action_affinity: dict[str, Probability] = Field(
        default_factory=dict,
        description="Probability of accepting each catalogue action when it is offered.",
    )

    @field_validator("preferred_contact_channel", "stated_contact_channel")
    @classmethod
    def _is_contact_channel(cls, channel: Channel | None) -> Channel | None:
        if channel is not None and channel not in CONTACT_CHANNELS:
            raise ValueError(f"{channel} is not a contact channel")
        return channel

    def usual_values_at(self, request: str, channel: str, at: datetime) -> HabitValues | None:
        """The habit's values for `request` at `channel` at time `at`, or None without a habit."""
        for habit in self.habits:
            if habit.covers(request, channel, at):
                return dict(habit.values)
        return None

    def periodic_at(self, request: str, channel: str, at: datetime) -> PeriodicHabit | None:
        """The periodic or approximate habit behind a request at `at`, if any."""
        for habit in self.periodic:
            if habit.covers(request, channel, at):
                return habit
        return None

    def complaint_weighs_at(self, at: datetime, aftermath: timedelta) -> bool:
        """Whether a complaint is open at `at` or was resolved less than `aftermath` before."""
        for case in self.complaints:
            resolved = case.resolved_at
            if case.opened_at <= at and (resolved is None or at < resolved + aftermath):
                return True
        return False


class Calendar:
    """The period [start, start + days) in whole seconds, with moments at plausible UTC hours."""

    def __init__(self, start: datetime, days: int) -> None:
        start = start.astimezone(UTC)
        self.start, self.days, self.end = start, days, start + timedelta(days=days)
        self._midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        self._first_second = math.ceil((start - self._midnight).total_seconds())

    def moments(
        self,
        rng: np.random.Generator,
        channel: Channel,
        count: int,
        days: tuple[int, int] | None = None,
    ) -> list[datetime]:
        """`count` random moments on the days [first, last) of the period (default: all of it)."""
        first, last = days if days is not None else (0, self.days)
        day_numbers = rng.integers(first, last, size=count)
        seconds = self._seconds_on(rng, channel, day_numbers)
        # The first day starts at `start`, not at midnight: a moment before it moves a day on.
        seconds[seconds < self._first_second] += SECONDS_PER_DAY
        return [self._midnight + timedelta(seconds=int(second)) for second in seconds]

    def moment_on_day(self, rng: np.random.Generator, channel: Channel, day: int) -> datetime:
        """A moment on day number `day` (counted from the first day), possibly past the end."""
        second = self._seconds_on(rng, channel, np.array([day]))[0]
        return self._midnight + timedelta(seconds=int(second))

    def day_of(self, at: datetime) -> int:
        return (at - self._midnight).days

    def _seconds_on(
        self, rng: np.random.Generator, channel: Channel, day_numbers: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        # Inverse-CDF sampling: what rng.choice(24, p=...) does, without its per-call checks.
        hours = np.searchsorted(_HOUR_CDF[channel], rng.random(len(day_numbers)), side="right")
        within_hour = rng.integers(0, 3_600, size=len(day_numbers))
        return day_numbers * SECONDS_PER_DAY + hours * 3_600 + within_hour


def _hour_cdf(channel: Channel) -> npt.NDArray[np.float64]:
    weights = _HOURLY_ACTIVITY.copy()
    opens, closes = _OPENING_HOURS.get(channel, (0, 24))
    weights[:opens] = 0.0
    weights[closes:] = 0.0
    cdf = np.cumsum(weights) / weights.sum()
    cdf[-1] = 1.0
    return np.asarray(cdf, dtype=np.float64)


_HOUR_CDF = {channel: _hour_cdf(channel) for channel in Channel}


def draw_customer_truth(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar, customer_id: str
) -> CustomerTruth:
    """Draw one customer's latent preferences, habits and complaints."""
    contact_channels = _draw_contact_channels(rng, spec)
    preferred = max(contact_channels, key=lambda channel: contact_channels[channel])
    requests_per_month = _draw_activity(rng, spec)
    habits, life_change_at = _draw_habits(rng, spec, calendar, TOP_UP in requests_per_month)
    stated, stated_at = _draw_statement(rng, spec, calendar, preferred)
    return CustomerTruth(
        customer_id=customer_id,
        preferred_contact_channel=preferred,
        contact_channels=contact_channels,
        request_channels={
            request: _draw_request_channels(rng, shares)
            for request, shares in REQUEST_CHANNEL_SHARES.items()
            if request in requests_per_month
        },
        requests_per_month=requests_per_month,
        contacts_per_month=spec.contacts_per_month * _lognormal(rng, spec.activity_spread),
        habits=habits,
        life_change_at=life_change_at,
        stated_contact_channel=stated,
        stated_at=stated_at,
        complaints=_draw_complaints(rng, spec, calendar, customer_id, contact_channels),
        satisfaction=float(np.clip(rng.normal(7.8, 1.2), 3.0, 10.0)),
    )


def _lognormal(rng: np.random.Generator, sigma: float) -> float:
    return float(rng.lognormal(0.0, sigma))


def _draw_contact_channels(rng: np.random.Generator, spec: PopulationSpec) -> dict[Channel, float]:
    """A distribution over contact channels with most of its mass on one preferred channel."""
    channels = list(CONTACT_CHANNEL_POPULARITY)
    popularity = np.array(list(CONTACT_CHANNEL_POPULARITY.values()))
    preferred = channels[int(rng.choice(len(channels), p=popularity / popularity.sum()))]
    low, high = spec.preferred_contact_mass
    preferred_mass = float(rng.uniform(low, high))
    others = [channel for channel in channels if channel != preferred]
    rest = rng.dirichlet(np.ones(len(others))) * (1.0 - preferred_mass)
    shares = {preferred: preferred_mass, **dict(zip(others, rest.tolist(), strict=True))}
    return {channel: shares[channel] for channel in CONTACT_CHANNELS}


def _draw_request_channels(
    rng: np.random.Generator, population_shares: dict[Channel, float]
) -> dict[Channel, float]:
    concentration = 10.0
    alpha = np.array(list(population_shares.values())) * concentration
    shares = rng.dirichlet(alpha).tolist()
    return dict(zip(population_shares, shares, strict=True))


def _draw_activity(rng: np.random.Generator, spec: PopulationSpec) -> dict[str, float]:
    """Expected requests per month by kind; one multiplier makes some customers busier."""
    activity = _lognormal(rng, spec.activity_spread)
    withdrawals = spec.withdrawals_per_month * activity * _lognormal(rng, 0.3)
    rates = {
        CASH_WITHDRAWAL: float(np.clip(withdrawals, 1.0, 8.0)),
        BALANCE_ENQUIRY: spec.balance_enquiries_per_month * activity,
        BILL_ENQUIRY: spec.bill_enquiries_per_month * activity,
    }
    if rng.random() < spec.top_up_share:
        rates[TOP_UP] = spec.top_ups_per_month * activity
    return rates


def _draw_habits(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar, tops_up: bool
) -> tuple[list[HabitPeriod], datetime | None]:
    """The usual ATM withdrawal (and top-up); with some chance one of them changes mid-period."""
    receipt = bool(rng.random() < spec.receipt_preference_share)
    usual: list[tuple[str, Channel, HabitValues]] = [
        (CASH_WITHDRAWAL, Channel.ATM, _withdrawal_values(rng, spec.currency, receipt)),
    ]
    if tops_up:
        amount = pick_amount(rng, TOP_UP_AMOUNTS, TOP_UP_WEIGHTS)
        usual.append((TOP_UP, Channel.MOBILE_APP, {"amount": amount, "currency": spec.currency}))
    habits = [
        HabitPeriod(
            request=request, channel=channel, values=values, start=calendar.start, end=calendar.end
        )
        for request, channel, values in usual
    ]
    if rng.random() >= spec.life_change_probability:
        return habits, None
    changing = habits.pop(int(rng.integers(len(habits))))
    middle = (calendar.days // 4, max(calendar.days // 4 + 1, 3 * calendar.days // 4))
    change_at = calendar.moments(rng, changing.channel, 1, days=middle)[0]
    new_values = changed_habit(rng, changing.request, changing.values, _LIFE_CHANGE_RECEIPT_FLIP)
    habits.append(changing.model_copy(update={"end": change_at}))
    habits.append(changing.model_copy(update={"values": new_values, "start": change_at}))
    habits.sort(key=lambda habit: (habit.request, habit.channel, habit.start))
    return habits, change_at


def _withdrawal_values(rng: np.random.Generator, currency: str, receipt: bool) -> HabitValues:
    amount = pick_amount(rng, WITHDRAWAL_AMOUNTS, WITHDRAWAL_WEIGHTS)
    return {"amount": amount, "currency": currency, "receipt": receipt}


def pick_amount(
    rng: np.random.Generator,
    amounts: tuple[int, ...],
    weights: tuple[float, ...],
    other_than: OptionValue | None = None,
) -> int:
    """An amount drawn by weight, never `other_than` (the amount it must differ from)."""
    allowed = [
        (amount, weight)
        for amount, weight in zip(amounts, weights, strict=True)
        if amount != other_than
    ]
    remaining = rng.random() * sum(weight for _, weight in allowed)
    for amount, weight in allowed:
        remaining -= weight
        if remaining < 0:
            return amount
    return allowed[-1][0]


def changed_habit(
    rng: np.random.Generator, request: str, values: HabitValues, receipt_flip: float
) -> HabitValues:
    """Values that differ from `values`: another amount, and the other receipt option by chance."""
    if request == CASH_WITHDRAWAL:
        amounts, weights = WITHDRAWAL_AMOUNTS, WITHDRAWAL_WEIGHTS
    else:
        amounts, weights = TOP_UP_AMOUNTS, TOP_UP_WEIGHTS
    changed = {**values, "amount": pick_amount(rng, amounts, weights, other_than=values["amount"])}
    if "receipt" in values and rng.random() < receipt_flip:
        changed["receipt"] = not values["receipt"]
    return changed


def _draw_statement(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar, preferred: Channel
) -> tuple[Channel | None, datetime | None]:
    """Some customers state a contact channel in their first two weeks, mostly the one they use."""
    if rng.random() >= spec.stated_preference_share:
        return None, None
    stated = preferred
    if rng.random() < spec.stated_differs_share:
        others = [channel for channel in CONTACT_CHANNELS if channel != preferred]
        stated = others[int(rng.integers(len(others)))]
    stated_at = calendar.moments(rng, Channel.WEB, 1, days=(0, min(14, calendar.days)))[0]
    return stated, stated_at


def _draw_complaints(
    rng: np.random.Generator,
    spec: PopulationSpec,
    calendar: Calendar,
    customer_id: str,
    contact_channels: dict[Channel, float],
) -> list[ComplaintCase]:
    """Complaints on a channel the customer would use; resolved some whole days later, or not."""
    count = int(rng.poisson(spec.complaints_per_month * spec.months))
    channels = list(contact_channels)
    shares = np.array(list(contact_channels.values()))
    opened: list[tuple[datetime, Channel]] = []
    for _ in range(count):
        channel = channels[int(rng.choice(len(channels), p=shares / shares.sum()))]
        opened.append((calendar.moments(rng, channel, 1)[0], channel))
    cases = []
    for number, (opened_at, channel) in enumerate(sorted(opened), start=1):
        waited = 1 + int(rng.poisson(spec.complaint_resolution_days - 1))
        resolved_at = calendar.moment_on_day(rng, channel, calendar.day_of(opened_at) + waited)
        cases.append(
            ComplaintCase(
                case_id=f"{customer_id}-case-{number}",
                topic=COMPLAINT_TOPICS[int(rng.integers(len(COMPLAINT_TOPICS)))],
                channel=channel,
                opened_at=opened_at,
                resolved_at=resolved_at if resolved_at < calendar.end else None,
            )
        )
    return cases
