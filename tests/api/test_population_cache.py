"""A worker's population state: read once and shared by decisions, never older than its bound,
refreshed in the background (a real SQLite store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.serving import PopulationCache, decide_for
from engine.config import EngineConfig
from engine.decision import DecisionRequest
from engine.events import Channel, Event
from feature_store.sqlite.store import SQLiteStore, SQLiteStoreConfig
from tests.engine.builders import withdrawal

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    # No TTL of the store's own: what this cache serves is all the caching there is.
    opened = SQLiteStore(
        EngineConfig(), SQLiteStoreConfig(path=tmp_path / "rapport.db"), prior_ttl_seconds=0
    )
    yield opened
    opened.close()


def withdrawals(customer: str, count: int) -> list[Event]:
    return [
        withdrawal(T0 + timedelta(days=day), customer_id=customer, channel="atm")
        for day in range(count)
    ]


def test_decisions_share_one_state_until_it_is_refreshed(store: SQLiteStore) -> None:
    store.apply_events(withdrawals("cust-1", 3))
    cache = PopulationCache(store, max_staleness_seconds=3600)
    state = cache.current()
    assert cache.current() is state
    store.apply_events(withdrawals("cust-2", 4))
    assert cache.current() is state  # within the bound: not read again
    assert cache.refresh() is not state
    assert cache.current().prior.counts != state.prior.counts


def test_a_state_older_than_the_bound_is_read_again(store: SQLiteStore) -> None:
    store.apply_events(withdrawals("cust-1", 3))
    cache = PopulationCache(store, max_staleness_seconds=0)
    before = cache.current().prior.counts
    store.apply_events(withdrawals("cust-2", 4))
    assert cache.current().prior.counts != before


def test_the_background_refresher_brings_new_counts(store: SQLiteStore) -> None:
    store.apply_events(withdrawals("cust-1", 3))
    cache = PopulationCache(store, max_staleness_seconds=3600)
    before = cache.current().prior.counts
    stop = cache.refresh_every(0.05)
    try:
        store.apply_events(withdrawals("cust-2", 4))
        deadline = time.monotonic() + 30
        while cache.current().prior.counts == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cache.current().prior.counts != before
    finally:
        stop.set()


def test_a_decision_reads_the_cached_rates(store: SQLiteStore) -> None:
    store.apply_events(withdrawals("cust-1", 5))
    cache = PopulationCache(store, max_staleness_seconds=3600)
    request = DecisionRequest(customer_id="cust-1", touchpoint="atm-0042", channel=Channel.ATM)
    with_cache = decide_for(store, request, at=T0 + timedelta(days=6), population=cache)
    without = decide_for(store, request, at=T0 + timedelta(days=6))
    assert with_cache.defaults
    assert with_cache.defaults == without.defaults
    assert with_cache.channel == without.channel
