"""The Redis store's atomicity: optimistic commits, a full memory, concurrent writers."""

from __future__ import annotations

import threading
from contextlib import closing
from datetime import timedelta

import pytest

from engine.config import EngineConfig
from feature_store.errors import StoreUnavailable
from feature_store.redis.codec import (
    decode_profile,
)
from feature_store.redis.ingest import fold_new_events
from tests.feature_store.contract import (
    ACCEPTED,
    CONFIG,
    DUPLICATE,
    T0,
    contact,
    profile_json,
    withdrawal,
)
from tests.feature_store.redis.support import (
    CONTRACT_LOG_CAP,
    Target,
    apply_retrying,
    commit,
    read_for_update,
    standalone,
)
from tests.feature_store.redis_servers import RedisServer

pytestmark = pytest.mark.redis


# -- atomicity and concurrency -----------------------------------------------------------------


def test_a_commit_based_on_an_outdated_read_writes_nothing(target: Target) -> None:
    # The optimistic check that concurrency rests on: after another writer's commit, a commit
    # prepared from the earlier read is refused and nothing of it is written.
    with closing(target.store()) as store, closing(target.store()) as other:
        store.apply_events([withdrawal("e-0")])
        read = read_for_update(store, "cust-1", ["e-1"])
        stale = read.profile
        other.apply_events([contact("e-2", "sms", at=T0 + timedelta(hours=2))])
        before = profile_json(store, "cust-1")
        late = [withdrawal("e-1", at=T0 + timedelta(hours=1))]
        profile = None if stale is None else decode_profile(stale)
        update = fold_new_events(profile, late, read.known, CONFIG)

        assert not commit(store, "cust-1", stale, update, late)

        assert profile_json(store, "cust-1") == before
        assert [e.event_id for e in store.customer_events("cust-1")] == ["e-0", "e-2"]
        assert store.apply_events(late) == [ACCEPTED]  # the normal path reads again


def test_an_update_refused_for_lack_of_memory_writes_nothing(redis_server: RedisServer) -> None:
    # A full Redis refuses the commit script before it writes anything (see redis_scripts):
    # the customer is unchanged, the error is one a client retries, and reads go on.
    target = standalone(redis_server)
    with closing(target.store()) as store, closing(target.raw()) as raw:
        store.apply_events([withdrawal("e-0")])
        before = profile_json(store, "cust-1")
        raw.config_set("maxmemory", "1")
        try:
            with pytest.raises(StoreUnavailable, match="out of memory") as refused:
                store.apply_events([withdrawal("e-1", at=T0 + timedelta(hours=1))])
            assert profile_json(store, "cust-1") == before  # reads still work
        finally:
            raw.config_set("maxmemory", "0")

        assert refused.value.retry_after > 0
        assert [e.event_id for e in store.customer_events("cust-1")] == ["e-0"]
        assert store.apply_events([withdrawal("e-1", at=T0 + timedelta(hours=1))]) == [ACCEPTED]


def test_eight_writers_of_one_customer_lose_no_event(target: Target) -> None:
    # Eight store instances, as eight API worker processes have: their updates of the one
    # customer race through the optimistic check (writers sharing an instance take turns).
    threads, per_thread, batch = 8, 500, 20
    roomy = EngineConfig(seen_capacity=4096)  # every event stays inside the idempotence ring
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(worker: int) -> None:
        events = [
            withdrawal(f"w{worker}-{i}", at=T0 + timedelta(seconds=i * threads + worker))
            for i in range(per_thread)
        ]
        with closing(target.store(roomy, event_log_cap=CONTRACT_LOG_CAP)) as store:
            start.wait(timeout=30)
            try:
                for first in range(0, per_thread, batch):
                    # Like a touchpoint retrying on 503, one batch of events at a time.
                    statuses = apply_retrying(store, events[first : first + batch])
                    assert set(statuses) <= {ACCEPTED, DUPLICATE}
            except BaseException as exc:
                errors.append(exc)

    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)

    assert errors == []
    with closing(target.store(roomy, event_log_cap=CONTRACT_LOG_CAP)) as store:
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == threads * per_thread
        logged = [event.event_id for event in store.customer_events("cust-1")]
    expected = [f"w{w}-{i}" for w in range(threads) for i in range(per_thread)]
    assert sorted(logged) == sorted(expected)  # each once: none lost, none doubled
