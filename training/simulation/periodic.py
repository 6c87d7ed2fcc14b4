"""Habits as real customers have them: amounts that vary around a usual value, and rhythms.

Drawn by a generator of their own (stream `_PERIODIC_STREAM` of the seed), with event ids of
their own (`syn-<seed>-p<n>`), and only when `PopulationSpec.periodic_share` is above zero: every
population generated before stays the same, byte for byte.

Three kinds of request, beside the exact habits of `training.simulation.truth`:

* `bill_payment` on the web, monthly around one day of the month (paid a day or two early or
  late), amounts with cents around the bill's usual size (a few per cent either way);
* `transfer` in the app, monthly around salary day, in round tens around a usual size;
* `grocery_order` in the app, about weekly on one day of the week, with cents;
* and, for some customers, `grocery_order` without a rhythm (amounts that vary, at any time).

Some requests are off (an unusual amount), a cycle is sometimes skipped, and some customers move
their rhythm to another day once in the period. The latent truth (`PeriodicHabit`) records each
habit's true centre, period and day.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from engine.events import Channel
from training.simulation.truth import (
    DAYS_PER_MONTH,
    Calendar,
    HabitValues,
    PeriodicHabit,
    PopulationSpec,
)

BILL_PAYMENT = "bill_payment"
TRANSFER = "transfer"
GROCERY_ORDER = "grocery_order"
#: Chance a periodic request has an unusual amount (another bill, a bigger shop).
OFF_AMOUNT = 0.1
#: Chance a cycle is skipped.
SKIPPED = 0.08
#: Chance a customer moves one periodic habit to another day, once in the period.
RHYTHM_CHANGE = 0.15


def draw_periodic_habits(
    rng: np.random.Generator, spec: PopulationSpec, calendar: Calendar
) -> list[PeriodicHabit]:
    """A customer's periodic and approximate habits (none for most, with `periodic_share`)."""
    if rng.random() >= spec.periodic_share:
        return []
    start, end, currency = calendar.start, calendar.end, spec.currency
    habits: list[PeriodicHabit] = []
    if rng.random() < 0.8:
        habits.append(
            PeriodicHabit(
                request=BILL_PAYMENT,
                channel=Channel.WEB,
                currency=currency,
                centre=round(float(rng.lognormal(np.log(60.0), 0.5)), 2),
                spread=float(rng.uniform(0.01, 0.05)),
                unit=0.01,
                period="monthly",
                day=int(rng.integers(1, 29)),
                jitter_days=int(rng.integers(0, 3)),
                start=start,
                end=end,
            )
        )
    if rng.random() < 0.5:
        habits.append(
            PeriodicHabit(
                request=TRANSFER,
                channel=Channel.MOBILE_APP,
                currency=currency,
                centre=float(10 * round(rng.lognormal(np.log(300.0), 0.6) / 10)),
                spread=float(rng.uniform(0.02, 0.06)),
                unit=10.0,
                period="monthly",
                day=int(rng.choice([25, 26, 27, 28, 1])),
                jitter_days=int(rng.integers(0, 2)),
                start=start,
                end=end,
            )
        )
    if rng.random() < 0.6:
        weekly = rng.random() < 0.6
        habits.append(
            PeriodicHabit(
                request=GROCERY_ORDER,
                channel=Channel.MOBILE_APP,
                currency=currency,
                centre=round(float(rng.lognormal(np.log(45.0), 0.4)), 2),
                spread=float(rng.uniform(0.02, 0.05)),
                unit=0.01,
                period="weekly" if weekly else None,
                day=int(rng.choice([4, 5, 5, 5, 6])) if weekly else 0,
                per_month=0.0 if weekly else float(rng.uniform(2.0, 6.0)),
                start=start,
                end=end,
            )
        )
    timed = [h for h in habits if h.period is not None]
    if timed and rng.random() < RHYTHM_CHANGE:
        changing = timed[int(rng.integers(len(timed)))]
        habits.remove(changing)
        at = start + timedelta(days=int(rng.integers(calendar.days // 4, 3 * calendar.days // 4)))
        if changing.period == "monthly":
            new_day = (changing.day - 1 + int(rng.integers(5, 24))) % 28 + 1
        else:
            new_day = (changing.day + int(rng.integers(2, 6))) % 7
        habits.append(changing.model_copy(update={"end": at}))
        habits.append(changing.model_copy(update={"start": at, "day": new_day}))
    return habits


def periodic_requests(
    rng: np.random.Generator, habits: list[PeriodicHabit], calendar: Calendar
) -> list[tuple[datetime, Channel, HabitValues]]:
    """The requests each habit gives over its period: (when, channel, request values)."""
    requests = []
    for habit in habits:
        hour = int(rng.integers(7, 22))
        for day in _occurrences(rng, habit, calendar):
            at = day.replace(hour=hour) + timedelta(
                minutes=int(rng.integers(-90, 90)), seconds=int(rng.integers(0, 60))
            )
            if not habit.start <= at < habit.end or not calendar.start <= at < calendar.end:
                continue
            values: HabitValues = {
                "request": habit.request,
                "amount": _amount(rng, habit),
                "currency": habit.currency,
            }
            requests.append((at, habit.channel, values))
    return requests


def _occurrences(
    rng: np.random.Generator, habit: PeriodicHabit, calendar: Calendar
) -> list[datetime]:
    midnight = calendar.start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    if habit.period is None:
        count = int(rng.poisson(habit.per_month * calendar.days / DAYS_PER_MONTH))
        return [midnight + timedelta(days=int(d)) for d in rng.integers(0, calendar.days, count)]
    for offset in range(calendar.days + 7):
        day = midnight + timedelta(days=offset)
        if habit.period == "monthly" and day.day != min(habit.day, 28):
            continue
        if habit.period == "weekly" and day.weekday() != habit.day:
            continue
        if rng.random() < SKIPPED:
            continue
        shift = int(rng.integers(-habit.jitter_days, habit.jitter_days + 1))
        days.append(day + timedelta(days=shift))
    return days


def _amount(rng: np.random.Generator, habit: PeriodicHabit) -> str:
    if rng.random() < OFF_AMOUNT:
        raw = habit.centre * float(rng.uniform(0.3, 2.5))
    else:
        raw = habit.centre * (1.0 + float(rng.normal(0.0, habit.spread)))
    unit = habit.unit
    value = max(unit, round(raw / unit) * unit)
    return f"{value:.2f}"
