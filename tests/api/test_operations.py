"""What the people who run Rapport read: Prometheus metrics without personal data, and a
request id on every answer and in every log line written while serving it."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import httpx
import pytest

from api.logs import JsonFormatter
from api.settings import Settings
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, bearer, create_key

EVENT = {
    "event_id": "ops-1",
    "customer_id": "cust-ops-4711",
    "touchpoint": "atm-0042",
    "channel": "atm",
    "type": "request",
    "occurred_at": "2026-11-20T10:00:00Z",
    "attributes": {"request": "cash_withdrawal", "amount": 250, "currency": "EUR"},
}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent); `labels` in the order the
    metric declares them."""
    wanted = name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "} "
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line[len(wanted) :])
    return 0.0


@pytest.fixture
def scraper(settings: Settings, server: LiveServer) -> Iterator[httpx.Client]:
    key = create_key(settings, "prometheus", [Scope.METRICS])
    with httpx.Client(base_url=server.url, timeout=10, headers=bearer(key)) as http:
        yield http


def test_metrics_count_requests_and_events_by_route_without_personal_data(
    client: httpx.Client, scraper: httpx.Client
) -> None:
    before = scraper.get("/metrics").text
    client.post("/v1/events", json={"events": [EVENT, {**EVENT, "event_id": "bad id"}]})
    client.get("/v1/customers/cust-ops-4711")
    after = scraper.get("/metrics")

    assert after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    requests = "rapport_http_requests_total"
    route = {"method": "GET", "route": "/v1/customers/{customer_id}", "status": "200"}
    assert sample(text, requests, **route) == sample(before, requests, **route) + 1
    for result, count in (("accepted", 1), ("rejected", 1), ("duplicate", 0)):
        assert sample(text, "rapport_events_total", result=result) == (
            sample(before, "rapport_events_total", result=result) + count
        )
    histogram = "rapport_http_request_duration_seconds_count"
    assert sample(text, histogram, method="POST", route="/v1/events") >= 1
    assert "cust-ops-4711" not in text
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert "/v1/customers/{customer_id}" in routes
    assert all(route == "unmatched" or route.startswith("/") for route in routes)


def test_metrics_need_the_metrics_scope(settings: Settings, server: LiveServer) -> None:
    key = create_key(settings, "teller", [Scope.DECISIONS])
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=bearer(key)).status_code == 403


def test_every_answer_has_a_request_id_and_its_log_lines_carry_it(client: httpx.Client) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("rapport").addHandler(handler)
    try:
        mine = client.get("/v1/customers/nobody", headers={"X-Request-ID": "atm-0042.req-17"})
        theirs = client.get("/healthz")
        odd = client.get("/healthz", headers={"X-Request-ID": "has spaces and /slashes"})
    finally:
        logging.getLogger("rapport").removeHandler(handler)

    assert mine.headers["x-request-id"] == "atm-0042.req-17"
    assert re.fullmatch(r"[0-9a-f]{32}", theirs.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [access] = [line for line in lines if line.get("request_id") == "atm-0042.req-17"]
    assert access["route"] == "/v1/customers/{customer_id}"
    assert access["status"] == 404
    # The line of a request is written once its answer is sent: the last may not be there yet.
    assert {line["request_id"] for line in lines} <= {
        "atm-0042.req-17",
        theirs.headers["x-request-id"],
        odd.headers["x-request-id"],
    }


def test_touchpoints_are_paginated_busiest_first(client: httpx.Client) -> None:
    events = [
        {**EVENT, "event_id": f"tp-{t}-{i}", "touchpoint": f"atm-{t:04d}"}
        for t in range(5)
        for i in range(t + 1)
    ]
    assert client.post("/v1/events", json={"events": events}).status_code == 200

    first = client.get("/v1/touchpoints", params={"limit": 2})
    assert first.headers["x-total-count"] == "5"
    assert [t["touchpoint"] for t in first.json()] == ["atm-0004", "atm-0003"]
    following = first.headers["link"].split(";")[0].strip("<>")
    second = client.get(following)
    assert [t["touchpoint"] for t in second.json()] == ["atm-0002", "atm-0001"]
    last = client.get("/v1/touchpoints", params={"limit": 2, "offset": 4})
    assert [t["touchpoint"] for t in last.json()] == ["atm-0000"]
    assert "link" not in last.headers
