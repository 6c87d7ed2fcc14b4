"""Structured logs without personal data: route templates, never paths, ids or amounts.

Every line is one JSON object with its UTC time. An exception is logged as its types and the
places it passed through (file, line, function), never its message or its values: messages of
validation errors quote the input (pydantic's `input_value`), and the input of this API is
personal data (customer ids, identifiers, amounts).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import observe_request

logger = logging.getLogger("rapport.access")

#: The id of the request being served, in every log line written while serving it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


#: Where the project's code lives: frames are named relative to it (site-packages as is).
_ROOT = Path(__file__).resolve().parent.parent


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = scrubbed_exception(record.exc_info[1])
        return json.dumps(entry)


def scrubbed_exception(exc: BaseException) -> dict[str, Any]:
    """The exception's types (its causes included) and the frames it passed through, without
    its message or any value: what an operator needs to find the bug, nothing about who."""
    types: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(types) < 8:
        types.append(f"{type(seen).__module__}.{type(seen).__qualname__}")
        seen = seen.__cause__ or seen.__context__
    return {"types": types, "frames": _frames(exc.__traceback__)}


def _frames(tb: TracebackType | None) -> list[str]:
    frames = []
    for frame in traceback.extract_tb(tb)[-20:]:
        path = Path(frame.filename)
        try:
            name = path.resolve().relative_to(_ROOT).as_posix()
        except ValueError:
            name = path.name
        frames.append(f"{name}:{frame.lineno} in {frame.name}")
    return frames


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("rapport")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def log_unhandled(exc: BaseException) -> None:
    """An error no handler answered (the client got a 500): logged here, scrubbed, so that the
    server does not log it with its message."""
    logging.getLogger("rapport.errors").error("unhandled error", exc_info=exc)


class AccessLog:
    """Pure ASGI middleware (cheaper than Starlette's `BaseHTTPMiddleware`): one JSON line per
    request with method, route template, status and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")  # set by the router once it matched
            template = str(getattr(route, "path", "unmatched"))
            seconds = time.perf_counter() - started
            observe_request(scope["method"], template, status, seconds)
            logger.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(1000 * seconds, 2),
                    }
                },
            )
            REQUEST_ID.reset(token)


def _request_id(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is a plain token (so a touchpoint can follow its
    own ids through), else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID_PATTERN.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex
