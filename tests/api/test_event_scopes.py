"""Scopes hold for every event type: an `events:write` key cannot state a customer's consents
or preferences through POST /v1/events (that needs `customers:write`, as the routes that change
them do), and nobody posts outcomes or exposures there (each comes through the route that checks
it). A refused event rejects only itself; the rest of the batch is applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.routes.events import EVENT_TYPE_SCOPES, REFUSED_EVENT_TYPES
from api.settings import Settings
from engine.events import EventType
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, bearer, create_key

AT = "2026-11-20T10:00:00Z"


def event(event_id: str, kind: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": "cust-scopes",
        "touchpoint": "app-ios",
        "channel": "mobile_app",
        "type": kind,
        "occurred_at": AT,
        "attributes": attributes,
    }


GRANT_MARKETING = event(
    "ev-consent", "consent_changed", {"purpose": "marketing", "status": "granted"}
)
STATE_SMS = event("ev-pref", "preference_stated", {"key": "contact_channel", "value": "sms"})
WITHDRAWAL = event("ev-request", "request", {"request": "top_up", "amount": 20, "currency": "EUR"})


@pytest.fixture
def writer(settings: Settings, server: LiveServer) -> Iterator[httpx.Client]:
    """A touchpoint's key: events:write only."""
    key = create_key(settings, "events-only", [Scope.EVENTS_WRITE])
    with httpx.Client(base_url=server.url, timeout=10, headers=bearer(key)) as http:
        yield http


def test_an_events_key_cannot_grant_consent_or_state_preferences(
    writer: httpx.Client, client: httpx.Client
) -> None:
    answer = writer.post("/v1/events", json={"events": [GRANT_MARKETING, STATE_SMS, WITHDRAWAL]})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["status"] for r in body["results"]] == ["rejected", "rejected", "accepted"]
    assert body["results"][0]["field"] == "type"
    assert body["results"][0]["error"] == (
        "type: a consent_changed event needs the scope customers:write"
    )
    assert body["results"][1]["error"] == (
        "type: a preference_stated event needs the scope customers:write"
    )
    view = client.get("/v1/customers/cust-scopes").json()
    assert view["consents"] == []
    assert view["stated"] == {}
    assert view["event_count"] == 1


def test_with_customers_write_the_same_events_are_applied(
    settings: Settings, server: LiveServer, client: httpx.Client
) -> None:
    key = create_key(settings, "crm", [Scope.EVENTS_WRITE, Scope.CUSTOMERS_WRITE])
    with httpx.Client(base_url=server.url, timeout=10, headers=bearer(key)) as crm:
        answer = crm.post("/v1/events", json={"events": [GRANT_MARKETING, STATE_SMS]})

    assert [r["status"] for r in answer.json()["results"]] == ["accepted", "accepted"]
    view = client.get("/v1/customers/cust-scopes").json()
    assert [(c["purpose"], c["status"]) for c in view["consents"]] == [("marketing", "granted")]
    assert view["stated"]["contact_channel"]["value"] == "sms"


@pytest.mark.parametrize(
    ("kind", "attributes", "route"),
    [
        (
            "outcome",
            {
                "decision_id": "dec_made_up",
                "target": "offer:x",
                "outcome": "accepted",
                "kind": "action",
                "value": 100000,
            },
            "POST /v1/outcomes",
        ),
        (
            "action_exposed",
            {
                "decision_id": "dec_made_up",
                "action_id": "card_upgrade",
                "delivery_channel": "email",
                "purpose": "marketing",
            },
            "the decision that returned the action",
        ),
    ],
)
def test_outcomes_and_exposures_are_refused_even_with_every_scope(
    client: httpx.Client, kind: str, attributes: dict[str, Any], route: str
) -> None:
    posted = event("ev-forged", kind, attributes)
    answer = client.post("/v1/events", json={"events": [posted, WITHDRAWAL]})

    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert results[0]["status"] == "rejected"
    assert results[0]["field"] == "type"  # refused for its type, not for its attributes
    assert route in results[0]["error"]
    assert results[1]["status"] == "accepted"


#: What each event type needs on POST /v1/events beyond `events:write`: a scope, "refused", or
#: nothing. A new event type fails this inventory until someone decides.
EVENT_TYPE_INVENTORY = {
    "request": None,
    "contact": None,
    "complaint_opened": None,
    "complaint_resolved": None,
    "feedback": None,
    "preference_stated": "customers:write",
    "consent_changed": "customers:write",
    "outcome": "refused",
    "incident_opened": None,
    "incident_resolved": None,
    "action_exposed": "refused",
}


def test_every_event_type_has_a_decided_scope() -> None:
    decided = {
        kind.value: "refused"
        if kind in REFUSED_EVENT_TYPES
        else (EVENT_TYPE_SCOPES[kind].value if kind in EVENT_TYPE_SCOPES else None)
        for kind in EventType
    }
    assert decided == EVENT_TYPE_INVENTORY
