"""API key records in the SQLite file of the embedded online store (table `api_keys`).

The table is created if missing, beside the online store's tables; it does not take part in the
online store's schema version (`PRAGMA user_version`). The file is in WAL mode, so key lookups
never wait for event writes. Each thread has its own connection, as in `feature_store.sqlite.store`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter

from feature_store.credentials import ApiKey, CredentialStore, DuplicateKey, DuplicateKeyName
from feature_store.errors import StoreError, StoreUnavailable

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_hash TEXT PRIMARY KEY,
        key_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    ) WITHOUT ROWID""",
    # One active key per name, so that `revoke(name)` names exactly one key.
    "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) "
    "WHERE revoked_at IS NULL",
)
_COLUMNS = "key_hash, key_id, name, scopes, created_at, revoked_at"
_SCOPES = TypeAdapter(list[str])
_RETRY_AFTER_SECONDS = 1.0


class SQLiteCredentialStore(CredentialStore):
    """`CredentialStore` on a SQLite file (usually the online store's own file)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            with _translated_errors():
                self._create_table()
        except BaseException:
            self.close()
            raise

    def save(self, key: ApiKey) -> None:
        try:
            with _translated_errors():
                self._connection().execute(
                    f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key.key_hash,
                        key.key_id,
                        key.name,
                        _SCOPES.dump_json(sorted(key.scopes)).decode(),
                        _utc_text(key.created_at),
                        None if key.revoked_at is None else _utc_text(key.revoked_at),
                    ),
                )
        except StoreError as exc:
            if "UNIQUE constraint failed: api_keys.name" in str(exc):
                raise DuplicateKeyName(f"an active key is already named {key.name!r}") from exc
            if "UNIQUE constraint failed" in str(exc):
                raise DuplicateKey(f"key {key.key_id} is already stored") from exc
            raise

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        with _translated_errors():
            row = (
                self._connection()
                .execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
                .fetchone()
            )
        return None if row is None else _record(row)

    def list_keys(self) -> list[ApiKey]:
        with _translated_errors():
            rows = self._connection().execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name"
            )
            return [_record(row) for row in rows]

    def revoke(self, key_id_or_name: str, *, at: datetime) -> bool:
        revoked = False
        with _translated_errors():
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                for column in ("key_id", "name"):  # an id first: see CredentialStore.revoke
                    revoked = (
                        db.execute(
                            f"UPDATE api_keys SET revoked_at = ? "
                            f"WHERE {column} = ? AND revoked_at IS NULL",
                            (_utc_text(at), key_id_or_name),
                        ).rowcount
                        > 0
                    )
                    if revoked:
                        break
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return revoked

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreUnavailable("the SQLite credential store is closed")
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_seconds,
                isolation_level=None,  # autocommit; revoke begins its own transaction
                check_same_thread=False,  # used by one thread; closed by whoever calls close()
            )
            try:
                # Durable: a revocation is on disk when revoke returns.
                connection.execute("PRAGMA synchronous = FULL")
            except BaseException:
                connection.close()
                raise
            with self._lock:
                if self._closed:
                    connection.close()
                    raise StoreUnavailable("the SQLite credential store is closed")
                self._connections.append(connection)
            self._local.connection = connection
        return connection

    def _create_table(self) -> None:
        db = self._connection()
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise StoreError(f"{self.path}: SQLite cannot use WAL here (journal mode {mode!r})")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _utc_text(when: datetime) -> str:
    """ISO 8601 in UTC, so that the text sorts in time order."""
    return when.astimezone(UTC).isoformat()


def _record(row: tuple[str, str, str, str, str, str | None]) -> ApiKey:
    key_hash, key_id, name, scopes, created_at, revoked_at = row
    return ApiKey.model_validate(
        {
            "key_hash": key_hash,
            "key_id": key_id,
            "name": name,
            "scopes": _SCOPES.validate_json(scopes),
            "created_at": created_at,
            "revoked_at": revoked_at,
        }
    )


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(
            f"SQLite credential store unavailable: {exc}", retry_after=_RETRY_AFTER_SECONDS
        ) from exc
    except sqlite3.Error as exc:
        raise StoreError(f"SQLite credential store error: {exc}") from exc
