"""Facts: what eligibility conditions can see of a customer and of the asking touchpoint.

`FIELDS` is the closed registry of field names a condition may use (engine/conditions.py checks
catalogues against it). Each has a type and an accessor; `facts_for` reads them all once per
decision into a `Facts`. Also here: the open problems that service-before-sales looks at, and a
small segmentation of customers derived from the profile alone.

Segments and learned facts are profiling: without profiling consent the fold keeps no learned
data (engine/fold.py), so such a customer is `mass` with no needs segments.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType

from engine.config import EngineConfig
from engine.decision import DecisionRequest
from engine.events import CONTACT_CHANNELS, Channel, ProblemKind
from engine.habits import UsualRequest, usual_requests
from engine.profile import FeedbackRecord, Profile, split_habit_key

# ---- open problems: what service-before-sales looks at ----


ANY_PROBLEM = "any"
_DEFAULT_CONFIG = EngineConfig()


def open_problems(
    profile: Profile, at: datetime, config: EngineConfig = _DEFAULT_CONFIG
) -> frozenset[ProblemKind]:
    """The kinds of problem open for the customer at `at`.

    An incident case has its own kind (failed_payment, outage). A complaint whose topic is
    `failed_payment`, `outage` or ends in `_outage` (e.g. `app_outage`) counts as that kind.
    """
    kinds = {_case_kind(case.kind, case.topic) for case in profile.open_cases()}
    latest = latest_feedback(profile, at)
    if (
        latest is not None
        and latest.score <= config.low_feedback_max_score
        and at - latest.at <= timedelta(days=config.low_feedback_days)
    ):
        kinds.add(ProblemKind.LOW_FEEDBACK)
    return frozenset(kinds)


def latest_feedback(profile: Profile, at: datetime) -> FeedbackRecord | None:
    """The customer's latest feedback score given at or before `at`."""
    return max(
        (record for record in profile.feedback if record.at <= at),
        key=lambda record: (record.at, record.event_id),
        default=None,
    )


def _case_kind(kind: str, topic: str | None) -> ProblemKind:
    if kind != ProblemKind.COMPLAINT.value:
        return ProblemKind(kind)
    if topic == "failed_payment":
        return ProblemKind.FAILED_PAYMENT
    if topic is not None and (topic == "outage" or topic.endswith("_outage")):
        return ProblemKind.OUTAGE
    return ProblemKind.COMPLAINT


# ---- segments derived from the profile (a proxy: the profile holds no balances) ----


class ValueSegment(StrEnum):
    MASS = "mass"
    AFFLUENT = "affluent"
    PREMIUM = "premium"


class NeedsSegment(StrEnum):
    CASH_USER = "cash_user"
    DIGITAL = "digital"
    ASSISTED = "assisted"
    TRAVELLER = "traveller"


HOME_CURRENCY = "EUR"
#: Average recent cash withdrawal (EUR) from which a customer is affluent, and premium.
AFFLUENT_WITHDRAWAL_EUR = 150.0
PREMIUM_WITHDRAWAL_EUR = 300.0
#: Recent cash withdrawals that make a cash user.
CASH_USER_MIN_WITHDRAWALS = 3
#: Share of decayed channel use that makes a digital (web, app) or assisted (branch, phone) user.
CHANNEL_SHARE_MIN = 0.5
#: Decayed use from which a customer uses a channel: about one use within a half-life.
USES_CHANNEL_MIN = 0.5
_DIGITAL = (Channel.WEB.value, Channel.MOBILE_APP.value)
_ASSISTED = (Channel.BRANCH.value, Channel.CALL_CENTER.value)


def withdrawals_eur(profile: Profile) -> list[float]:
    """Amounts (EUR) of the recent cash withdrawals the profile keeps, at any channel."""
    return [
        float(record.amount)
        for key, records in sorted(profile.habits.items())
        if split_habit_key(key)[0] == "cash_withdrawal"
        for record in records
        if record.amount is not None and record.currency == HOME_CURRENCY
    ]


def value_segment(profile: Profile) -> ValueSegment:
    """premium from a median recent withdrawal of 300 EUR, affluent from 150, else mass.

    The median, so that a few large branch withdrawals do not make a customer premium.
    """
    return _segment_of(withdrawals_eur(profile))


def _segment_of(amounts: list[float]) -> ValueSegment:
    typical = statistics.median(amounts) if amounts else 0.0
    if typical >= PREMIUM_WITHDRAWAL_EUR:
        return ValueSegment.PREMIUM
    return ValueSegment.AFFLUENT if typical >= AFFLUENT_WITHDRAWAL_EUR else ValueSegment.MASS


def needs_segments(profile: Profile, at: datetime, config: EngineConfig) -> frozenset[str]:
    """cash_user: 3+ recent withdrawals; digital / assisted: half of the decayed channel use on
    web and app / branch and phone; traveller: a recent request in a foreign currency."""
    return _needs_of(profile, channel_usage(profile, at, config), withdrawals_eur(profile))


