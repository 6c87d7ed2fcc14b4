"""Erasure holds: a decision for an erased id is answered but stores nothing under that id, a
DELETE of an id the store never held is a 404 that records nothing, and an erased id is known
to the store at the cost of one lookup. On SQLite and on Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.settings import Settings
from feature_store.credentials import Scope
from feature_store.factory import open_store
from tests.api.conftest import LiveServer, bearer, create_key

DECISION = {"customer_id": "cust-gone", "touchpoint": "atm-0042", "channel": "atm"}


@pytest.fixture
def http(store_settings: Settings) -> Iterator[httpx.Client]:
    key = create_key(store_settings, "privacy-officer", Scope)
    with (
        LiveServer(store_settings) as server,
        httpx.Client(base_url=server.url, timeout=10, headers=bearer(key)) as client,
    ):
        yield client


def withdrawal(event_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "customer_id": "cust-gone",
        "touchpoint": "atm-0042",
        "channel": "atm",
        "type": "request",
        "occurred_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "attributes": {"request": "cash_withdrawal", "amount": 200, "currency": "EUR"},
    }


def test_a_decision_for_an_erased_customer_stores_nothing_under_their_id(
    http: httpx.Client, store_settings: Settings
) -> None:
    assert http.post("/v1/events", json={"events": [withdrawal("ev-1")]}).json()["accepted"] == 1
    assert http.delete("/v1/customers/cust-gone").json()["removed"] is True

    answer = http.post("/v1/decisions", json=DECISION)

    assert answer.status_code == 200
    decision = answer.json()
    assert decision["degraded"] is True
    assert decision["defaults"] == decision["actions"] == []
    assert http.get(f"/v1/decisions/{decision['decision_id']}").status_code == 404
    assert http.get("/v1/customers/cust-gone/export").status_code in (404, 410)
    with closing(open_store(store_settings.store, store_settings.engine)) as store:
        assert store.read_profile("cust-gone") is None
        assert store.export_customer("cust-gone") is None
        assert store.is_erased("cust-gone")


def test_deleting_an_id_never_held_is_a_404_and_blocks_nothing(
    http: httpx.Client, store_settings: Settings
) -> None:
    answer = http.delete("/v1/customers/cust-typo")

    assert answer.status_code == 404
    assert answer.json()["error"] == "unknown_customer"
    with closing(open_store(store_settings.store, store_settings.engine)) as store:
        assert not store.is_erased("cust-typo")
    event = withdrawal("ev-typo") | {"customer_id": "cust-typo"}
    assert http.post("/v1/events", json={"events": [event]}).json()["accepted"] == 1


def test_deleting_an_erased_customer_again_is_idempotent(http: httpx.Client) -> None:
    http.post("/v1/events", json={"events": [withdrawal("ev-2")]})
    assert http.delete("/v1/customers/cust-gone").json() == {
        "customer_id": "cust-gone",
        "erased": True,
        "removed": True,
    }
    again = http.delete("/v1/customers/cust-gone")

    assert again.status_code == 200
    assert again.json()["removed"] is False
