"""The embedded online store: one SQLite file, shared by the threads and processes of one host.

Tables (schema version `SCHEMA_VERSION`, kept in `PRAGMA user_version`):

* `profiles`: one `Profile` per customer (its stored form: `rows.encode_profile`);
* `events`: the event log. `seq` is the acceptance order (AUTOINCREMENT, so a number is never
  reused after an erasure and can serve as an export cursor); (customer_id, event_id) is unique,
  which is the idempotence check: SQLite keeps every id, so there is no idempotence window here;
* `decisions`: the decision log, keyed by decision_id, in the order of `decision_order` (see
  feature_store/sqlite/rows.py);
* `population_counts`: how many folded events chose each channel, per population dimension.

Concurrency: the file is in WAL mode, so readers never wait for the writer; each thread reads
on its own connection. Every write goes through the store's one writer
(feature_store/sqlite/writer.py), which commits queued writes in groups, one `BEGIN IMMEDIATE`
transaction (one fsync) per group, on one connection: threads of a process never fight for the
write lock, they queue and share commits. Processes sharing the file each have their writer;
SQLite's lock orders them (a writer waits up to `busy_timeout_seconds`). A write holds the
file's write lock from its first read, so two writers of one customer run one after the other,
the second folding into the first's committed profile. The writer's background thread
checkpoints the write-ahead log and writes the decision log's pending entries (see
`record_decision`). A store must be opened in the process that uses it (after any fork):
SQLite connections and threads do not cross a fork.

Erasure: `PRAGMA secure_delete` is on for the writer, so the pages an erasure frees are
overwritten with zeros instead of keeping the customer's data in the file's free pages (the
write-ahead log's copies are overwritten as the log is reused after checkpoints).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from engine.config import EngineConfig
from engine.decision import Decision
from engine.events import Event
from engine.identity import HashedIdentity, customer_digest
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
from feature_store.sqlite import ingest, rows
from feature_store.sqlite.connection import (
    RETRY_AFTER_FAULT,
    ThreadConnections,
    connect,
    enable_wal,
    translated_errors,
    write_transaction,
)
from feature_store.sqlite.decisions import PendingDecisions
from feature_store.sqlite.writer import GroupStats, GroupWriter, WriterStopped

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

_WHAT = "SQLite store"
# Readers: durable (a checkpoint run by read_log syncs), foreign keys checked.
_READER_PRAGMAS = ("PRAGMA synchronous = FULL", "PRAGMA foreign_keys = ON")

_WRITER_CACHE_KIB = 32 * 1024

T = TypeVar("T")


class IncompatibleDatabase(StoreError):
    """The file cannot be used by this version: newer schema, or no WAL support."""


class SQLiteStoreConfig(BaseModel):
    """Where the SQLite store lives, how long a write waits for another process's writer, and
    how much of the decision log a crash may lose."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sqlite"] = "sqlite"
    path: Path
    busy_timeout_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a write waits for another writer's lock, in seconds, before "
        "the store reports itself unavailable.",
    )
    decision_log_loss_window_seconds: float = Field(
        1.0,
        gt=0,
        le=1.0,
        description="The decision log is written behind the response: on a crash, decisions "
        "returned less than this many seconds before it may be missing from the log (their "
        "exposures never are). At most 1 s.",
    )
    secure_delete: bool = Field(
        True,
        description="Overwrite deleted content (erasures) instead of leaving it in free pages.",
    )


