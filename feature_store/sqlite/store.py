"""The embedded online store: one SQLite file, shared by the threads and processes of one host.

Tables (schema version `SCHEMA_VERSION`, kept in `PRAGMA user_version`):

* `profiles`: one JSON `Profile` per customer;
* `events`: the event log. `seq` is the acceptance order (AUTOINCREMENT, so a number is never
  reused after an erasure and can serve as an export cursor); (customer_id, event_id) is unique,
  which is the idempotence check: SQLite keeps every id, so there is no idempotence window here;
* `decisions`: the decision log, keyed by decision_id, in the order of `decision_order` (see
  feature_store/sqlite/rows.py);
* `population_counts`: how many folded events chose each channel, per population dimension.

Concurrency: the file is in WAL mode, so readers never wait for the writer. Every write is one
`BEGIN IMMEDIATE` transaction, which takes the file's write lock before reading anything: two
writers of one customer run one after the other, the second folding into the first's committed
profile, and a write can never fail half-way with SQLITE_BUSY_SNAPSHOT (a read transaction that
finds the snapshot it read outdated when it tries to write). Each thread has its own connection.
A store must be opened in the process that uses it (after any fork): SQLite connections must not
cross a fork.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.fold import FoldStatus, fold_in_place
from engine.identity import HashedIdentity
from engine.profile import Profile
from feature_store.base import (
    AppendStatus,
    CustomerExport,
    IdentityLink,
    LogPage,
    LogTable,
    OnlineStore,
)
from feature_store.errors import DuplicateDecision, StoreError, StoreUnavailable
from feature_store.sqlite import rows

SCHEMA_VERSION = 3  # 2: identities, aliases, erasures; 3: decision_order (the log's cursor)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS profiles (
        customer_id TEXT PRIMARY KEY,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        customer_id TEXT NOT NULL REFERENCES profiles (customer_id),
        event_id TEXT NOT NULL,
        occurred_at_us INTEGER NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (customer_id, event_id)
    )""",
    """CREATE TABLE IF NOT EXISTS decisions (
        decision_id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS decisions_by_customer ON decisions (customer_id, decided_at)",
    """CREATE TABLE IF NOT EXISTS population_counts (
        dimension TEXT NOT NULL,
        channel TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (dimension, channel)
    ) WITHOUT ROWID""",
    *rows.SCHEMA,
)

_APPEND_STATUS = {
    FoldStatus.APPLIED: AppendStatus.ACCEPTED,
    FoldStatus.DUPLICATE: AppendStatus.DUPLICATE,
    FoldStatus.TOO_LATE: AppendStatus.TOO_LATE,
}

#: Retry-after hints, in seconds: a held lock clears quickly, a disk or file problem does not.
_RETRY_AFTER_BUSY = 1.0
_RETRY_AFTER_FAULT = 5.0


class IncompatibleDatabase(StoreError):
    """The file cannot be used by this version: newer schema, or no WAL support."""


class SQLiteStoreConfig(BaseModel):
    """Where the SQLite store lives and how long a write waits for another writer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sqlite"] = "sqlite"
    path: Path
    busy_timeout_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a write waits for another writer's lock, in seconds, before "
        "the store reports itself unavailable.",
    )


