"""What one event or one decision may carry is bounded, each violation rejected alone with its
field and reason, and the rest of a batch applied (api/bounds.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

NOW = datetime.now(UTC)


def event(event_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": "cust-bounds",
        "touchpoint": "web",
        "channel": "web",
        "type": "request",
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
        "attributes": {"request": "top_up", "amount": 20, "currency": "EUR"},
    } | changes


def posted(client: httpx.Client, bad: Any) -> dict[str, Any]:
    """Post `bad` beside a valid event; the bad one's result (the valid one must pass)."""
    answer = client.post("/v1/events", json={"events": [bad, event("ev-good")]})
    assert answer.status_code == 200, answer.text
    bad_result, good_result = answer.json()["results"]
    assert good_result["status"] == "accepted"
    assert bad_result["status"] == "rejected"
    return dict(bad_result)


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        (event("ev-long", attributes={"note": "x" * 5000}), "attributes.note", "at most 1024"),
        (
            event("ev-keys", attributes={f"k{i}": i for i in range(10_000)}),
            "attributes",
            "at most 64 keys",
        ),
        (
            event("ev-deep", attributes={"a": {"b": {"c": {"d": {"e": 1}}}}}),
            "attributes",
            "nested at most 4 deep",
        ),
        (
            event(
                "ev-ids",
                identities=[{"type": "email", "value": f"u{i}@example.com"} for i in range(10_000)],
            ),
            "identities",
            "at most 8 identifiers",
        ),
        (event("ev-nul", touchpoint="we\x00b"), "touchpoint", "NUL"),
        (event("ev-0001", occurred_at="0001-01-01T00:00:00Z"), "occurred_at", "in the past"),
        (event("ev-2100", occurred_at="2100-01-01T00:00:00Z"), "occurred_at", "in the future"),
        (event("ev-9999", occurred_at="9999-12-31T00:00:00Z"), "occurred_at", "in the future"),
        (event("ev-number", occurred_at=1_700_000_000), "occurred_at", "ISO 8601"),
    ],
    ids=["long-string", "10k-keys", "deep", "10k-identities", "nul", "0001", "2100", "9999", "num"],
)
def test_an_event_over_a_bound_is_rejected_alone(
    client: httpx.Client, bad: dict[str, Any], field: str, reason: str
) -> None:
    result = posted(client, bad)

    assert result["field"] == field
    assert reason in result["error"]


def test_a_batch_element_that_is_not_an_object_rejects_only_itself(client: httpx.Client) -> None:
    result = posted(client, "x")

    assert (result["field"], result["error"]) == ("event", "event: must be an object")


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({f"k{i}": i for i in range(20)}, "body.context"),
        ({"nested": {"a": 1}}, "body.context.nested"),
        ({"many": list(range(50))}, "body.context.many"),
        ({"note": "x" * 2000}, "body.context.note"),
        ({"request": "cash\x00withdrawal"}, "body.context.request"),
    ],
    ids=["keys", "nested", "long-list", "long-string", "nul"],
)
def test_a_decision_context_over_a_bound_is_a_422_naming_it(
    client: httpx.Client, context: dict[str, Any], field: str
) -> None:
    question = {"customer_id": "c", "touchpoint": "atm-0042", "channel": "atm", "context": context}
    answer = client.post("/v1/decisions", json=question)

    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_a_small_scalar_context_is_accepted(client: httpx.Client) -> None:
    context = {"request": "cash_withdrawal", "amount": 200, "flags": ["a", "b"], "x": None}
    question = {"customer_id": "c", "touchpoint": "atm-0042", "channel": "atm", "context": context}

    assert client.post("/v1/decisions", json=question).status_code == 200
