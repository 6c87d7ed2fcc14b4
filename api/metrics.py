"""Prometheus metrics of the API, served at `GET /metrics` (scope `metrics`, api/routes/metrics.py).

Labels carry route templates, methods, statuses and outcomes, never an id or a value of a
customer's. With several worker processes, set `PROMETHEUS_MULTIPROC_DIR` to an empty folder
shared by the workers (`rapport serve --workers N` does it for you): each worker writes its
samples there and `/metrics` adds them up, so a scrape sees the whole server, not one worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "rapport_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "rapport_http_request_duration_seconds",
    "Time from the request's arrival to its answer's last byte, by method and route template.",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EVENTS = Counter(
    "rapport_events",
    "Events posted to POST /v1/events, by result (accepted, duplicate, rejected).",
    ["result"],
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every worker's metrics, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
