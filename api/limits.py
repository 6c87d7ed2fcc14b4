"""Bounded input, enforced before anything is parsed: the key, then the body's size.

A pure ASGI middleware (Starlette's `BaseHTTPMiddleware` costs a task per request):

1. **The key first.** A request to a guarded route (`/v1/...`) without a valid API key is a 401
   before a byte of its body is read: a client without a key cannot make the worker read and
   parse a large body. The route's own `require(scope)` still checks the scope (403).
2. **The body's size**, per route (`RAPPORT_BODY_LIMIT_*`): a `Content-Length` over the limit
   is a 413 at once; a body streamed without one is counted as it arrives and refused (413) the
   moment it passes the limit. The body is then handed to the app from memory.

Both answers are in the error format (`api.errors.error_body`).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import PUBLIC_PATHS, KeyAuthenticator, unauthorized_response
from api.errors import error_body
from feature_store.errors import StoreUnavailable


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The largest body each route takes, in bytes."""

    events: int
    decisions: int
    default: int

    def for_path(self, path: str) -> int:
        if path == "/v1/events":
            return self.events
        if path in ("/v1/decisions", "/v1/outcomes"):
            return self.decisions
        return self.default


class InputGuard:
    def __init__(self, app: ASGIApp, *, limits: BodyLimits, auth_enabled: bool) -> None:
        self.app = app
        self.limits = limits
        self.auth_enabled = auth_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.auth_enabled and _guarded(scope) and not await _has_valid_key(scope):
            reason = "missing" if _authorization(scope) is None else "invalid"
            await unauthorized_response(reason)(scope, receive, send)
            return
        limit = self.limits.for_path(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(b"".join(chunks), receive), send)


def _guarded(scope: Scope) -> bool:
    return (
        scope["method"] != "OPTIONS"  # CORS preflights carry no key
        and scope["path"].startswith("/v1/")
        and scope["path"] not in PUBLIC_PATHS
    )


def _authorization(scope: Scope) -> str | None:
    """The bearer credentials; None without them (no header, or another scheme), as FastAPI's
    `HTTPBearer` reads them."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() or None if scheme.lower() == "bearer" else None
    return None


async def _has_valid_key(scope: Scope) -> bool:
    """Whether the request carries an active key. During a store outage this answers True and
    leaves the verdict to the route (which may accept a recently seen key, or answer 503).

    The key found is kept on the request's state (`request.state.api_key`, as the routes'
    `require(scope)` sets it), so the fast lane (`api.fast_lane`) checks its scope without
    looking it up again."""
    key = _authorization(scope)
    if not key:
        return False
    keys: KeyAuthenticator = scope["app"].state.api_keys
    found = keys.remembered(key)
    if found is None:
        try:
            found = await run_in_threadpool(keys.look_up, key)
        except StoreUnavailable:
            return True
        if found is None:
            return False
    scope.setdefault("state", {})["api_key"] = found
    return True


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        status_code=413,
        content=error_body(
            "body_too_large",
            f"the body is larger than this route takes ({limit:,} bytes)",
            [{"field": "body", "reason": f"at most {limit} bytes"}],
        ),
    )


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then the client's messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
