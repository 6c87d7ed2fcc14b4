"""A batch of events logged and folded in one transaction, with a few queries for the whole batch.

`prepare` does, outside the write lock, what needs no database: grouping by customer, each
event's JSON body and time. `apply_batch` runs inside the writer's transaction: one query each
for the customers' state (merged, erased), the ids already logged and the touched profiles;
then the fold, in memory; then one `executemany` each for profiles, events and the population
counters. A fold that raises leaves nothing of the batch written (the writer rolls the
write's savepoint back).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.events import Event
from engine.fold import fold_in_place
from feature_store.base import APPEND_STATUS, AppendStatus
from feature_store.sqlite import rows

# (customer_id, event_id) pairs joined on the log's unique index.
_LOGGED_PAIRS = (
    "WITH j (customer_id, event_id) AS ({table}) SELECT e.customer_id, e.event_id FROM j "
    "JOIN events AS e ON e.customer_id = j.customer_id AND e.event_id = j.event_id"
)
_INSERT_EVENT = (
    "INSERT INTO events (customer_id, event_id, occurred_at_us, status, body) "
    "VALUES (?, ?, ?, ?, ?)"
)


@dataclass(slots=True)
class PreparedBatch:
    """A batch grouped by customer, in order of first appearance, with positions in the input."""

    size: int
    by_customer: dict[str, list[int]]
    events: list[Event]
    bodies: list[str]
    at_us: list[int]


def prepare(events: Sequence[Event]) -> PreparedBatch:
    by_customer: dict[str, list[int]] = {}
    for position, event in enumerate(events):
        by_customer.setdefault(event.customer_id, []).append(position)
    return PreparedBatch(
        size=len(events),
        by_customer=by_customer,
        events=list(events),
        bodies=[event.model_dump_json() for event in events],
        at_us=[rows.microseconds(event.occurred_at) for event in events],
    )


def apply_batch(
    db: sqlite3.Connection, batch: PreparedBatch, config: EngineConfig
) -> list[AppendStatus]:
    """Log and fold `batch` inside the caller's write transaction (see `OnlineStore.apply_events`
    for the statuses)."""
    statuses = [AppendStatus.DUPLICATE] * batch.size
    states = rows.customer_states(db, list(batch.by_customer))
    # Per surviving customer, the positions to fold, in the order the customers came.
    targets: dict[str, list[int]] = {}
    for customer, positions in batch.by_customer.items():
        survivor, erased = states[customer]
        if erased:
            for position in positions:
                statuses[position] = AppendStatus.ERASED
            continue
        if survivor != customer:  # merged into another customer: theirs now
            for position in positions:
                moved = batch.events[position].model_copy(update={"customer_id": survivor})
                batch.events[position] = moved
                batch.bodies[position] = moved.model_dump_json()
        targets.setdefault(survivor, []).extend(positions)
    if not targets:
        return statuses
    known = _logged(db, batch, targets)
    # A repeated id inside the batch is folded once: the fold's own check keys on
    # (occurred_at, id) and would apply a resent event whose time differs.
    fresh: dict[str, list[int]] = {}
    for customer, positions in targets.items():
        seen = known.get(customer, set())
        for position in positions:
            event_id = batch.events[position].event_id
            if event_id not in seen:
                seen.add(event_id)
                fresh.setdefault(customer, []).append(position)
    if not fresh:
        return statuses
    profiles = rows.read_profiles(db, list(fresh))
    changed, applied, logged = [], [], []
    for customer, positions in fresh.items():
        # Just decoded, so folded in place; every id was checked against the log above, so
        # even events older than the profile's ring are new.
        profile, fold_statuses = fold_in_place(
            profiles.get(customer),
            customer,
            [batch.events[p] for p in positions],
            config,
            known_new=True,
        )
        folded = False
        for position, fold_status in zip(positions, fold_statuses, strict=True):
            status = statuses[position] = APPEND_STATUS[fold_status]
            if status is AppendStatus.ACCEPTED:
                applied.append(batch.events[position])
                folded = True
            if status is not AppendStatus.DUPLICATE:  # TOO_LATE is logged, not folded
                logged.append((customer, position))
        if folded:
            changed.append(profile)
    rows.write_profiles(db, changed)  # before the events, which reference them
    db.executemany(
        _INSERT_EVENT,
        [
            (
                customer,
                batch.events[p].event_id,
                batch.at_us[p],
                statuses[p].value,
                batch.bodies[p],
            )
            for customer, p in logged
        ],
    )
    rows.count_population(db, applied)
    return statuses


def _logged(
    db: sqlite3.Connection, batch: PreparedBatch, targets: dict[str, list[int]]
) -> dict[str, set[str]]:
    pairs = [
        (customer, batch.events[p].event_id)
        for customer, positions in targets.items()
        for p in positions
    ]
    known: dict[str, set[str]] = {}
    table, parameters = rows.pairs_table(pairs)
    for customer, event_id in db.execute(_LOGGED_PAIRS.format(table=table), parameters):
        known.setdefault(customer, set()).add(event_id)
    return known
