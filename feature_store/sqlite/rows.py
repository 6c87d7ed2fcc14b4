"""Row-level operations of the SQLite store, run on its connection inside its transactions:
profiles, identity links, merges, erasure and reading the logs in order.

Tables of identity, privacy and log order (created by feature_store/sqlite/store.py with the rest):

* `identities`: (type, digest) -> customer_id, with the masked form and link time;
* `aliases`: a customer merged into another -> the survivor;
* `erasures`: digests of erased customer ids (`engine.identity.customer_digest`);
* `decision_order`: the decision log's cursor, `seq` (AUTOINCREMENT, never reused) ->
  decision_id. A table of its own because `decisions` is keyed by decision_id (WITHOUT ROWID);
  schema version 3 added it and numbers the decisions already logged by time.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from engine.channel_preference import population_dimensions
from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.identity import HashedIdentity, LinkedIdentity, customer_digest
from engine.merge import merge
from engine.profile import Profile
from feature_store import profile_codec
from feature_store.base import CustomerExport, IdentityLink, LogPage, LogRecord, LogTable
from feature_store.errors import CustomerErased

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS identities (
        type TEXT NOT NULL,
        digest TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        masked TEXT NOT NULL,
        linked_at TEXT NOT NULL,
        PRIMARY KEY (type, digest)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS identities_by_customer ON identities (customer_id)",
    """CREATE TABLE IF NOT EXISTS aliases (
        alias TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS aliases_by_customer ON aliases (customer_id)",
    """CREATE TABLE IF NOT EXISTS erasures (
        customer_digest TEXT PRIMARY KEY,
        erased_at TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS decision_order (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        decision_id TEXT NOT NULL UNIQUE
    )""",
    # Version 3 migration, idempotent: decisions logged before it get a seq in time order.
    "INSERT OR IGNORE INTO decision_order (decision_id) "
    "SELECT decision_id FROM decisions ORDER BY decided_at, decision_id",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)

_LOG_PAGES = {
    "events": "SELECT seq, customer_id, occurred_at_us, body, status FROM events "
    "WHERE seq > ? ORDER BY seq LIMIT ?",
    "decisions": "SELECT o.seq, d.customer_id, d.decided_at, d.body, NULL "
    "FROM decision_order AS o JOIN decisions AS d ON d.decision_id = o.decision_id "
    "WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
}
_LOG_HIGH_WATER = {
    "events": "SELECT max(seq) FROM events",
    "decisions": "SELECT max(seq) FROM decision_order",
}


def log_decision(db: sqlite3.Connection, decision: Decision) -> bool:
    """Within the caller's write transaction: append to the decision log; False if the id
    is already logged (nothing written). A decision for a merged id is filed under its
    survivor, so reading and erasing the survivor's log finds it."""
    return _insert_decision(db, decision, canonical(db, decision.customer_id))


def log_decisions(db: sqlite3.Connection, decisions: Sequence[Decision]) -> int:
    """Within the caller's write transaction: append `decisions` to the log, except those
    already logged and those of erased customers (an erasure committed while they waited);
    return how many were appended."""
    states = customer_states(db, sorted({d.customer_id for d in decisions}))
    appended = 0
    for decision in decisions:
        survivor, erased = states[decision.customer_id]
        if not erased:
            appended += _insert_decision(db, decision, survivor)
    return appended


def decision_logged(db: sqlite3.Connection, decision_id: str) -> bool:
    query = "SELECT 1 FROM decisions WHERE decision_id = ?"
    return db.execute(query, (decision_id,)).fetchone() is not None


def _insert_decision(db: sqlite3.Connection, decision: Decision, customer_id: str) -> bool:
    inserted = db.execute(
        "INSERT INTO decisions (decision_id, customer_id, decided_at, body) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (decision_id) DO NOTHING",
        (
            decision.decision_id,
            customer_id,
            decision.decided_at.isoformat(),
            decision.model_dump_json(),
        ),
    ).rowcount
    if inserted:
        db.execute("INSERT INTO decision_order (decision_id) VALUES (?)", (decision.decision_id,))
    return inserted > 0


