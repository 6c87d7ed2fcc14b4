"""API keys on the HTTP API: `require(scope)` guards a route; `PUBLIC_PATHS` need no key.

Clients send `Authorization: Bearer <key>`. A missing, malformed, unknown or revoked key is a 401
(with `WWW-Authenticate: Bearer`), a valid key without the route's scope a 403. `admin` grants
every scope. tests/api/test_auth.py fails for any route that neither is public nor has a
`require(...)` dependency.

Each worker process remembers keys it has found active for `auth_cache_seconds` (5 s by
default), so the decision path does not ask the store on every request: a revoked key keeps
working for at most that long. Keys not found are never remembered (a new key works at once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request, params
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from api.errors import error_body
from api.settings import Settings
from feature_store.credentials import (
    ApiKey,
    CredentialStore,
    Scope,
    active_record,
    hash_key,
    is_well_formed,
)
from feature_store.errors import StoreError, StoreUnavailable

#: Routes that need no API key: liveness, readiness and the API's documentation (with its
#: assets, shipped in the package under /static), and the operator console, a mounted app that
#: signs operators in with a key itself and checks each page's scope (api/console/).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/static",
        "/console",
    }
)

_bearer = HTTPBearer(
    auto_error=False,  # this module answers 401 itself, in the app's error format
    bearerFormat="rk_<key_id>_<secret>",
    description="An API key from `rapport keys create`.",
)


class NotAuthenticated(Exception):
    """No key, or not a valid one: `reason` says which ("missing" or "invalid")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MissingScope(Exception):
    """The key is valid but does not grant `scope`."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope.value)
        self.scope = scope


class KeyAuthenticator:
    """Looks keys up in a `CredentialStore`, remembering active ones for `ttl_seconds`.

    If the store cannot be reached, a key found active within the last
    `stale_if_error_seconds` is still accepted, so that the decision path can answer degraded
    rather than 503 during an outage; any other key raises `StoreUnavailable`. Times are seconds
    of `clock` (monotonic by default).
    """

    def __init__(
        self,
        store: CredentialStore,
        *,
        ttl_seconds: float,
        stale_if_error_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.stale_if_error_seconds = stale_if_error_seconds
        self.clock = clock
        # key_hash -> (when it was found active, its record); each entry is replaced in one
        # assignment, so threads never see half of one.
        self._found: dict[str, tuple[float, ApiKey]] = {}

    def remembered(self, key: str) -> ApiKey | None:
        """The key's record if it was found active within the TTL; no store access."""
        if not is_well_formed(key):
            return None
        entry = self._found.get(hash_key(key))
        if entry is None or self.clock() - entry[0] >= self.ttl_seconds:
            return None
        return entry[1]

    def look_up(self, key: str) -> ApiKey | None:
        """The key's active record from the store (None if malformed, unknown or revoked)."""
        if not is_well_formed(key):
            return None
        key_hash = hash_key(key)
        try:
            record = active_record(self.store, key_hash)
        except StoreUnavailable:
            entry = self._found.get(key_hash)
            if entry is not None and self.clock() - entry[0] <= self.stale_if_error_seconds:
                return entry[1]
            raise
        if record is None:
            self._found.pop(key_hash, None)
        else:
            self._found[key_hash] = (self.clock(), record)
        return record

    def forget_revoked(self, records: list[ApiKey]) -> int:
        """Forget the remembered keys that `records` (every stored key) show revoked or no
        longer hold; returns how many were forgotten."""
        active = {record.key_hash for record in records if record.active}
        gone = [key_hash for key_hash in list(self._found) if key_hash not in active]
        for key_hash in gone:
            self._found.pop(key_hash, None)
        return len(gone)


async def watch_revocations(keys: KeyAuthenticator, interval_seconds: float) -> None:
    """Every `interval_seconds`, list the stored keys and forget the revoked ones, so that a
    revocation reaches this worker within about one interval whatever the auth cache's TTL.
    Runs until cancelled; a store that cannot be read is tried again at the next interval."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            records = await run_in_threadpool(keys.store.list_keys)
        except StoreError:
            continue  # an outage: keys found valid stay valid as documented (stale-if-error)
        keys.forget_revoked(records)


class ScopeRequirement:
    """The dependency `require(scope)` installs: passes, or raises NotAuthenticated/MissingScope.

    Async, so that a key remembered by the `KeyAuthenticator` costs no thread hop; a store
    lookup runs in the thread pool.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def __repr__(self) -> str:
        return f"require({self.scope.value!r})"

    async def __call__(
        self,
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        settings: Settings = request.app.state.settings
        if not settings.auth_enabled:
            return
        keys: KeyAuthenticator = request.app.state.api_keys
        if bearer is None:
            raise NotAuthenticated("missing")
        key = keys.remembered(bearer.credentials)
        if key is None:
            key = await run_in_threadpool(keys.look_up, bearer.credentials)
        if key is None:
            raise NotAuthenticated("invalid")
        if not key.grants(self.scope):
            raise MissingScope(self.scope)
        request.state.api_key = key


def caller_grants(request: Request, scope: Scope) -> bool:
    """Whether the key that passed this request's `require(...)` also grants `scope` (always,
    with auth turned off). For checks finer than a route's, such as event types."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return True
    key: ApiKey | None = getattr(request.state, "api_key", None)
    return key is not None and key.grants(scope)


def require(scope: Scope) -> params.Depends:
    """A route dependency: `dependencies=[require(Scope.DECISIONS)]`. Shown in the OpenAPI."""
    return params.Security(ScopeRequirement(scope), scopes=[scope.value])


def unauthorized_response(reason: str) -> JSONResponse:
    """The 401 for a key that is `missing` or `invalid` (malformed, unknown or revoked)."""
    # RFC 6750: no error code when no credentials were sent, invalid_token otherwise.
    challenge = "Bearer" if reason == "missing" else 'Bearer error="invalid_token"'
    why = "missing" if reason == "missing" else "malformed, unknown or revoked key"
    return JSONResponse(
        status_code=401,
        headers={"WWW-Authenticate": challenge},
        content=error_body(
            "unauthorized",
            "a valid API key is required: send 'Authorization: Bearer <key>'",
            [{"field": "header.authorization", "reason": why}],
        ),
    )


def install_auth_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> JSONResponse:
        return unauthorized_response(exc.reason)

    @app.exception_handler(MissingScope)
    async def missing_scope(request: Request, exc: MissingScope) -> JSONResponse:
        return JSONResponse(
            status_code=403,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{exc.scope}"'},
            content=error_body(
                "forbidden",
                f"this API key does not have the scope {exc.scope.value!r}",
                [{"field": "header.authorization", "reason": f"needs the scope {exc.scope}"}],
            ),
        )
