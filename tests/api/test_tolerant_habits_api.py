"""Over HTTP: bills that vary around the 1st become 'about 62 EUR' near the next 1st."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

BILLS = ("61.20", "63.80", "62.45", "60.90", "64.10")
DAYS_FROM_THE_1ST = (0, 1, -2, 0, 2)


def _first_of_month(moment: datetime, months_back: int) -> datetime:
    year, month = moment.year, moment.month - months_back
    while month < 1:
        year, month = year - 1, month + 12
    return datetime(year, month, 1, 10, tzinfo=UTC)


def bills(customer: str, target: datetime) -> list[dict[str, Any]]:
    events = []
    for n, (amount, offset) in enumerate(zip(BILLS, DAYS_FROM_THE_1ST, strict=True)):
        at = _first_of_month(target, 5 - n) + timedelta(days=offset)
        events.append(
            {
                "event_id": f"{customer}-bill-{n}",
                "customer_id": customer,
                "touchpoint": "web-billing",
                "channel": "web",
                "type": "request",
                "occurred_at": at.isoformat(),
                "attributes": {"request": "bill_payment", "amount": amount, "currency": "EUR"},
            }
        )
    return events


def test_bills_that_vary_are_offered_as_about_62_eur_near_the_next_1st(
    client: httpx.Client,
) -> None:
    now = datetime.now(UTC)
    target = _first_of_month(now, 0)
    if target > now:
        target = _first_of_month(now, 1)
    posted = client.post("/v1/events", json={"events": bills("cust-bills", target)})
    assert posted.status_code == 200, posted.text
    assert posted.json()["accepted"] == 5

    def decide(at: datetime) -> dict[str, Any]:
        """The answer, with the trace its logged decision keeps (GET /v1/decisions/{id})."""
        response = client.post(
            "/v1/decisions",
            json={
                "customer_id": "cust-bills",
                "touchpoint": "web-billing",
                "channel": "web",
                "at": at.isoformat(),
            },
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        logged = client.get(f"/v1/decisions/{answer['decision_id']}")
        assert logged.status_code == 200, logged.text
        answer["habits"] = logged.json()["habits"]
        return answer

    decision = decide(target - timedelta(hours=2))
    [default] = decision["defaults"]
    assert default["values"] == {"amount": 62, "currency": "EUR"}
    assert default["reasons"]["en"] == (
        "5 of your last 5 bill payments were about 62 EUR, around the 1st of each month"
    )
    assert default["reasons"]["it"] == (
        "5 dei tuoi ultimi 5 pagamenti erano di circa 62 EUR, intorno al giorno 1 di ogni mese"
    )
    [trace] = decision["habits"]
    assert trace["status"] == "offered"

    mid_month = decide(target - timedelta(days=14))
    assert mid_month["defaults"] == []
    [trace] = mid_month["habits"]
    assert trace["status"] == "not_due"
    assert trace["reasons"]["en"].startswith("Not offered: not due yet")

    view = client.get("/v1/customers/cust-bills").json()
    [habit] = view["habits"]
    assert (habit["kind"], habit["rhythm"]) == ("approximate", "monthly:1")
