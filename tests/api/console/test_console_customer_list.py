"""`OnlineStore.list_customers` (its default, over the event log) on real SQLite and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.console.views import recently_active
from api.routes.customer_list import customer_page
from engine.config import EngineConfig
from engine.events import Channel, Event, EventType
from engine.identity import Identity, IdentityType
from feature_store.base import OnlineStore
from feature_store.factory import open_store
from tests.feature_store.redis_servers import RedisServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = b"a-test-secret-of-some-length"


def request(customer_id: str, number: int) -> Event:
    return Event(
        event_id=f"ev-{customer_id}-{number}",
        customer_id=customer_id,
        touchpoint="atm-0042",
        channel=Channel.ATM,
        type=EventType.REQUEST,
        occurred_at=T0,
        attributes={"request": "balance_enquiry"},
    )


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        with closing(open_store(f"sqlite:///{tmp_path / 'r.db'}", EngineConfig())) as opened:
            yield opened
        return
    with (
        RedisServer(tmp_path / "redis") as server,
        closing(open_store(server.url, EngineConfig())) as opened,
    ):
        yield opened


def test_customers_page_in_id_order_without_the_merged_and_the_erased(store: OnlineStore) -> None:
    ids = ["cust-c", "cust-a", "cust-e", "cust-b", "cust-d"]
    store.apply_events([request(c, n) for c in ids for n in range(2)])
    email = Identity(type=IdentityType.EMAIL, value="x@example.com").hashed(SECRET)
    card = Identity(type=IdentityType.CARD, value="card-123456").hashed(SECRET)
    store.link_identities([email], "cust-a", at=T0)
    store.link_identities([card], "cust-d", at=T0)
    store.link_identities([email, card], "cust-a", at=T0)  # cust-d merges into cust-a
    store.erase_customer("cust-e")

    first = customer_page(store, None, 2)
    second = customer_page(store, first.next_after, 2)

    assert first.customers == ["cust-a", "cust-b"]
    assert first.next_after == "cust-b"
    assert second.customers == ["cust-c"]
    assert second.next_after is None
    assert store.list_customers("cust-c", 10) == []


def test_recently_active_customers_come_latest_logged_first(store: OnlineStore) -> None:
    store.apply_events([request("cust-old", 0), request("cust-mid", 0)])
    store.apply_events([request("cust-new", 0), request("cust-old", 1)])

    recent = recently_active(store, 10)

    assert [c.customer_id for c in recent] == ["cust-old", "cust-new", "cust-mid"]
    assert [c.events for c in recent] == [2, 1, 1]
    assert [c.customer_id for c in recently_active(store, 1)] == ["cust-old"]
