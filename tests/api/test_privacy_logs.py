"""Logs never hold personal data: no identifiers, no amounts tied to a customer."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from typing import Any

import httpx

from api.app import create_app
from api.logs import JsonFormatter
from api.settings import Settings
from engine.events import Event
from tests.api.conftest import LiveServer


def test_access_logs_name_routes_not_customers(client: httpx.Client) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("rapport").addHandler(handler)
    try:
        event = {
            "event_id": "priv-1",
            "customer_id": "cust-secret-9931",
            "touchpoint": "atm-0042",
            "channel": "atm",
            "type": "request",
            "occurred_at": datetime.now(UTC).isoformat(),
            "attributes": {"request": "cash_withdrawal", "amount": 4321, "currency": "EUR"},
        }
        client.post("/v1/events", json={"events": [event]})
        client.get("/v1/customers/cust-secret-9931")
        client.post(
            "/v1/decisions",
            json={"customer_id": "cust-secret-9931", "touchpoint": "atm-0042", "channel": "atm"},
        )
    finally:
        logging.getLogger("rapport").removeHandler(handler)
    logged = stream.getvalue()
    assert '"route": "/v1/customers/{customer_id}"' in logged
    assert "cust-secret-9931" not in logged
    assert "4321" not in logged


def test_an_internal_error_logs_no_personal_data(settings: Settings) -> None:
    """An error no handler answers (here: a validation error raised inside a route, whose
    message quotes the input) is a 500 in the error format, and its log line holds the error's
    types and frames, never the email, the customer id or the amount it was raised for."""
    app = create_app(settings)

    @app.post("/boom")
    def boom(body: dict[str, Any]) -> None:
        Event.model_validate({**body, "type": "no-such-type"})

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("rapport").addHandler(handler)
    personal = {
        "event_id": "ev-1",
        "customer_id": "cust-ann-rossi",
        "touchpoint": "web",
        "channel": "web",
        "occurred_at": "2026-11-20T10:00:00Z",
        "attributes": {"email": "ann.rossi@example.com", "amount": 98765},
    }
    try:
        with LiveServer.for_app(app) as live:
            answer = httpx.post(f"{live.url}/boom", json=personal, timeout=10)
    finally:
        logging.getLogger("rapport").removeHandler(handler)

    assert answer.status_code == 500
    assert answer.json() == {
        "error": "internal_error",
        "message": "internal error; it has been logged",
        "errors": [],
    }
    logged = stream.getvalue()
    [line] = [json.loads(text) for text in logged.splitlines() if '"unhandled error"' in text]
    assert line["error"]["types"][0] == "pydantic_core._pydantic_core.ValidationError"
    assert any("test_privacy_logs.py" in frame for frame in line["error"]["frames"])
    assert "time" in line
    for secret in ("ann.rossi", "cust-ann-rossi", "98765", "input_value"):
        assert secret not in logged
