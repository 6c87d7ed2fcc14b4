"""The fast lane: `POST /v1/decisions`, the hottest route, served without the framework's walk.

FastAPI serves a request by walking the router (each included router's routes tested in turn),
solving the route's dependencies (the bearer scheme, the scope check, the serving state: a
graph resolved per request) and parsing the body into a dict before validating it. For a
decision that cost ~0.2 ms of CPU, as much as the rest of the web stack together. This ASGI
layer, inside every other middleware (the access log, the overload guard and the input guard
still see the request), answers the ordinary question directly:

* the body is validated from its bytes in one pass (`DecisionIn.model_validate_json`);
* the caller's key was checked by the input guard, which left it on the request's state: the
  lane checks its scope (`decisions`) itself;
* the answer is the route's own (`api.routes.decisions.answer`), with the route recorded on
  the scope so that logs and metrics name it as they name every route.

Anything else (another route, a body that is not valid JSON for `DecisionIn`, a content type
other than JSON, a key without the scope, a key the guard could not look up in an outage)
goes down the ordinary path, with the body replayed: every error is the framework's own, in
the same shape and with the same status as before, and the OpenAPI document is unchanged.
"""

from __future__ import annotations

from typing import Any

import fastapi.routing
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import get_decision_serving
from api.limits import replay
from api.routes.decisions import answer
from api.schemas import DecisionIn
from api.settings import Settings
from feature_store.credentials import ApiKey
from feature_store.credentials import Scope as KeyScope

PATH = "/v1/decisions"


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None  # the route's context in the app, found on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await _body(receive)
        if body is None:  # the client left
            return
        question = _question(scope, body)
        if question is None:
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"] = self._route or self._find_route(scope)
        serving = await get_decision_serving(Request(scope, receive))
        await answer(question, serving)(scope, receive, send)

    def _find_route(self, scope: Scope) -> Any:
        routes = scope["app"].routes
        contexts = getattr(fastapi.routing, "iter_route_contexts", None)
        for route in contexts(routes) if contexts is not None else routes:
            if getattr(route, "path", None) == PATH and "POST" in (route.methods or ()):
                self._route = route
                return route
        raise LookupError(f"no route serves POST {PATH}")


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _question(scope: Scope, body: bytes) -> DecisionIn | None:
    """The validated question, or None for the ordinary path to answer (see the docstring)."""
    if not _is_json(scope) or not _granted(scope):
        return None
    try:
        return DecisionIn.model_validate_json(body)
    except ValidationError:
        return None


def _is_json(scope: Scope) -> bool:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _granted(scope: Scope) -> bool:
    settings: Settings = scope["app"].state.settings
    if not settings.auth_enabled:
        return True
    key: ApiKey | None = scope.get("state", {}).get("api_key")
    return key is not None and key.grants(KeyScope.DECISIONS)
