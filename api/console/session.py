"""The console's sign-in: an API key checked as the API checks it, then a signed session cookie.

The cookie holds the key's SHA-256 (never the key), a CSRF token and the sign-in time, signed
with a key derived from `identity_secret` (itsdangerous). It is HttpOnly, SameSite=Strict,
Secure when the console is served over https, and lasts `SESSION_SECONDS`. Every request looks
the key up again, so a revoked key is signed out at once, and its scopes are the key's scopes
now.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from api.auth import KeyAuthenticator
from api.console.state import api_state
from api.settings import Settings
from feature_store.credentials import ApiKey, Scope, active_record

SESSION_COOKIE = "rapport_console"
#: A pre-sign-in CSRF token for the sign-in form (double submit: cookie and hidden field).
LOGIN_COOKIE = "rapport_console_login"
SESSION_SECONDS = 30 * 60
COOKIE_PATH = "/console"


class NeedsSignIn(Exception):
    """No session, or an expired, forged or revoked one."""


class MissingConsoleScope(Exception):
    """The signed-in key lacks the page's scope."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope.value)
        self.scope = scope


class BadCsrfToken(Exception):
    """A form was posted without this session's CSRF token."""


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the key's record (name and scopes, no secret) and the session's token."""

    key: ApiKey
    csrf: str

    def grants(self, scope: Scope) -> bool:
        return self.key.grants(scope)


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    # A key of its own, derived: the identity HMAC key is never used for anything else.
    secret = hmac.new(
        settings.identity_secret.get_secret_value().encode(),
        b"rapport-console-session",
        hashlib.sha256,
    ).hexdigest()
    return URLSafeTimedSerializer(secret, salt="rapport-console-session")


def check_key(request: Request, key: str) -> ApiKey | None:
    """The key's active record, looked up as the API looks keys up (None: not a valid key)."""
    keys: KeyAuthenticator = api_state(request).api_keys
    return keys.look_up(key.strip())


def start_session(request: Request, response: Response, key: ApiKey) -> None:
    settings: Settings = api_state(request).settings
    token = _serializer(settings).dumps({"k": key.key_hash, "c": secrets.token_urlsafe(24)})
    _set_cookie(request, response, SESSION_COOKIE, token, SESSION_SECONDS)
    _set_cookie(request, response, LOGIN_COOKIE, "", 0)


def end_session(request: Request, response: Response) -> None:
    """Clear the cookie (with the flags it was set with, so that browsers accept it)."""
    _set_cookie(request, response, SESSION_COOKIE, "", 0)


def current_operator(request: Request) -> Operator:
    """The signed-in operator; raises NeedsSignIn."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise NeedsSignIn
    settings: Settings = api_state(request).settings
    try:
        payload = _serializer(settings).loads(token, max_age=SESSION_SECONDS)
    except BadSignature as exc:  # also SignatureExpired
        raise NeedsSignIn from exc
    if not isinstance(payload, dict) or not {"k", "c"} <= payload.keys():
        raise NeedsSignIn
    keys: KeyAuthenticator = api_state(request).api_keys
    record = active_record(keys.store, str(payload["k"]))
    if record is None:
        raise NeedsSignIn
    return Operator(key=record, csrf=str(payload["c"]))


def login_token(request: Request) -> str:
    """The sign-in form's CSRF token: the one its cookie holds, or a new one."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def set_login_token(request: Request, response: Response, token: str) -> None:
    _set_cookie(request, response, LOGIN_COOKIE, token, SESSION_SECONDS)


def check_login_token(request: Request, submitted: str) -> None:
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise BadCsrfToken


def check_csrf(operator: Operator, submitted: str) -> None:
    if not hmac.compare_digest(operator.csrf.encode(), submitted.encode()):
        raise BadCsrfToken


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