class SQLiteStore(OnlineStore):
    """`OnlineStore` on one SQLite file (see the module docstring for layout and concurrency).

    `population_prior()` is cached in the instance for `prior_ttl_seconds` (monotonic clock),
    because the decision path asks for it on every request and the shares change slowly; a
    TTL of 0 reads the counters on every call.
    """

    def __init__(
        self,
        config: EngineConfig,
        sqlite_config: SQLiteStoreConfig,
        *,
        prior_ttl_seconds: float = 5.0,
    ) -> None:
        super().__init__(config)
        self.sqlite_config = sqlite_config
        self.prior_ttl_seconds = prior_ttl_seconds
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        # (monotonic expiry, prior), replaced in one assignment so readers never see half of it.
        self._prior: tuple[float, ChannelPrior] | None = None
        try:
            with _translated_errors():
                self._prepare_file()
        except BaseException:
            self.close()
            raise

    # -- OnlineStore ---------------------------------------------------------------------------

    def read_profile(self, customer_id: str) -> Profile | None:
        with _translated_errors():
            db = self._connection()
            profile = rows.read_profile(db, customer_id)
            if profile is None and (survivor := rows.canonical(db, customer_id)) != customer_id:
                profile = rows.read_profile(db, survivor)
            return profile

    def apply_events(self, events: Sequence[Event]) -> list[AppendStatus]:
        """See `OnlineStore.apply_events`. One transaction per customer, in order of first
        appearance; if a later customer's transaction fails, earlier customers stay committed
        and a retry of the whole batch reports their events DUPLICATE.
        """
        positions: dict[str, list[int]] = {}
        for position, event in enumerate(events):
            positions.setdefault(event.customer_id, []).append(position)
        statuses: dict[int, AppendStatus] = {}
        with _translated_errors():
            for customer_id, customer_positions in positions.items():
                customer_events = [events[position] for position in customer_positions]
                customer_statuses = self._apply_customer_events(customer_id, customer_events)
                statuses.update(zip(customer_positions, customer_statuses, strict=True))
        return [statuses[position] for position in range(len(events))]

    def customer_events(self, customer_id: str) -> list[Event]:
        with _translated_errors():
            db = self._connection()
            bodies = db.execute(
                "SELECT body FROM events WHERE customer_id = ? ORDER BY seq",
                (rows.canonical(db, customer_id),),
            )
            return [Event.model_validate_json(body) for (body,) in bodies]

    def log_decision(self, decision: Decision) -> None:
        with _translated_errors(), self._write_transaction() as db:
            logged = rows.log_decision(db, decision)
        if not logged:
            raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")

    def read_decision(self, decision_id: str) -> Decision | None:
        with _translated_errors():
            row = (
                self._connection()
                .execute("SELECT body FROM decisions WHERE decision_id = ?", (decision_id,))
                .fetchone()
            )
        return None if row is None else Decision.model_validate_json(row[0])

    def population_prior(self) -> ChannelPrior:
        now = time.monotonic()
        cached = self._prior
        if cached is not None and now < cached[0]:
            return cached[1]
        # Two threads may both refresh after expiry; both compute the same prior, so no lock.
        with _translated_errors():
            rows = self._connection().execute(
                "SELECT dimension, channel, count FROM population_counts"
            )
            counts: dict[str, dict[str, float]] = {}
            for dimension, channel, count in rows:
                counts.setdefault(dimension, {})[channel] = float(count)
        prior = ChannelPrior.from_counts(counts)
        self._prior = (now + self.prior_ttl_seconds, prior)
        return prior

    def resolve_identity(self, identity: HashedIdentity) -> str | None:
        with _translated_errors():
            return rows.resolve(self._connection(), identity)

    def link_identities(
        self, identities: Sequence[HashedIdentity], customer_id: str | None, *, at: datetime
    ) -> IdentityLink:
        with _translated_errors(), self._write_transaction() as db:
            return rows.link(db, identities, customer_id, at=at, config=self.config)

    def export_customer(self, customer_id: str) -> CustomerExport | None:
        with _translated_errors():
            db = self._connection()
            if rows.is_erased(db, customer_id):
                return None
            return rows.export(db, customer_id)

    def erase_customer(self, customer_id: str) -> bool:
        with _translated_errors(), self._write_transaction() as db:
            return rows.erase(db, customer_id, at=datetime.now(UTC))

    def read_log(self, table: LogTable, after: int, limit: int) -> LogPage:
        with _translated_errors():
            return rows.read_log(self._connection(), table, after, limit)

    def erased_digests(self) -> set[str]:
        with _translated_errors():
            return rows.erased_digests(self._connection())

    def ping(self) -> None:
        # Takes a read lock and reads the schema page: a lost disk or a held lock shows here.
        with _translated_errors():
            self._connection().execute("SELECT count(*) FROM sqlite_schema").fetchone()

    def close(self) -> None:
        """Close every thread's connection. Later calls raise `StoreUnavailable`."""
        with self._connections_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for _, connection in connections:
            connection.close()

    # -- writes --------------------------------------------------------------------------------

    def record_decision(self, decision: Decision, delivered: Sequence[Event]) -> None:
        """The decision and its delivered actions in one transaction, committed without an
        fsync (synchronous=NORMAL): the decision path holds the write lock ~1.7 ms less. A
        process crash loses nothing (WAL); a power loss can lose the last few decisions and
        their exposures, never an event a touchpoint sent (those commits stay FULL)."""
        with _translated_errors(), self._relaxed_sync(), self._write_transaction() as db:
            if not rows.log_decision(db, decision):
                raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")
            if delivered:
                self._apply_in(db, decision.customer_id, list(delivered))

    def _apply_customer_events(self, customer_id: str, events: list[Event]) -> list[AppendStatus]:
        with self._write_transaction() as db:
            return self._apply_in(db, customer_id, events)

    def _apply_in(
        self, db: sqlite3.Connection, customer_id: str, events: list[Event]
    ) -> list[AppendStatus]:
        """Log and fold one customer's events inside the caller's write transaction."""
        bodies = [event.model_dump_json() for event in events]
        statuses = [AppendStatus.DUPLICATE] * len(events)
        if rows.is_erased(db, customer_id):
            return [AppendStatus.ERASED] * len(events)
        survivor = rows.canonical(db, customer_id)
        if survivor != customer_id:  # merged into another customer: theirs now
            events = [e.model_copy(update={"customer_id": survivor}) for e in events]
            bodies = [event.model_dump_json() for event in events]
            customer_id = survivor
        known = rows.logged_event_ids(db, customer_id, [event.event_id for event in events])
        # A repeated id inside the batch is folded once: the fold's own check keys on
        # (occurred_at, id) and would apply a resent event whose time differs.
        fresh: list[int] = []
        for position, event in enumerate(events):
            if event.event_id not in known:
                known.add(event.event_id)
                fresh.append(position)
        if not fresh:
            return statuses
        # The profile was just decoded, so it is folded in place (no defensive copy).
        # Every id was checked against the log above, so even very late events are new.
        profile, fold_statuses = fold_in_place(
            rows.read_profile(db, customer_id),
            customer_id,
            [events[p] for p in fresh],
            self.config,
            known_new=True,
        )
        for position, fold_status in zip(fresh, fold_statuses, strict=True):
            statuses[position] = _APPEND_STATUS[fold_status]
        applied = [events[p] for p in fresh if statuses[p] is AppendStatus.ACCEPTED]
        # TOO_LATE events are logged though not folded; the fold's DUPLICATEs are not.
        logged = [p for p in fresh if statuses[p] is not AppendStatus.DUPLICATE]
        if applied:
            rows.write_profile(db, profile)
        db.executemany(
            "INSERT INTO events (customer_id, event_id, occurred_at_us, status, body) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (
                    customer_id,
                    events[p].event_id,
                    rows.microseconds(events[p].occurred_at),
                    statuses[p].value,
                    bodies[p],
                )
                for p in logged
            ],
        )
        rows.count_population(db, applied)
        return statuses

    @contextmanager
    def _relaxed_sync(self) -> Iterator[None]:
        connection = self._connection()
        connection.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            connection.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed if the block returns, rolled back if it raises."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            self._roll_back(connection)
            raise

    def _roll_back(self, connection: sqlite3.Connection) -> None:
        if not connection.in_transaction:
            return
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            # A connection that cannot roll back is in an unknown state: closing it makes
            # SQLite discard the transaction, and this thread reconnects on its next call.
            self._local.connection = None
            connection.close()

    # -- connections and schema ----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        elif self._closed:
            raise StoreUnavailable("the SQLite store is closed", retry_after=_RETRY_AFTER_FAULT)
        return connection

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.sqlite_config.path,
            timeout=self.sqlite_config.busy_timeout_seconds,  # SQLite's busy timeout
            isolation_level=None,  # transactions are begun explicitly (BEGIN IMMEDIATE)
            check_same_thread=False,  # one thread uses it; others only close it (see below)
        )
        try:
            # Durable: a commit is on disk before apply_events returns (WAL is synced on commit).
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            connection.close()
            raise
        current = threading.current_thread()
        with self._connections_lock:
            if self._closed:
                connection.close()
                raise StoreUnavailable("the SQLite store is closed", retry_after=_RETRY_AFTER_FAULT)
            # Connections of threads that have ended would otherwise stay open until close().
            ended = [entry for entry in self._connections if not entry[0].is_alive()]
            self._connections = [entry for entry in self._connections if entry[0].is_alive()]
            self._connections.append((current, connection))
        for _, stale in ended:
            stale.close()
        return connection

    def _prepare_file(self) -> None:
        """Switch the file to WAL and create or check the schema; safe to race with others."""
        connection = self._connection()
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise IncompatibleDatabase(
                f"{self.sqlite_config.path}: SQLite cannot use WAL here (journal mode {mode!r})"
            )
        with self._write_transaction() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise IncompatibleDatabase(
                    f"{self.sqlite_config.path} has schema version {version}; this version of "
                    f"Rapport reads up to {SCHEMA_VERSION}"
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Raise SQLite's errors as store errors, so callers never handle `sqlite3` themselves."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        busy = exc.sqlite_errorname in ("SQLITE_BUSY", "SQLITE_LOCKED")
        raise StoreUnavailable(
            f"SQLite store unavailable: {exc}",
            retry_after=_RETRY_AFTER_BUSY if busy else _RETRY_AFTER_FAULT,
        ) from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite store error: {exc}") from exc