def _needs_of(
    profile: Profile, usage: Mapping[str, float], withdrawals: list[float]
) -> frozenset[str]:
    total = sum(usage.values())
    needs = set()
    if len(withdrawals) >= CASH_USER_MIN_WITHDRAWALS:
        needs.add(NeedsSegment.CASH_USER)
    for segment, channels in ((NeedsSegment.DIGITAL, _DIGITAL), (NeedsSegment.ASSISTED, _ASSISTED)):
        if total > 0 and sum(usage.get(ch, 0.0) for ch in channels) / total >= CHANNEL_SHARE_MIN:
            needs.add(segment)
    if any(
        record.currency not in (None, HOME_CURRENCY)
        for records in profile.habits.values()
        for record in records
    ):
        needs.add(NeedsSegment.TRAVELLER)
    return frozenset(needs)


def channel_usage(profile: Profile, at: datetime, config: EngineConfig) -> dict[str, float]:
    half_life = config.channel_half_life_days
    return {ch: count.value_at(at, half_life) for ch, count in profile.channel_usage.items()}


# ---- facts: every registered field's value, computed once per decision ----

FactValue = int | float | str | bool | frozenset[str] | None


class FactType(StrEnum):
    NUMBER = "number"
    TEXT = "text"
    FLAG = "flag"
    TEXT_SET = "text_set"


class FactSources:
    """What the field accessors read: the profile (empty if unknown), the request, the time."""

    def __init__(
        self, profile: Profile | None, request: DecisionRequest, at: datetime, config: EngineConfig
    ) -> None:
        self.known = profile is not None
        self.profile = profile or Profile(customer_id=request.customer_id)
        self.request, self.at, self.config = request, at, config

    @cached_property
    def usage(self) -> dict[str, float]:
        return channel_usage(self.profile, self.at, self.config)

    @cached_property
    def withdrawals(self) -> list[float]:
        return withdrawals_eur(self.profile)

    def days_since(self, when: datetime | None) -> float | None:
        return None if when is None else max(0.0, (self.at - when).total_seconds() / 86_400)

    def stated(self, key: str) -> FactValue:
        statement = self.profile.stated.get(key)
        return None if statement is None else _fact_or_none(statement.value)

    def context_text(self, key: str) -> str | None:
        value = self.request.context.get(key)
        return value if isinstance(value, str) else None

    def context_set(self, key: str) -> frozenset[str] | None:
        value = self.request.context.get(key)
        return (
            frozenset(v for v in value if isinstance(v, str)) if isinstance(value, list) else None
        )

    def market(self, key: str) -> float | None:
        market = self.request.context.get("market")
        value = market.get(key) if isinstance(market, dict) else None
        return _number_or_none(value)


