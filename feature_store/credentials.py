"""API keys: scopes, the stored record, the `CredentialStore` interface and issuing keys.

A key is `rk_<key_id>_<secret>`: `key_id` (16 hex digits) names the key in lists and logs without
revealing it, `secret` is `secrets.token_urlsafe(32)` (256 random bits). Only the SHA-256 of the
whole key is stored; the key itself is shown once, when it is issued.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from feature_store.errors import StoreError

KEY_PREFIX = "rk_"
#: The whole shape of an issued key; anything else is refused before the store is asked.
_KEY_PATTERN = re.compile(r"rk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
_HASH_PATTERN = r"^[0-9a-f]{64}$"


class Scope(StrEnum):
    """What a key may do. `admin` grants every scope."""

    EVENTS_WRITE = "events:write"
    DECISIONS = "decisions"
    CUSTOMERS_READ = "customers:read"
    CUSTOMERS_WRITE = "customers:write"
    PRIVACY = "privacy"
    EXPERIMENTS = "experiments"
    METRICS = "metrics"
    ADMIN = "admin"


KeyName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
]


class ApiKey(BaseModel):
    """The stored record of one key: never the key itself, only its SHA-256 (`key_hash`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    name: KeyName
    scopes: frozenset[Scope] = Field(min_length=1)
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None
    key_hash: str = Field(pattern=_HASH_PATTERN, repr=False)

    @field_serializer("scopes")
    def _sorted_scopes(self, scopes: frozenset[Scope]) -> list[str]:
        return sorted(scopes)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def grants(self, scope: Scope) -> bool:
        """True if this key may use `scope` (whether or not it is revoked: see `active`)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes


class DuplicateKeyName(StoreError):
    """An active key already has this name; revoke it first or choose another name."""


class DuplicateKey(StoreError):
    """A key with this hash or key_id is already stored (a key is saved once)."""


class CredentialStore(ABC):
    """Where API key records live. Implementations are safe to share between threads.

    Any method may raise `StoreUnavailable` when the backend cannot be reached.
    """

    @abstractmethod
    def save(self, key: ApiKey) -> None:
        """Store a new key record.

        Raises DuplicateKeyName if an active key has the same name (names of revoked keys can
        be reused), and DuplicateKey if its hash or key_id is already stored. Nothing is
        written when it raises.
        """

    @abstractmethod
    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        """The record whose `key_hash` is this, revoked or not; None if there is none."""

    @abstractmethod
    def list_keys(self) -> list[ApiKey]:
        """Every record, revoked ones included, oldest first (then by name)."""

    @abstractmethod
    def revoke(self, key_id_or_name: str, *, at: datetime) -> bool:
        """Revoke the active key with this key_id or, failing that, this name, as of `at`.

        An id is tried first, so a name can never shadow another key's id. Returns True if a
        key was revoked now, False if no active key matched (revoking twice is harmless).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The store must not be used afterwards."""


def hash_key(key: str) -> str:
    """The SHA-256 of a key, in hex: what is stored and looked up.

    A fast hash is right here: a key carries 256 random bits, so there is nothing to guess and
    nothing for a slow password hash (bcrypt, argon2) to protect, and it runs on every request
    that misses the in-process cache.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed(key: str) -> bool:
    """True if `key` has the shape of an issued key (cheap; no store access)."""
    return _KEY_PATTERN.fullmatch(key) is not None


def issue_key(name: str, scopes: Iterable[Scope], *, at: datetime) -> tuple[str, ApiKey]:
    """A new key and its record, created at `at`. Save the record; show the key once."""
    key_id = secrets.token_hex(8)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = ApiKey(
        key_id=key_id,
        name=name,
        scopes=frozenset(scopes),
        created_at=at,
        key_hash=hash_key(key),
    )
    return key, record


def authenticate(store: CredentialStore, key: str) -> ApiKey | None:
    """The active record of a presented key, or None (malformed, unknown or revoked)."""
    if not is_well_formed(key):
        return None
    return active_record(store, hash_key(key))


def active_record(store: CredentialStore, key_hash: str) -> ApiKey | None:
    """The record with this hash if it is active, or None (unknown or revoked)."""
    record = store.find_by_hash(key_hash)
    # The lookup matched on the hash already; comparing again in constant time costs nothing
    # and does not rely on how a backend compares strings.
    if record is None or not hmac.compare_digest(record.key_hash, key_hash):
        return None
    return record if record.active else None
