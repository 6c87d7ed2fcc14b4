"""Logs never hold personal data: no identifiers, no amounts tied to a customer."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import httpx

from api.logs import JsonFormatter


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