def _fact_or_none(value: object) -> FactValue:
    return value if isinstance(value, str | bool) else _number_or_none(value)


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A registered field: its type, how to read it and, for text, the values it can take."""

    type: FactType
    read: Callable[[FactSources], FactValue]
    doc: str
    vocabulary: frozenset[str] | None = None


_CHANNELS = frozenset(c.value for c in Channel)
#: Products a touchpoint may list in `context.products` (what its core system says is held).
PRODUCTS = frozenset(
    {
        "current_account",
        "savings_account",
        "debit_card",
        "credit_card",
        "premium_credit_card",
        "mortgage",
        "personal_loan",
        "travel_insurance",
        "home_insurance",
        "investment_account",
    }
)
_STATED_VOCABULARY: Mapping[str, frozenset[str]] = {
    "contact_channel": frozenset(c.value for c in CONTACT_CHANNELS),
    "language": frozenset({"en", "it"}),
    "statements": frozenset({"paper", "paperless"}),
    "contact_time": frozenset({"morning", "afternoon", "evening"}),
}


def _usage_of(channel: str) -> Callable[[FactSources], FactValue]:
    return lambda sources: sources.usage.get(channel, 0.0)


def _stated_of(key: str) -> Callable[[FactSources], FactValue]:
    return lambda sources: sources.stated(key)


def _values(enum: type[StrEnum]) -> frozenset[str]:
    return frozenset(member.value for member in enum)


def _average(amounts: list[float]) -> float | None:
    return sum(amounts) / len(amounts) if amounts else None


def _latest_score(sources: FactSources) -> int | None:
    latest = latest_feedback(sources.profile, sources.at)
    return None if latest is None else latest.score


_NUMBER, _TEXT, _FLAG, _TEXT_SET = FactType.NUMBER, FactType.TEXT, FactType.FLAG, FactType.TEXT_SET
_NAMED_FIELDS: dict[str, FieldSpec] = {
    "profile.known": FieldSpec(_FLAG, lambda s: s.known, "Rapport has a profile"),
    "profile.event_count": FieldSpec(_NUMBER, lambda s: s.profile.event_count, "events"),
    "profile.days_since_first_seen": FieldSpec(
        _NUMBER, lambda s: s.days_since(s.profile.first_seen), "days, fractional"
    ),
    "profile.days_since_last_seen": FieldSpec(
        _NUMBER, lambda s: s.days_since(s.profile.last_seen), "days, fractional"
    ),
    "profile.uses_channel": FieldSpec(
        _TEXT_SET,
        lambda s: frozenset(ch for ch, n in s.usage.items() if n >= USES_CHANNEL_MIN),
        f"channels with a decayed use of at least {USES_CHANNEL_MIN}",
        _CHANNELS,
    ),
    "profile.request_kinds": FieldSpec(
        _TEXT_SET, lambda s: frozenset(s.profile.request_channels), "request kinds made"
    ),
    "profile.avg_withdrawal_eur": FieldSpec(
        _NUMBER,
        lambda s: _average(s.withdrawals),
        "EUR, recent cash withdrawals",
    ),
    "profile.value_segment": FieldSpec(
        _TEXT,
        lambda s: _segment_of(s.withdrawals).value,
        "see value_segment",
        _values(ValueSegment),
    ),
    "profile.needs_segments": FieldSpec(
        _TEXT_SET,
        lambda s: _needs_of(s.profile, s.usage, s.withdrawals),
        "see needs_segments",
        _values(NeedsSegment),
    ),
    "profile.open_case_count": FieldSpec(
        _NUMBER, lambda s: len(s.profile.open_cases()), "open cases"
    ),
    "profile.latest_feedback_score": FieldSpec(_NUMBER, _latest_score, "0 to 10"),
    "profile.stated.receipt": FieldSpec(_FLAG, _stated_of("receipt"), "stated"),
    "context.channel": FieldSpec(
        _TEXT, lambda s: s.request.channel.value, "the asking touchpoint's kind", _CHANNELS
    ),
    "context.touchpoint": FieldSpec(_TEXT, lambda s: s.request.touchpoint, "touchpoint id"),
    "context.request": FieldSpec(_TEXT, lambda s: s.context_text("request"), "request kind"),
    "context.hour": FieldSpec(_NUMBER, lambda s: s.at.hour, "0-23, in the time zone of `at`"),
    "context.weekday": FieldSpec(_NUMBER, lambda s: s.at.isoweekday(), "1 Monday - 7 Sunday"),
    "context.products": FieldSpec(
        _TEXT_SET, lambda s: s.context_set("products"), "products held", PRODUCTS
    ),
    "context.market.mortgage_rate_drop_bp": FieldSpec(
        _NUMBER,
        lambda s: s.market("mortgage_rate_drop_bp"),
        "basis points the mortgage rate fell",
    ),
}


def _fields() -> dict[str, FieldSpec]:
    fields = dict(_NAMED_FIELDS)
    for channel in sorted(_CHANNELS):
        fields[f"profile.channel_usage.{channel}"] = FieldSpec(
            _NUMBER, _usage_of(channel), "decayed count of uses"
        )
    for key, vocabulary in _STATED_VOCABULARY.items():
        fields[f"profile.stated.{key}"] = FieldSpec(_TEXT, _stated_of(key), "as stated", vocabulary)
    return dict(sorted(fields.items()))


#: The closed registry of fields a condition may name.
FIELDS: Mapping[str, FieldSpec] = MappingProxyType(_fields())


@dataclass(frozen=True)
class Facts:
    """What conditions are evaluated against: field values by name, open problems, habits."""

    values: Mapping[str, FactValue]
    open_problems: frozenset[str] = frozenset()
    habits: frozenset[str] = frozenset()
    due_habits: frozenset[str] = frozenset()


def facts_for(
    profile: Profile | None,
    request: DecisionRequest,
    *,
    at: datetime,
    config: EngineConfig,
    habits: Sequence[UsualRequest] | None = None,
) -> Facts:
    """Every registered field's value for this customer and request at `at`. Pure.

    `habits`: the customer's `usual_requests` if the caller has them already. A field's value
    is computed when first read (most conditions name a few fields), then kept."""
    sources = FactSources(profile, request, at, config)
    if habits is None:
        habits = usual_requests(sources.profile, config)
    return Facts(
        values=_FieldValues(sources),
        open_problems=frozenset(open_problems(sources.profile, at, config)),
        habits=frozenset(habit.request for habit in habits),
        due_habits=frozenset(habit.request for habit in habits if habit.timed and habit.due),
    )


class _FieldValues(Mapping[str, FactValue]):
    """The registered fields' values, each computed on first read."""

    __slots__ = ("_read", "_sources")

    def __init__(self, sources: FactSources) -> None:
        self._sources = sources
        self._read: dict[str, FactValue] = {}

    def __getitem__(self, name: str) -> FactValue:
        read = self._read
        if name in read:
            return read[name]
        value = read[name] = FIELDS[name].read(self._sources)
        return value

    def get(self, name: str, default: FactValue = None) -> FactValue:  # type: ignore[override]
        read = self._read
        if name in read:
            return read[name]
        spec = FIELDS.get(name)
        if spec is None:
            return default
        value = read[name] = spec.read(self._sources)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(FIELDS)

    def __len__(self) -> int:
        return len(FIELDS)
