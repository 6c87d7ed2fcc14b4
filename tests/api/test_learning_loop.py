"""The learning loop end to end over HTTP: events -> profile -> defaults -> outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

NOW = datetime.now(UTC).replace(microsecond=0)


def withdrawal(
    event_id: str, at: datetime, customer: str = "cust-42", **extra: Any
) -> dict[str, Any]:
    attributes = {"request": "cash_withdrawal", "amount": 200, "currency": "EUR", "receipt": False}
    attributes.update(extra)
    return {
        "event_id": event_id,
        "customer_id": customer,
        "touchpoint": "atm-0042",
        "channel": "atm",
        "type": "request",
        "occurred_at": at.isoformat(),
        "attributes": attributes,
    }


def six_weeks_of_withdrawals(customer: str = "cust-42") -> list[dict[str, Any]]:
    return [
        withdrawal(f"{customer}-w{week}", NOW - timedelta(weeks=6 - week), customer)
        for week in range(6)
    ]


def decide(client: httpx.Client, customer: str = "cust-42", channel: str = "atm") -> dict[str, Any]:
    response = client.post(
        "/v1/decisions",
        json={"customer_id": customer, "touchpoint": "atm-0042", "channel": channel, "context": {}},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_atm_learns_the_usual_withdrawal_and_stops_offering_it_after_three_declines(
    client: httpx.Client,
) -> None:
    posted = client.post("/v1/events", json={"events": six_weeks_of_withdrawals()})
    assert posted.status_code == 200
    assert posted.json()["accepted"] == 6

    decision = decide(client)
    assert decision["degraded"] is False
    [default] = decision["defaults"]
    assert default["id"] == "default:cash_withdrawal"
    assert default["request"] == "cash_withdrawal"
    assert default["values"] == {"amount": 200, "currency": "EUR", "receipt": False}
    assert default["reasons"]["en"] == "6 of your last 6 withdrawals were 200 EUR, no receipt"
    assert default["reasons"]["it"].startswith("6 dei tuoi ultimi 6 prelievi")
    assert 0 < default["confidence"] <= 1

    for _ in range(3):
        decision = decide(client)
        assert decision["defaults"], "offered until declined three times"
        answer = client.post(
            "/v1/outcomes",
            json={
                "decision_id": decision["decision_id"],
                "id": "default:cash_withdrawal",
                "outcome": "declined",
            },
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "accepted"
    assert decide(client)["defaults"] == []

    habits = client.get("/v1/customers/cust-42").json()["habits"]
    assert [(h["request"], h["offered"], h["declines"]) for h in habits] == [
        ("cash_withdrawal", False, 3)
    ]


def test_posting_the_same_batch_twice_reports_duplicates_and_changes_nothing(
    client: httpx.Client,
) -> None:
    batch = {"events": six_weeks_of_withdrawals()}
    assert client.post("/v1/events", json=batch).json()["accepted"] == 6
    as_of = {"as_of": NOW.isoformat()}
    before = client.get("/v1/customers/cust-42", params=as_of).json()
    again = client.post("/v1/events", json=batch).json()
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 6, 0)
    assert {r["status"] for r in again["results"]} == {"duplicate"}
    after = client.get("/v1/customers/cust-42", params=as_of).json()
    assert after == before
    assert after["event_count"] == 6


def test_a_bad_event_is_rejected_with_its_reason_and_the_good_ones_are_applied(
    client: httpx.Client,
) -> None:
    good = six_weeks_of_withdrawals()[:2]
    naive_time = {**good[0], "event_id": "bad-1", "occurred_at": "2026-01-01T10:00:00"}
    negative = withdrawal("bad-2", NOW, amount=-5)
    unknown_channel = {**good[1], "event_id": "bad-3", "channel": "fax"}
    body = client.post(
        "/v1/events", json={"events": [good[0], naive_time, negative, good[1], unknown_channel]}
    ).json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    statuses = [(r["event_id"], r["status"], r.get("field")) for r in body["results"]]
    assert statuses == [
        ("cust-42-w0", "accepted", None),
        ("bad-1", "rejected", "occurred_at"),
        ("bad-2", "rejected", "attributes.amount"),
        ("cust-42-w1", "accepted", None),
        ("bad-3", "rejected", "channel"),
    ]
    assert "timezone" in body["results"][1]["error"]
    assert client.get("/v1/customers/cust-42").json()["event_count"] == 2


def test_batch_size_and_shape_are_checked(client: httpx.Client) -> None:
    for body, field in [
        ({"events": []}, "body.events"),
        ({"events": [withdrawal(f"e{i}", NOW) for i in range(1001)]}, "body.events"),
        ({}, "body.events"),
    ]:
        response = client.post("/v1/events", json=body)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == field
    assert client.get("/v1/customers/cust-42").status_code == 404


def test_a_stated_contact_preference_beats_a_learned_one(client: httpx.Client) -> None:
    calls = [
        {
            "event_id": f"c{i}",
            "customer_id": "cust-7",
            "touchpoint": "cc-agent-017",
            "channel": "call_center",
            "type": "contact",
            "occurred_at": (NOW - timedelta(days=i)).isoformat(),
            "attributes": {},
        }
        for i in range(8)
    ]
    client.post("/v1/events", json={"events": calls})
    learned = decide(client, "cust-7", channel="web")["channel"]
    assert (learned["channel"], learned["source"]) == ("call_center", "learned")

    stated = client.put(
        "/v1/customers/cust-7/preferences",
        json={"preferences": {"contact_channel": "sms"}, "source": "web-profile"},
    )
    assert stated.status_code == 200, stated.text
    assert stated.json()["stated"]["contact_channel"]["value"] == "sms"
    assert stated.json()["stated"]["contact_channel"]["source"] == "web-profile"
    channel = decide(client, "cust-7", channel="web")["channel"]
    assert (channel["channel"], channel["source"], channel["probability"]) == ("sms", "stated", 1.0)
    assert channel["reasons"]["it"] == "Ci hai detto che preferisci essere contattato via SMS"


def test_a_bad_preference_is_refused_whole(client: httpx.Client) -> None:
    client.post("/v1/events", json={"events": six_weeks_of_withdrawals()})
    response = client.put(
        "/v1/customers/cust-42/preferences",
        json={"preferences": {"contact_channel": "sms", "receipt": "maybe"}},
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "body.preferences.receipt", "reason": "must be true or false"}
    ]
    assert client.get("/v1/customers/cust-42").json()["stated"] == {}


def test_outcomes_join_to_a_logged_decision(client: httpx.Client) -> None:
    client.post("/v1/events", json={"events": six_weeks_of_withdrawals()})
    decision = decide(client)
    unknown = client.post(
        "/v1/outcomes",
        json={"decision_id": "dec_nope", "id": "default:cash_withdrawal", "outcome": "accepted"},
    )
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["field"] == "decision_id"
    wrong_item = client.post(
        "/v1/outcomes",
        json={
            "decision_id": decision["decision_id"],
            "id": "default:top_up",
            "outcome": "accepted",
        },
    )
    assert wrong_item.status_code == 422
    assert wrong_item.json()["errors"][0]["field"] == "id"
    accept = {
        "decision_id": decision["decision_id"],
        "id": "default:cash_withdrawal",
        "outcome": "accepted",
    }
    assert client.post("/v1/outcomes", json=accept).json()["status"] == "accepted"
    assert client.post("/v1/outcomes", json=accept).json()["status"] == "duplicate"
    [habit] = client.get("/v1/customers/cust-42").json()["habits"]
    assert habit["accepted"] == 1


def test_decision_request_is_validated(client: httpx.Client) -> None:
    response = client.post("/v1/decisions", json={"customer_id": "c", "touchpoint": "atm-1"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.channel"


def test_a_new_customer_gets_no_defaults_and_a_population_channel(client: httpx.Client) -> None:
    decision = decide(client, "never-seen")
    assert decision["defaults"] == []
    assert decision["channel"]["source"] == "population"
    assert client.get("/v1/customers/never-seen").status_code == 404


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ok"
    assert client.get("/openapi.json").json()["info"]["title"] == "Rapport"


def test_a_stored_profile_that_no_longer_parses_is_not_blamed_on_the_request(
    client: httpx.Client, settings: Any
) -> None:
    import sqlite3

    client.post("/v1/events", json={"events": six_weeks_of_withdrawals()})
    path = settings.store.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE profiles SET body = '{\"seen\": [[1, \"x\"]]}' WHERE customer_id = 'cust-42'"
        )
    response = client.get("/v1/customers/cust-42")
    assert response.status_code == 500  # our data, not the caller's input: never a 422
    body = response.text
    # Nothing in the answer blames the request, nor shows the stored profile or why it failed
    # to parse (the customer's data, and the store's internals).
    assert "invalid_request" not in body
    assert "body." not in body
    for leaked in ("validation error", "Field required", "seen", "cust-42", "int_parsing"):
        assert leaked not in body, leaked
    assert response.json() == {
        "error": "internal_error",
        "message": "internal error; it has been logged",
        "errors": [],
    }
