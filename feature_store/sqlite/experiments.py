"""Experiment definitions in the SQLite file of the embedded online store (table `experiments`).

The table is created if missing, beside the online store's tables, outside its schema version
(`PRAGMA user_version`), as the `api_keys` table is. WAL mode: reads never wait for writes.
Each thread has its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from feature_store.errors import StoreError, StoreUnavailable
from feature_store.experiments import (
    DuplicateExperiment,
    ExperimentRegistry,
    StaleExperiment,
    StoredExperiment,
    UnknownExperiment,
)

_SCHEMA = """CREATE TABLE IF NOT EXISTS experiments (
    experiment_id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID"""
_RETRY_AFTER_SECONDS = 1.0


class SQLiteExperimentRegistry(ExperimentRegistry):
    """`ExperimentRegistry` on a SQLite file (usually the online store's own file)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            with _translated_errors():
                db = self._connection()
                (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
                if mode != "wal":
                    raise StoreError(f"{path}: SQLite cannot use WAL here (journal mode {mode!r})")
                db.execute(_SCHEMA)
        except BaseException:
            self.close()
            raise

    def create(self, experiment_id: str, definition: str) -> StoredExperiment:
        try:
            with _translated_errors():
                self._connection().execute(
                    "INSERT INTO experiments (experiment_id, definition, revision) "
                    "VALUES (?, ?, 1)",
                    (experiment_id, definition),
                )
        except StoreError as exc:
            if "UNIQUE constraint failed" in str(exc):
                raise DuplicateExperiment(f"experiment {experiment_id!r} already exists") from exc
            raise
        return StoredExperiment(experiment_id, definition, 1)

    def get(self, experiment_id: str) -> StoredExperiment | None:
        with _translated_errors():
            row = (
                self._connection()
                .execute(
                    "SELECT experiment_id, definition, revision FROM experiments "
                    "WHERE experiment_id = ?",
                    (experiment_id,),
                )
                .fetchone()
            )
        return None if row is None else StoredExperiment(*row)

    def list(self) -> list[StoredExperiment]:
        with _translated_errors():
            rows = self._connection().execute(
                "SELECT experiment_id, definition, revision FROM experiments ORDER BY experiment_id"
            )
            return [StoredExperiment(*row) for row in rows]

    def replace(self, experiment_id: str, definition: str, *, revision: int) -> StoredExperiment:
        with _translated_errors():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT revision FROM experiments WHERE experiment_id = ?", (experiment_id,)
                ).fetchone()
                if row is None:
                    raise UnknownExperiment(f"no experiment {experiment_id!r}")
                if row[0] != revision:
                    raise StaleExperiment(
                        f"experiment {experiment_id!r} is at revision {row[0]}, not {revision}"
                    )
                db.execute(
                    "UPDATE experiments SET definition = ?, revision = ? WHERE experiment_id = ?",
                    (definition, revision + 1, experiment_id),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return StoredExperiment(experiment_id, definition, revision + 1)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("the SQLite experiment registry is closed")
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_seconds,
                isolation_level=None,  # autocommit; replace begins its own transaction
                check_same_thread=False,  # used by one thread; closed by whoever calls close()
            )
            with self._lock:
                if self._closed:
                    connection.close()
                    raise StoreUnavailable("the SQLite experiment registry is closed")
                self._connections.append(connection)
            self._local.connection = connection
        return connection


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(
            f"SQLite experiment registry unavailable: {exc}", retry_after=_RETRY_AFTER_SECONDS
        ) from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite experiment registry error: {exc}") from exc
