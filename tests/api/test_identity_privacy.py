"""One customer across identifiers, consents, export and erasure, over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

NOW = datetime.now(UTC).replace(microsecond=0)
CARD = {"type": "card", "value": "tok_9f8e7d6c"}
EMAIL = {"type": "email", "value": "Ann.Rossi@Example.com"}


def atm_withdrawals_by_card(weeks: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"card-w{week}",
            "identity": CARD,
            "touchpoint": "atm-0042",
            "channel": "atm",
            "type": "request",
            "occurred_at": (NOW - timedelta(weeks=weeks - week)).isoformat(),
            "attributes": {
                "request": "cash_withdrawal",
                "amount": 200,
                "currency": "EUR",
                "receipt": False,
            },
        }
        for week in range(weeks)
    ]


def web_login(event_id: str, *identities: dict[str, str]) -> dict[str, Any]:
    first, *more = identities
    return {
        "event_id": event_id,
        "identity": first,
        "identities": more,
        "touchpoint": "web",
        "channel": "web",
        "type": "contact",
        "occurred_at": NOW.isoformat(),
        "attributes": {},
    }


def decide(client: httpx.Client, **who: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/decisions", json={**who, "touchpoint": "atm-0099", "channel": "atm"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_habit_learned_by_card_at_the_atm_is_known_through_email(client: httpx.Client) -> None:
    posted = client.post("/v1/events", json={"events": atm_withdrawals_by_card()}).json()
    assert posted["accepted"] == 6
    by_card = decide(client, identity=CARD)
    assert by_card["defaults"][0]["values"]["amount"] == 200
    assert decide(client, identity=EMAIL)["defaults"] == []  # not linked yet

    # A web login carrying the card and the email links them.
    assert (
        client.post("/v1/events", json={"events": [web_login("login-1", EMAIL, CARD)]}).json()[
            "accepted"
        ]
        == 1
    )
    by_email = decide(client, identity=EMAIL)
    assert by_email["customer_id"] == by_card["customer_id"]
    assert by_email["defaults"][0]["values"] == {"amount": 200, "currency": "EUR", "receipt": False}


def test_linking_merges_two_known_customers(client: httpx.Client) -> None:
    client.post("/v1/events", json={"events": atm_withdrawals_by_card()})
    client.post("/v1/events", json={"events": [web_login("login-1", EMAIL)]})
    by_card, by_email = decide(client, identity=CARD), decide(client, identity=EMAIL)
    card_customer, email_customer = by_card["customer_id"], by_email["customer_id"]
    assert card_customer != email_customer
    # Each action a decision returned was recorded as delivered (for caps): events too.
    delivered = len(by_card["actions"]) + len(by_email["actions"])

    linked = client.post("/v1/identities/link", json={"identities": [CARD, EMAIL]})
    assert linked.status_code == 200, linked.text
    survivor = linked.json()["customer_id"]
    assert linked.json()["merged"] == [max(card_customer, email_customer)]
    view = client.get(f"/v1/customers/{survivor}").json()
    assert view["event_count"] == 7 + delivered
    assert decide(client, identity=EMAIL)["defaults"]


def test_bad_identities_are_refused_with_the_field(client: httpx.Client) -> None:
    event = {**atm_withdrawals_by_card()[0], "identity": {"type": "email", "value": "not-an-email"}}
    body = client.post("/v1/events", json={"events": [event]}).json()
    assert body["rejected"] == 1
    assert body["results"][0]["field"] == "identities.0"
    assert "not a valid email" in body["results"][0]["error"]
    anonymous = {k: v for k, v in event.items() if k != "identity"}
    assert (
        client.post("/v1/events", json={"events": [anonymous]}).json()["results"][0]["field"]
        == "customer_id"
    )
    response = client.post(
        "/v1/identities/link", json={"identities": [{"type": "fax", "value": "1"}]}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("body.identities.0.type")


def test_refusing_profiling_forgets_what_was_learned(client: httpx.Client) -> None:
    client.post("/v1/events", json={"events": atm_withdrawals_by_card()})
    customer = decide(client, identity=CARD)["customer_id"]
    response = client.put(
        f"/v1/customers/{customer}/consents",
        json={"consents": [{"purpose": "profiling", "status": "revoked"}], "source": "app-privacy"},
    )
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["habits"] == []
    assert view["request_channels"] == []
    assert [(c["purpose"], c["channel"], c["status"]) for c in view["consents"]] == [
        ("profiling", "*", "revoked")
    ]
    assert decide(client, customer_id=customer)["defaults"] == []


def test_no_contact_channel_without_consent(client: httpx.Client) -> None:
    client.post("/v1/events", json={"events": atm_withdrawals_by_card()})
    customer = decide(client, identity=CARD)["customer_id"]
    client.put(
        f"/v1/customers/{customer}/consents",
        json={"consents": [{"purpose": "service", "channel": "sms", "status": "denied"}]},
    )
    client.put(
        f"/v1/customers/{customer}/preferences", json={"preferences": {"contact_channel": "sms"}}
    )
    assert decide(client, customer_id=customer)["channel"]["channel"] != "sms"
    client.put(
        f"/v1/customers/{customer}/consents",
        json={"consents": [{"purpose": "service", "status": "denied"}]},
    )
    assert decide(client, customer_id=customer)["channel"] is None


def test_export_then_erase(client: httpx.Client) -> None:
    client.post(
        "/v1/events", json={"events": [*atm_withdrawals_by_card(), web_login("l", EMAIL, CARD)]}
    )
    decision = decide(client, identity=CARD)
    customer = decision["customer_id"]
    export = client.get(f"/v1/customers/{customer}/export")
    assert export.status_code == 200, export.text
    body = export.json()
    assert sorted(i["masked"] for i in body["identities"]) == ["***7d6c", "a***@example.com"]
    sent = [e for e in body["events"] if e["type"] != "action_exposed"]
    delivered = [e for e in body["events"] if e["type"] == "action_exposed"]
    assert len(sent) == 7
    assert len(delivered) == len(decision["actions"])
    assert body["profile"]["event_count"] == 7 + len(delivered)
    assert len(body["decisions"]) >= 1
    assert "ann.rossi@example.com" not in export.text
    assert "tok_9f8e7d6c" not in export.text

    erased = client.delete(f"/v1/customers/{customer}")
    assert erased.json() == {"customer_id": customer, "erased": True, "removed": True}
    assert client.get(f"/v1/customers/{customer}/export").status_code == 404
    assert client.get(f"/v1/customers/{customer}").status_code == 404
    assert client.delete(f"/v1/customers/{customer}").json()["removed"] is False
    # Replaying the old events cannot bring the customer back...
    replay = client.post(
        "/v1/events",
        json={"events": [{**e, "customer_id": customer} for e in atm_withdrawals_by_card()]},
    ).json()
    assert replay["rejected"] == 6
    assert "erased" in replay["results"][0]["error"]
    # ...but the same card, unlinked by the erasure, starts a new relationship.
    assert decide(client, identity=CARD)["customer_id"] == "anonymous"