def read_log(db: sqlite3.Connection, table: LogTable, after: int, limit: int) -> LogPage:
    """See `OnlineStore.read_log`. One read transaction, so the page and its high water mark
    come from the same snapshot. Writers commit in `seq` order (one write lock), so a later
    commit never adds an entry below a `seq` already read.

    Decisions commit without an fsync (the writer's groups of decisions, see
    feature_store/sqlite/decisions.py): a power loss could take
    back a decision already read, and AUTOINCREMENT would then give its `seq` to a new one,
    which a reader past that `seq` would never see. So what is committed is made durable first:
    a checkpoint syncs the write-ahead log (this connection runs with synchronous=FULL).
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    db.execute("BEGIN")
    try:
        found = db.execute(_LOG_PAGES[table], (after, limit)).fetchall()
        (high_water,) = db.execute(_LOG_HIGH_WATER[table]).fetchone()
    finally:
        db.execute("COMMIT")
    records = [
        LogRecord(
            seq=seq,
            customer_id=customer_id,
            at_us=at if isinstance(at, int) else microseconds(datetime.fromisoformat(at)),
            body=body,
            status=status,
        )
        for seq, customer_id, at, body, status in found
    ]
    return LogPage(
        records=records,
        next_after=records[-1].seq if records else after,
        high_water=high_water or 0,
    )


def erased_digests(db: sqlite3.Connection) -> set[str]:
    return {str(digest) for (digest,) in db.execute("SELECT customer_digest FROM erasures")}


def microseconds(when: datetime) -> int:
    """Microseconds since the Unix epoch, exact (no float rounding)."""
    return (when - _EPOCH) // _ONE_MICROSECOND


def count_population(db: sqlite3.Connection, applied: list[Event]) -> None:
    population = Counter(
        dimension for event in applied for dimension in population_dimensions(event)
    )
    db.executemany(
        "INSERT INTO population_counts (dimension, channel, count) VALUES (?, ?, ?) "
        "ON CONFLICT (dimension, channel) DO UPDATE SET count = count + excluded.count",
        [(dimension, channel, n) for (dimension, channel), n in population.items()],
    )


# Up to this many values are bound one by one (statements of these few shapes stay compiled in
# the connection's cache); more go in one JSON parameter, unpacked by json_each.
_FEW = 8


def pairs_table(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """SQL for a two-column table of `pairs` (use as `WITH j(a, b) AS (<sql>)`), and its
    parameters."""
    if len(pairs) <= _FEW:
        return "VALUES " + ", ".join(["(?, ?)"] * len(pairs)), [v for pair in pairs for v in pair]
    return "SELECT value ->> 0, value ->> 1 FROM json_each(?)", [json.dumps(pairs)]


def value_list(values: Sequence[str]) -> tuple[str, list[str]]:
    """SQL for `IN <sql>` over `values`, and its parameters."""
    if len(values) <= _FEW:
        return "(" + ", ".join(["?"] * len(values)) + ")", list(values)
    return "(SELECT value FROM json_each(?))", [json.dumps(values)]


def customer_states(db: sqlite3.Connection, customer_ids: list[str]) -> dict[str, tuple[str, bool]]:
    """For each of `customer_ids`: (its surviving id, whether it was erased), in one query.

    An erasure records the digest of every id it erased, merged ones included, so an id's own
    digest tells whether it was erased."""
    table, parameters = pairs_table([(c, customer_digest(c)) for c in customer_ids])
    found = db.execute(
        f"WITH j (customer_id, digest) AS ({table}) "
        "SELECT j.customer_id, a.customer_id, e.customer_digest IS NOT NULL FROM j "
        "LEFT JOIN aliases AS a ON a.alias = j.customer_id "
        "LEFT JOIN erasures AS e ON e.customer_digest = j.digest",
        parameters,
    )
    return {
        str(customer): (str(survivor or customer), bool(erased))
        for customer, survivor, erased in found
    }


def canonical(db: sqlite3.Connection, customer_id: str) -> str:
    """The surviving customer id (merges point straight at their survivor)."""
    row = db.execute("SELECT customer_id FROM aliases WHERE alias = ?", (customer_id,)).fetchone()
    return customer_id if row is None else str(row[0])


def is_erased(db: sqlite3.Connection, customer_id: str) -> bool:
    digest = customer_digest(customer_id)
    query = "SELECT 1 FROM erasures WHERE customer_digest = ?"
    return db.execute(query, (digest,)).fetchone() is not None


def encode_profile(profile: Profile) -> bytes:
    """The stored form of a profile: the compact binary form of `feature_store.profile_codec`
    (a BLOB)."""
    return profile_codec.encode_profile(profile)


def decode_profile(body: str | bytes) -> Profile:
    """A stored profile: the binary form, or the JSON text of earlier versions (rewritten in
    the binary form at the customer's next update)."""
    return profile_codec.decode_profile(body.encode() if isinstance(body, str) else body)


def read_profile(db: sqlite3.Connection, customer_id: str) -> Profile | None:
    row = db.execute("SELECT body FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
    return None if row is None else decode_profile(row[0])


def read_profiles(db: sqlite3.Connection, customer_ids: list[str]) -> dict[str, Profile]:
    """The stored profiles of `customer_ids` (those that have one), in one query."""
    ids, parameters = value_list(customer_ids)
    found = db.execute(
        f"SELECT customer_id, body FROM profiles WHERE customer_id IN {ids}",
        parameters,
    )
    return {str(customer_id): decode_profile(body) for customer_id, body in found}


_WRITE_PROFILE = (
    "INSERT INTO profiles (customer_id, body) VALUES (?, ?) "
    "ON CONFLICT (customer_id) DO UPDATE SET body = excluded.body"
)


def write_profile(db: sqlite3.Connection, profile: Profile) -> None:
    db.execute(_WRITE_PROFILE, (profile.customer_id, encode_profile(profile)))


def write_profiles(db: sqlite3.Connection, profiles: list[Profile]) -> None:
    db.executemany(_WRITE_PROFILE, [(p.customer_id, encode_profile(p)) for p in profiles])


def resolve(db: sqlite3.Connection, identity: HashedIdentity) -> str | None:
    row = db.execute(
        "SELECT customer_id FROM identities WHERE type = ? AND digest = ?",
        (identity.type.value, identity.digest),
    ).fetchone()
    return None if row is None else str(row[0])


def link(
    db: sqlite3.Connection,
    identities: Sequence[HashedIdentity],
    customer_id: str | None,
    *,
    at: datetime,
    config: EngineConfig,
) -> IdentityLink:
    """Within the caller's write transaction: see `OnlineStore.link_identities`."""
    owners = {owner for identity in identities if (owner := resolve(db, identity))}
    if customer_id is not None:
        survivor, created = canonical(db, customer_id), False
    elif owners:
        survivor, created = min(owners), False
    else:
        survivor, created = f"cust_{uuid.uuid4().hex[:20]}", True
    if is_erased(db, survivor):
        raise CustomerErased(survivor)
    merged = sorted(owners - {survivor})
    for other in merged:
        _merge_into(db, survivor, other, config)
    db.executemany(
        "INSERT INTO identities (type, digest, customer_id, masked, linked_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (type, digest) DO UPDATE SET "
        "customer_id = excluded.customer_id",
        [(i.type.value, i.digest, survivor, i.masked, at.isoformat()) for i in identities],
    )
    return IdentityLink(customer_id=survivor, created=created, merged=merged)


def _merge_into(db: sqlite3.Connection, survivor: str, other: str, config: EngineConfig) -> None:
    kept, absorbed = read_profile(db, survivor), read_profile(db, other)
    if absorbed is not None:
        combined = (
            merge(kept, absorbed, customer_id=survivor, config=config)
            if kept is not None
            else absorbed.model_copy(update={"customer_id": survivor})
        )
        write_profile(db, combined)
    # Events keep their ids; the log's copy is rewritten to the survivor for replays.
    db.execute(
        "UPDATE OR IGNORE events SET customer_id = ?, body = json_set(body, '$.customer_id', ?) "
        "WHERE customer_id = ?",
        (survivor, survivor, other),
    )
    db.execute("DELETE FROM events WHERE customer_id = ?", (other,))  # ids both already had
    db.execute("DELETE FROM profiles WHERE customer_id = ?", (other,))  # events moved first
    for table in ("decisions", "identities", "aliases"):
        query = f"UPDATE {table} SET customer_id = ? WHERE customer_id = ?"  # fixed table names
        db.execute(query, (survivor, other))
    db.execute(
        "INSERT INTO aliases (alias, customer_id) VALUES (?, ?) "
        "ON CONFLICT (alias) DO UPDATE SET customer_id = excluded.customer_id",
        (other, survivor),
    )


def merged_ids(db: sqlite3.Connection, customer_id: str) -> list[str]:
    query = "SELECT alias FROM aliases WHERE customer_id = ? ORDER BY alias"
    return [str(alias) for (alias,) in db.execute(query, (customer_id,))]


def export(db: sqlite3.Connection, customer_id: str) -> CustomerExport | None:
    customer_id = canonical(db, customer_id)
    identities = [
        LinkedIdentity(type=t, digest=d, masked=m, customer_id=customer_id, linked_at=at)
        for t, d, m, at in db.execute(
            "SELECT type, digest, masked, linked_at FROM identities WHERE customer_id = ? "
            "ORDER BY type, masked",
            (customer_id,),
        )
    ]
    profile = read_profile(db, customer_id)
    events = [
        Event.model_validate_json(body)
        for (body,) in db.execute(
            "SELECT body FROM events WHERE customer_id = ? ORDER BY seq", (customer_id,)
        )
    ]
    decisions = [
        Decision.model_validate_json(body)
        for (body,) in db.execute(
            "SELECT body FROM decisions WHERE customer_id = ? ORDER BY decided_at", (customer_id,)
        )
    ]
    if profile is None and not identities and not events and not decisions:
        return None
    return CustomerExport(
        customer_id=customer_id,
        merged_customer_ids=merged_ids(db, customer_id),
        identities=identities,
        profile=profile,
        events=events,
        decisions=decisions,
    )


def erase(db: sqlite3.Connection, customer_id: str, *, at: datetime) -> bool:
    """Within the caller's write transaction: see `OnlineStore.erase_customer`."""
    survivor = canonical(db, customer_id)
    everyone = sorted({customer_id, survivor, *merged_ids(db, survivor)})
    db.execute(
        "DELETE FROM decision_order WHERE decision_id IN "
        "(SELECT decision_id FROM decisions WHERE customer_id = ?)",
        (survivor,),
    )
    removed = 0
    for table in ("events", "profiles", "decisions", "identities", "aliases"):  # events first
        removed += db.execute(
            f"DELETE FROM {table} WHERE customer_id = ?",  # fixed table names
            (survivor,),
        ).rowcount
    db.executemany(
        "INSERT INTO erasures (customer_digest, erased_at) VALUES (?, ?) "
        "ON CONFLICT (customer_digest) DO NOTHING",
        [(customer_digest(customer), at.isoformat()) for customer in everyone],
    )
    return removed > 0
