"""Structured logs without personal data: route templates, never paths, ids or amounts."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("rapport.access")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("rapport")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


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

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")  # set by the router once it matched
            logger.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "route": str(getattr(route, "path", "unmatched")),
                        "status": status,
                        "duration_ms": round(1000 * (time.perf_counter() - started), 2),
                    }
                },
            )
