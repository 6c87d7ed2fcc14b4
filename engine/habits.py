"""Usual requests: a repeated request becomes a default once it is clearly the customer's habit.

For each request kind at a kind of touchpoint (e.g. cash_withdrawal at ATMs), the most frequent
values among the recent requests form a habit when both their count and their share pass the
thresholds of `EngineConfig`. A habit the customer declined `default_max_declines` times since
they last accepted it is not offered; another habit can still form later.

Exact repeats come first and behave as they always did. When no exact values pass, amounts that
lie within a tolerance of each other (relative, with an absolute floor per currency) form an
*approximate* habit, provided every other value (currency, receipt, options) matches exactly: the
default offers the cluster's median, rounded the way the customer rounds their own amounts.

A habit may also have a rhythm (`Rhythm`): the same day of the month or of the week, within a
tolerance. Given the time of the decision, a rhythmic habit is due or not yet due.

Everything here reads at most `habit_window` records per habit key: the cost per decision is
bounded, and the tolerant pass runs only where the exact one found nothing.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.config import EngineConfig
from engine.decision import assemble
from engine.profile import Profile, RequestRecord, split_habit_key

HabitKind = Literal["exact", "approximate"]
#: Rounding units a customer's amounts may share, largest first, in cents.
_ROUNDING_CENTS = tuple(100 * u for u in (1000, 500, 100, 50, 10, 5, 1))
_MONTH_DAYS = 31


class Rhythm(BaseModel):
    """When a habit recurs: around one day of the month or on one day of the week."""

    period: Literal["monthly", "weekly"]
    day: int = Field(description="Day of the month (1-31) or of the week (0 = Monday).")
    tolerance_days: int
    hour: int | None = Field(None, description="Usual hour of the day, when it is regular.")


class UsualRequest(BaseModel):
    """A detected habit, with the evidence behind it."""

    request: str
    channel: str
    values: dict[str, Any]
    signature: str
    matches: int = Field(description="Recent requests with these values (within tolerance).")
    window: int = Field(description="Recent requests considered.")
    confidence: float = Field(ge=0, le=1, description="Laplace-smoothed share of matches.")
    accepted: int = Field(0, description="Times this default was accepted.")
    declines: int = Field(0, description="Declines since it was last accepted.")
    suppressed: bool = Field(False, description="Declined too often: not offered.")
    kind: HabitKind = Field("exact", description="exact repeats, or amounts within tolerance.")
    formed: bool = Field(True, description="False: the best candidate, below count or share.")
    below: Literal["count", "share"] | None = Field(None, description="Why it did not form.")
    rhythm: Rhythm | None = None
    due: bool | None = Field(None, description="With a rhythm and a time: the moment fits.")
    last_at: datetime | None = Field(None, description="The latest matching request.")

    @property
    def timed(self) -> bool:
        """The rhythm decides when it is offered and is said in the reason. Exact repeats keep
        the behaviour and wording they always had: their rhythm only ranks them."""
        return self.rhythm is not None and self.kind == "approximate"


def usual_requests(
    profile: Profile,
    config: EngineConfig,
    *,
    channel: str | None = None,
    request: str | None = None,
    include_suppressed: bool = False,
    include_unformed: bool = False,
    at: datetime | None = None,
    timed_channel: str | None = None,
    exact_rhythms: bool = True,
) -> list[UsualRequest]:
    """The customer's habits, optionally only at one kind of touchpoint or for one request kind.

    Sorted by request kind then channel. Suppressed habits are left out unless asked for, and so
    are the best candidates that did not form (`include_unformed`). With `at`, a habit with a
    rhythm says whether it is due then.
    """
    habits = []
    for key, records in sorted(profile.habits.items()):
        habit_request, habit_channel = split_habit_key(key)
        if channel is not None and habit_channel != channel:
            continue
        if request is not None and habit_request != request:
            continue
        timed = at is not None and timed_channel in (None, habit_channel)
        habit = _detect(
            profile, key, records, config, at if timed else None, include_unformed, exact_rhythms
        )
        if habit is None:
            continue
        if not habit.formed and not include_unformed:
            continue
        if include_suppressed or not habit.suppressed:
            habits.append(habit)
    return habits


def _detect(
    profile: Profile,
    key: str,
    records: list[RequestRecord],
    config: EngineConfig,
    at: datetime | None,
    include_unformed: bool,
    exact_rhythms: bool = True,
) -> UsualRequest | None:
    if not records:
        return None
    # Records by their values, in order of first use; records are oldest first, so each list
    # ends with the latest one. Grouped by a tuple of the values, which groups exactly as the
    # signature does at a fraction of its cost: only the winner's signature is written.
    signatures: dict[tuple[Any, ...], list[RequestRecord]] = {}
    for record in records:
        signed = _values_key(record)
        same = signatures.get(signed)
        if same is None:
            signatures[signed] = [record]
        else:
            same.append(record)
    # Most frequent values; on a tie the most recently used ones.
    best = max(signatures, key=lambda sig: (len(signatures[sig]), signatures[sig][-1].at))
    cluster = signatures[best]
    matches, window = len(cluster), len(records)
    values = cluster[-1].values()
    if not values:
        return None  # nothing to pre-fill
    signature = cluster[-1].signature()
    kind: HabitKind = "exact"
    if _below(matches, window, config) is not None and _may_cluster(len(signatures), config):
        approximate = _tolerant_cluster(records, config)
        if approximate is not None and len(approximate[0]) > matches:
            cluster, cents = approximate
            kind, matches = "approximate", len(cluster)
            values = dict(cluster[-1].values())
            values["amount"] = _representative(cents)
            signature = _signature(values)
    below = _below(matches, window, config)
    if below is not None and not include_unformed:
        return None
    feedback = profile.default_feedback.get(key, {}).get(signature)
    declines = feedback.declines_since_acceptance() if feedback else 0
    request, channel = split_habit_key(key)
    timed = config.habit_rhythm and below is None and at is not None
    timed = timed and (exact_rhythms or kind == "approximate")
    rhythm = _rhythm(cluster, config) if timed else None
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
        kind=kind,
        formed=below is None,
        below=below,
        rhythm=rhythm,
        due=_due(rhythm, cluster[-1].at, at) if rhythm is not None and at is not None else None,
        last_at=cluster[-1].at,
    )


def _values_key(record: RequestRecord) -> tuple[Any, ...]:
    """Equal for two records exactly when their signatures are equal."""
    amount = record.amount
    if record.options:  # typed, so that 1 and True stay apart as their signatures keep them
        options = tuple((k, type(v), v) for k, v in sorted(record.options.items()))
    else:
        options = ()
    return (amount, record.currency if amount is not None else None, record.receipt, options)


def _may_cluster(distinct: int, config: EngineConfig) -> bool:
    """Whether amounts within tolerance could form a habit where exact values did not."""
    return distinct > 1 and (config.habit_amount_tolerance > 0 or config.habit_amount_floor > 0)


def _below(matches: int, window: int, config: EngineConfig) -> Literal["count", "share"] | None:
    if matches < config.habit_min_count:
        return "count"
    if matches / window < config.habit_min_share:
        return "share"
    return None


def _signature(values: dict[str, Any]) -> str:
    return ";".join([f"{key}={values[key]!r}" for key in sorted(values)])


def _tolerant_cluster(
    records: list[RequestRecord], config: EngineConfig
) -> tuple[list[RequestRecord], list[int]] | None:
    """The largest set of records whose amounts lie within tolerance of each other and whose
    other values match exactly, on a tie the one with the latest request: its records oldest
    first, and their amounts in whole cents (amounts have at most two decimals)."""
    groups: dict[tuple[Any, ...], list[tuple[int, RequestRecord]]] = {}
    for record in records:
        amount = record.amount
        if amount is not None:
            rest = (record.currency, record.receipt, *sorted(record.options.items()))
            groups.setdefault(rest, []).append((round(float(amount) * 100), record))
    best: list[tuple[int, RequestRecord]] = []
    best_rank: tuple[int, datetime] | None = None
    relative, min_count = config.habit_amount_tolerance, config.habit_min_count
    for group in groups.values():
        if len(group) < min_count:
            continue
        floor = 100 * config.amount_floor(group[0][1].currency)
        group.sort(key=_by_amount)
        end, last = 0, len(group) - 1
        for start, (low, _) in enumerate(group):
            limit = low + max(relative * low, floor) + 1e-6
            end = max(end, start)
            while end < last and group[end + 1][0] <= limit:
                end += 1
            size = end + 1 - start
            if size < min_count or (best_rank is not None and size < best_rank[0]):
                continue
            members = group[start : end + 1]
            rank = (size, max(record.at for _, record in members))
            if best_rank is None or rank > best_rank:
                best_rank, best = rank, members
    if not best:
        return None
    return sorted((record for _, record in best), key=_by_time), [c for c, _ in best]


def _by_amount(pair: tuple[int, RequestRecord]) -> tuple[int, datetime, str]:
    return pair[0], pair[1].at, pair[1].event_id


def _by_time(record: RequestRecord) -> tuple[datetime, str]:
    return record.at, record.event_id


def _representative(cents: list[int]) -> int:
    """The cluster's median, rounded half up to the largest unit all its amounts (in whole
    cents) are multiples of: round tens stay round tens; amounts with cents give a whole
    number."""
    cents = sorted(cents)
    middle = len(cents) // 2
    twice_median = 2 * cents[middle] if len(cents) % 2 else cents[middle - 1] + cents[middle]
    unit = next((u for u in _ROUNDING_CENTS if all(c % u == 0 for c in cents)), 100)
    units, rest = divmod(twice_median, 2 * unit)
    if rest >= unit:  # half up: rest / (2 * unit) >= 1/2
        units += 1
    return units * unit // 100


def _rhythm(cluster: list[RequestRecord], config: EngineConfig) -> Rhythm | None:
    """A monthly or weekly rhythm, if (nearly) every matching request kept to it."""
    if len(cluster) < config.rhythm_min_count:
        return None
    times = [r.at for r in cluster]
    gaps = sorted((b - a).total_seconds() / 86_400 for a, b in itertools.pairwise(times))
    gap = gaps[len(gaps) // 2]
    needed = len(times) - len(times) // 5  # one in five may be off the rhythm
    tolerance = config.rhythm_tolerance_days
    if 20 <= gap <= 40:
        day = _circular_centre([t.day for t in times], _MONTH_DAYS, tolerance, needed)
        if day is not None:
            return _make_rhythm("monthly", day, tolerance, times)
    if 5 <= gap <= 9:
        day = _circular_centre([t.weekday() for t in times], 7, 0, needed)
        if day is not None:
            return _make_rhythm("weekly", day, 0, times)
    return None


def _make_rhythm(
    period: Literal["monthly", "weekly"], day: int, tolerance: int, times: list[datetime]
) -> Rhythm:
    return assemble(Rhythm, period=period, day=day, tolerance_days=tolerance, hour=_hour(times))


def _circular_centre(days: list[int], cycle: int, tolerance: int, needed: int) -> int | None:
    """The day (of a cycle) within `tolerance` of at least `needed` of `days`, or None."""
    best: tuple[int, int, int] | None = None
    for centre in sorted(set(days)):
        near = [d for d in days if _circular_distance(d, centre, cycle) <= tolerance]
        spread = sum(_circular_distance(d, centre, cycle) for d in near)
        rank = (len(near), -spread, -centre)
        if best is None or rank > best:
            best = rank
    if best is None or best[0] < needed:
        return None
    return -best[2]


def _circular_distance(a: int, b: int, cycle: int) -> int:
    distance = abs(a - b) % cycle
    return min(distance, cycle - distance)


def _hour(times: list[datetime]) -> int | None:
    hours = sorted(t.hour for t in times)
    median = hours[len(hours) // 2]
    near = sum(1 for h in hours if _circular_distance(h, median, 24) <= 1)
    return median if near >= len(hours) - len(hours) // 5 else None


def _due(rhythm: Rhythm, last: datetime, at: datetime) -> bool:
    """The moment fits: `at` falls in the rhythm's window and the habit was not met in it."""
    if rhythm.period == "monthly":
        fits = _circular_distance(at.day, rhythm.day, _MONTH_DAYS) <= rhythm.tolerance_days
        return fits and at - last > timedelta(days=2 * rhythm.tolerance_days + 1)
    return at.weekday() == rhythm.day and at - last > timedelta(days=1)


def ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"
