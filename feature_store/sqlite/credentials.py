"""API key records in the SQLite file of the embedded online store (table `api_keys`).

The table is created if missing, beside the online store's tables; it does not take part in the
online store's schema version (`PRAGMA user_version`). The file is in WAL mode, so key lookups
never wait for event writes. Each thread has its own connection
(feature_store/sqlite/connection.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import TypeAdapter

from feature_store.credentials import ApiKey, CredentialStore, DuplicateKey, DuplicateKeyName
from feature_store.errors import StoreError
from feature_store.sqlite.connection import (
    ThreadConnections,
    enable_wal,
    translated_errors,
    write_transaction,
)

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
_WHAT = "SQLite credential store"


class SQLiteCredentialStore(CredentialStore):
    """`CredentialStore` on a SQLite file (usually the online store's own file)."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float = 5.0) -> None:
        self.path = path
        self.busy_timeout_seconds = busy_timeout_seconds
        # Durable: a revocation is on disk when revoke returns.
        self._connections = ThreadConnections(
            path,
            busy_timeout_seconds=busy_timeout_seconds,
            pragmas=("PRAGMA synchronous = FULL",),
            what=f"the {_WHAT}",
        )
        try:
            with translated_errors(_WHAT):
                self._create_table()
        except BaseException:
            self.close()
            raise

    def save(self, key: ApiKey) -> None:
        try:
            with translated_errors(_WHAT):
                self._connections.connection().execute(
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
        with translated_errors(_WHAT):
            row = (
                self._connections.connection()
                .execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
                .fetchone()
            )
        return None if row is None else _record(row)

    def list_keys(self) -> list[ApiKey]:
        with translated_errors(_WHAT):
            rows = self._connections.connection().execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name"
            )
            return [_record(row) for row in rows]

    def revoke(self, key_id_or_name: str, *, at: datetime) -> bool:
        revoked = False
        with translated_errors(_WHAT), write_transaction(self._connections.connection()) as db:
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
        return revoked

    def close(self) -> None:
        self._connections.close()

    def _create_table(self) -> None:
        db = self._connections.connection()
        enable_wal(db, self.path)
        with write_transaction(db):
            for statement in _SCHEMA:
                db.execute(statement)


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
