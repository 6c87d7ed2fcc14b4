"""Experiment definitions in the SQLite file of the embedded online store (table `experiments`).

The table is created if missing, beside the online store's tables, outside its schema version
(`PRAGMA user_version`), as the `api_keys` table is. WAL mode: reads never wait for writes.
Each thread has its own connection (feature_store/sqlite/connection.py).
"""

from __future__ import annotations

from pathlib import Path

from feature_store.errors import StoreError
from feature_store.experiments import (
    DuplicateExperiment,
    ExperimentRegistry,
    StaleExperiment,
    StoredExperiment,
    UnknownExperiment,
)
from feature_store.sqlite.connection import (
    ThreadConnections,
    enable_wal,
    translated_errors,
    write_transaction,
)

_SCHEMA = """CREATE TABLE IF NOT EXISTS experiments (
    experiment_id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    revision INTEGER NOT NULL
) WITHOUT ROWID"""
_WHAT = "SQLite experiment registry"


class SQLiteExperimentRegistry(ExperimentRegistry):
    """`ExperimentRegistry` on a SQLite file (usually the online store's own file)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self._connections = ThreadConnections(
            path, busy_timeout_seconds=busy_timeout_seconds, pragmas=(), what=f"the {_WHAT}"
        )
        try:
            with translated_errors(_WHAT):
                db = self._connections.connection()
                enable_wal(db, path)
                db.execute(_SCHEMA)
        except BaseException:
            self.close()
            raise

    def create(self, experiment_id: str, definition: str) -> StoredExperiment:
        try:
            with translated_errors(_WHAT):
                self._connections.connection().execute(
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
        with translated_errors(_WHAT):
            row = (
                self._connections.connection()
                .execute(
                    "SELECT experiment_id, definition, revision FROM experiments "
                    "WHERE experiment_id = ?",
                    (experiment_id,),
                )
                .fetchone()
            )
        return None if row is None else StoredExperiment(*row)

    def list(self) -> list[StoredExperiment]:
        with translated_errors(_WHAT):
            rows = self._connections.connection().execute(
                "SELECT experiment_id, definition, revision FROM experiments ORDER BY experiment_id"
            )
            return [StoredExperiment(*row) for row in rows]

    def replace(self, experiment_id: str, definition: str, *, revision: int) -> StoredExperiment:
        with translated_errors(_WHAT), write_transaction(self._connections.connection()) as db:
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
        return StoredExperiment(experiment_id, definition, revision + 1)

    def close(self) -> None:
        self._connections.close()