class SQLiteStore(OnlineStore):
    """`OnlineStore` on one SQLite file (see the module docstring for layout and concurrency).

    `population_prior()` is cached in the instance for `prior_ttl_seconds` (monotonic clock),
    because the decision path asks for it on every request and the shares change slowly; a
    TTL of 0 reads the counters on every call.

    Durability: `apply_events`, `log_decision`, `link_identities` and `erase_customer` return
    once committed and synced (synchronous=FULL). `record_decision` returns once the delivered
    exposures are committed, without an fsync (a process crash loses nothing of them, a power
    loss the last few); a decision without exposures is logged behind the response, within
    `decision_log_loss_window_seconds` (see `record_decision`).
    """

    def __init__(
        self,
        config: EngineConfig,
        sqlite_config: SQLiteStoreConfig,
        *,
        prior_ttl_seconds: float = 0.5,
    ) -> None:
        super().__init__(config)
        self.sqlite_config = sqlite_config
        self.prior_ttl_seconds = prior_ttl_seconds
        self._readers = ThreadConnections(
            sqlite_config.path,
            busy_timeout_seconds=sqlite_config.busy_timeout_seconds,
            pragmas=_READER_PRAGMAS,
            what=f"the {_WHAT}",
        )
        self._pending = PendingDecisions(sqlite_config.decision_log_loss_window_seconds)
        self._writer: GroupWriter | None = None
        # (monotonic expiry, prior), replaced in one assignment so readers never see half of it.
        try:
            with translated_errors(_WHAT):
                self._prepare_file()
                self._writer = self._open_writer()
        except BaseException:
            self.close()
            raise

    # -- OnlineStore: reads --------------------------------------------------------------------

    def read_profile(self, customer_id: str) -> Profile | None:
        with translated_errors(_WHAT):
            db = self._connection()
            profile = rows.read_profile(db, customer_id)
            if profile is None and (survivor := rows.canonical(db, customer_id)) != customer_id:
                profile = rows.read_profile(db, survivor)
            return profile

    def list_customers(self, after: str | None, limit: int) -> list[str]:
        """Customers with a profile, in id order: the profiles table's primary key, one query
        per page (merged customers' profiles moved to their survivor; erased ones deleted)."""
        with translated_errors(_WHAT):
            found = self._connection().execute(
                "SELECT customer_id FROM profiles WHERE customer_id > ? "
                "ORDER BY customer_id LIMIT ?",
                ("" if after is None else after, limit),
            )
            return [customer_id for (customer_id,) in found]

    def customer_events(self, customer_id: str) -> list[Event]:
        with translated_errors(_WHAT):
            db = self._connection()
            bodies = db.execute(
                "SELECT body FROM events WHERE customer_id = ? ORDER BY seq",
                (rows.canonical(db, customer_id),),
            )
            return [Event.model_validate_json(body) for (body,) in bodies]

    def read_decision(self, decision_id: str) -> Decision | None:
        """A logged decision, or one recorded in this process and not yet written."""
        pending = self._pending.get(decision_id)
        if pending is not None:
            return pending
        with translated_errors(_WHAT):
            row = (
                self._connection()
                .execute("SELECT body FROM decisions WHERE decision_id = ?", (decision_id,))
                .fetchone()
            )
        if row is None:  # it may have been written between the two looks
            return self._pending.get(decision_id)
        return Decision.model_validate_json(row[0])

    def population_counts(self) -> dict[str, dict[str, float]]:
        with translated_errors(_WHAT):
            found = self._connection().execute(
                "SELECT dimension, channel, count FROM population_counts"
            )
            counts: dict[str, dict[str, float]] = {}
            for dimension, channel, count in found:
                counts.setdefault(dimension, {})[channel] = float(count)
        return counts

    def resolve_identity(self, identity: HashedIdentity) -> str | None:
        with translated_errors(_WHAT):
            return rows.resolve(self._connection(), identity)

    def export_customer(self, customer_id: str) -> CustomerExport | None:
        self._write(None, durable=False)  # pending decisions are held too
        with translated_errors(_WHAT):
            db = self._connection()
            if rows.is_erased(db, customer_id):
                return None
            return rows.export(db, customer_id)

    def read_log(self, table: LogTable, after: int, limit: int) -> LogPage:
        if table == "decisions" and len(self._pending):
            self._write(None, durable=False)  # give the pending entries their seq
        with translated_errors(_WHAT):
            return rows.read_log(self._connection(), table, after, limit)

    def erased_digests(self) -> set[str]:
        with translated_errors(_WHAT):
            return rows.erased_digests(self._connection())

    def is_erased(self, customer_id: str) -> bool:
        """One lookup in the erasures table's primary key."""
        with translated_errors(_WHAT):
            found = self._connection().execute(
                "SELECT 1 FROM erasures WHERE customer_digest = ?",
                (customer_digest(customer_id),),
            )
            return found.fetchone() is not None

    def ping(self) -> None:
        # Takes a read lock and reads the schema page: a lost disk or a held lock shows here.
        with translated_errors(_WHAT):
            self._connection().execute("SELECT count(*) FROM sqlite_schema").fetchone()

    # -- OnlineStore: writes -------------------------------------------------------------------

    def apply_events(self, events: Sequence[Event]) -> list[AppendStatus]:
        """See `OnlineStore.apply_events`. The batch is one write: all of it or nothing, in the
        writer's group transaction, with one query per kind of lookup for the whole batch
        (feature_store/sqlite/ingest.py)."""
        if not events:
            return []
        batch = ingest.prepare(events)  # encoding, outside the write lock
        statuses: list[AppendStatus] = self._write(
            lambda db: ingest.apply_batch(db, batch, self.config), durable=True
        )
        return statuses

    def log_decision(self, decision: Decision) -> None:
        """Append to the decision log, committed and synced before it returns."""
        if self._pending.get(decision.decision_id) is not None:
            raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")
        if not self._write(lambda db: rows.log_decision(db, decision), durable=True):
            raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")

    def record_decision(self, decision: Decision, delivered: Sequence[Event]) -> None:
        """Log `decision` and apply `delivered`, its exposures, which are committed (without an
        fsync) before this returns: they count toward caps for every later read, in any process.

        With exposures, the log entry is written in the same transaction (the caller waits for
        that commit anyway, and a second write would cost more). Without any, the entry is
        written behind the response: the writer commits it within about half of
        `decision_log_loss_window_seconds`, in whatever group it commits next or in one of its
        own (feature_store/sqlite/decisions.py); until then `read_decision` in this process
        returns it, so an outcome for it is accepted at once. A crash (even kill -9) loses at
        most the entries recorded in the last window. If the writer has fallen behind by more
        than the window (the file locked by another process), this waits for it, and raises
        `StoreUnavailable` if it cannot write.

        Raises DuplicateDecision for an id already logged or pending, and then applies nothing.
        Two callers recording one id at the same moment without exposures (ids are random, so
        only by a bug) may both succeed; the log keeps the first.
        """
        if self._pending.get(decision.decision_id) is not None:
            raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")
        if delivered:
            batch = ingest.prepare(delivered)
            self._write(lambda db: self._record_in(db, decision, batch), durable=False)
            return
        if self._logged(decision) or not self._pending.add(decision):
            raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")
        if self._pending.behind():
            self._write(None, durable=False)

    def _record_in(
        self, db: sqlite3.Connection, decision: Decision, exposures: ingest.PreparedBatch
    ) -> None:
        statuses = ingest.apply_batch(db, exposures, self.config)
        if all(status is AppendStatus.ERASED for status in statuses):
            return  # erased while it was decided: nothing of it is kept
        if not rows.log_decision(db, decision):  # raising rolls the exposures back too
            raise DuplicateDecision(f"decision {decision.decision_id!r} is already logged")

    def link_identities(
        self, identities: Sequence[HashedIdentity], customer_id: str | None, *, at: datetime
    ) -> IdentityLink:
        link: IdentityLink = self._write(
            lambda db: rows.link(db, identities, customer_id, at=at, config=self.config),
            durable=True,
        )
        return link

    def erase_customer(self, customer_id: str) -> bool:
        """See `OnlineStore.erase_customer`. Decisions of the customer still pending are written
        first in the same transaction (so erased with the rest); any recorded later is dropped
        when written (`rows.log_decisions` skips erased customers)."""
        erased: bool = self._write(
            lambda db: rows.erase(db, customer_id, at=datetime.now(UTC)), durable=True
        )
        return erased

    def close(self) -> None:
        """Write the pending decisions, stop the writer and close every connection. Later calls
        raise `StoreUnavailable`."""
        if self._writer is not None:
            self._writer.stop()
        self._readers.close()

    # -- internals -----------------------------------------------------------------------------

    @property
    def group_stats(self) -> GroupStats:
        """How the writer grouped writes so far (groups, requests, largest group)."""
        return self._writer.stats if self._writer is not None else GroupStats()

    @property
    def _connections(self) -> list[tuple[Any, sqlite3.Connection]]:
        """The reader connections open now, with their threads."""
        return self._readers.open_connections

    def _connection(self) -> sqlite3.Connection:
        """The calling thread's reader connection."""
        return self._readers.connection()

    def _logged(self, decision: Decision) -> bool:
        with translated_errors(_WHAT):
            return rows.decision_logged(self._connection(), decision.decision_id)

    def _write(self, write: Callable[[sqlite3.Connection], T] | None, *, durable: bool) -> T:
        """Run `write` in the writer's next group and wait for it to commit (None: a group of
        the pending decisions alone)."""
        if self._writer is None or self._readers.closed:
            raise StoreUnavailable(f"the {_WHAT} is closed", retry_after=RETRY_AFTER_FAULT)
        try:
            with translated_errors(_WHAT):
                result: T = self._writer.run(write, durable=durable)
        except WriterStopped as exc:
            raise StoreUnavailable(f"the {_WHAT} is closed", retry_after=RETRY_AFTER_FAULT) from exc
        return result

    def _open_writer(self) -> GroupWriter:
        config = self.sqlite_config
        pragmas = [
            "PRAGMA foreign_keys = ON",
            # Checkpoints run in the writer's background thread, off the write path; this one
            # only if that thread falls far behind (64 MiB of log).
            "PRAGMA wal_autocheckpoint = 16384",
            "PRAGMA journal_size_limit = 67108864",  # the log file shrinks back to 64 MiB
            # The profiles of a large batch stay in memory between batches (KiB, negative).
            f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}",
            # Some builds (this one's) default to ON; set it either way, so the setting holds.
            f"PRAGMA secure_delete = {'ON' if config.secure_delete else 'OFF'}",
        ]
        timeout = config.busy_timeout_seconds
        writer = connect(config.path, busy_timeout_seconds=timeout, pragmas=pragmas)
        try:
            checkpointer = connect(config.path, busy_timeout_seconds=0, pragmas=())
        except BaseException:
            writer.close()
            raise
        return GroupWriter(writer, self._pending, checkpointer=checkpointer)

    def _prepare_file(self) -> None:
        """Switch the file to WAL and create or check the schema; safe to race with others."""
        connection = self._connection()
        enable_wal(connection, self.sqlite_config.path, IncompatibleDatabase)
        with write_transaction(connection) as db:
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
