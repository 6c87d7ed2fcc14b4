"""Structured logs without personal data: route templates, never paths, ids or amounts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response

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


def route_template(request: Request) -> str:
    """'/v1/customers/{customer_id}' rather than the path, which may hold an identifier."""
    route = request.scope.get("route")  # set by the router once it matched
    return str(getattr(route, "path", "unmatched"))


async def access_log(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    logger.info(
        "request",
        extra={
            "fields": {
                "method": request.method,
                "route": route_template(request),
                "status": response.status_code,
                "duration_ms": round(1000 * (time.perf_counter() - started), 2),
            }
        },
    )
    return response
