"""The Redis logs (per-slot shards, ordered reads) and the dedup window."""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from feature_store.keys import CLUSTER_SLOTS, cluster_slot, slot_tag
from feature_store.redis.codec import (
    encode_document,
)
from feature_store.redis.ingest import RedisIngest
from feature_store.redis.store import RedisStore
from tests.feature_store.contract import (
    ACCEPTED,
    CONFIG,
    DUPLICATE,
    T0,
    decision,
    withdrawal,
)
from tests.feature_store.redis.support import (
    RawClient,
    Target,
    apply_retrying,
    cluster,
    standalone,
)
from tests.feature_store.redis_servers import LocalCluster, RedisServer
from tests.waiting import wait_until

#: Redis and this process read the same host clock; Redis's expiry resolution is 1 ms.
CLOCK_TOLERANCE = 0.005

pytestmark = pytest.mark.redis


# -- the logs (feature_store.redis.log) -------------------------------------------------------


def test_every_slot_has_a_log_shard_tag_in_it() -> None:
    for slot in range(CLUSTER_SLOTS):
        assert key_slot(f"{{{slot_tag(slot)}}}".encode()) == slot
    for customer_id in ("cust-1", "anonymous", "a", "0"):
        assert cluster_slot(customer_id) == key_slot(f"rp:{{{customer_id}}}:p".encode())


def test_an_event_is_in_the_log_once_committed_whatever_happens_to_the_writer_after(
    target: Target,
) -> None:
    # The log is written by the commit itself: a writer that dies right after it (here: fails
    # before it could report) has logged the event, and a retry logs nothing twice.
    with closing(_DyingAfterCommit(target)) as dying, pytest.raises(_WriterDied):
        dying.apply_events([withdrawal("e-1")])
    with closing(target.store()) as store:
        assert [r.event() for r in store.read_log("events", 0, 10).records] == [withdrawal("e-1")]
        assert store.apply_events([withdrawal("e-1")]) == [DUPLICATE]
        assert len(store.read_log("events", 0, 10).records) == 1


class _DyingAfterCommit(RedisStore):
    def __init__(self, target: Target) -> None:
        super().__init__(CONFIG, target.config(), prior_ttl_seconds=0.0)
        self._ingest = _DyingIngest(self._ingest)


class _DyingIngest(RedisIngest):
    def __init__(self, ingest: RedisIngest) -> None:
        super().__init__(ingest.access, ingest.identities, ingest.privacy)

    def commit(self, *args: Any) -> list[bool]:
        super().commit(*args)
        raise _WriterDied


class _WriterDied(Exception):
    pass


def test_a_decision_written_again_with_the_same_bytes_is_logged_once(target: Target) -> None:
    # What a write retried after a lost reply looks like (redis-py retries a command whose
    # connection broke; so may the caller): not an error, and not a second entry.
    given = decision("dec-1")
    with closing(target.store()) as store:
        store.log_decision(given)
        store.log_decision(given)
        stored = encode_document(given.model_dump_json(), store.redis_config.compress_min_bytes)
        assert store._log.append_decision(given, stored).seq == 0  # the script, run again

        [logged] = store.read_log("decisions", 0, 10).records
        assert logged.decision() == given


def test_one_server_orders_its_log_in_one_block_numbered_as_its_shard(
    redis_server: RedisServer,
) -> None:
    target = standalone(redis_server)
    with closing(target.store()) as store, closing(target.raw()) as raw:
        for i in range(5):
            store.apply_events([withdrawal(f"e-{i}", customer_id=f"cust-{i % 2}")])
            assert [r.seq for r in store.read_log("events", 0, 10).records] == list(range(1, i + 2))

        blocks = raw.zrange(store.keys.log_order("events").blocks, 0, -1, withscores=True)
        assert blocks == [(b"0:0:5", 1.0)]


def test_a_shard_that_lost_ordered_writes_numbers_its_next_entries_after_them(
    target: Target, raw: RawClient, caplog: pytest.LogCaptureFixture
) -> None:
    # As after a failover to a replica that lacked the last write, once it was read: the
    # shard's stream and counter are one entry behind what the log's order holds.
    with closing(target.store()) as store:
        store.apply_events([withdrawal(f"e-{i}", at=T0 + timedelta(hours=i)) for i in range(3)])
        assert [r.seq for r in store.read_log("events", 0, 10).records] == [1, 2, 3]
        shard = store.keys.customer_log_shard("cust-1")
        raw.xdel(shard.events, "3-0")
        raw.execute_command("XSETID", shard.events, "2-0")
        raw.hset(shard.counters, "e", 2)

        assert store.read_log("events", 3, 10).records == []  # orders: sees the lost write
        store.apply_events([withdrawal("e-3", at=T0 + timedelta(hours=3))])

        [after] = store.read_log("events", 3, 10).records
    assert (after.seq, after.event().event_id) == (4, "e-3")
    assert "lost writes" in caplog.text


def test_the_shard_counters_read_node_by_node_are_those_of_every_shard(
    redis_cluster: LocalCluster,
) -> None:
    target = cluster(redis_cluster)
    customers = [f"cust-{i}" for i in range(40)]
    with closing(target.store()) as store, closing(target.raw()) as raw:
        for n, customer_id in enumerate(customers):
            store.apply_events(
                [
                    withdrawal(f"{customer_id}-{i}", customer_id=customer_id)
                    for i in range(n % 3 + 1)
                ]
            )
        by_node = store._log._shard_counters("events")
        assert isinstance(raw, RedisCluster)
        assert by_node == store._log._counters_by_node(raw, "e")
        expected = [0] * CLUSTER_SLOTS
        for n, customer_id in enumerate(customers):
            expected[cluster_slot(customer_id)] += n % 3 + 1
        assert by_node == expected


def test_writers_on_every_master_and_racing_readers_agree_on_one_log(
    redis_cluster: LocalCluster,
) -> None:
    # Four writers (store instances, as API processes) over customers on all three masters,
    # and two readers ordering the log at the same time (each orders when it reaches its end).
    target = cluster(redis_cluster)
    writers, per_writer = 4, 150
    done = threading.Event()
    errors: list[BaseException] = []
    seen: dict[int, list[tuple[int, str]]] = {7: [], 20: []}
    start = threading.Barrier(writers + len(seen))

    def write(worker: int) -> None:
        events = [
            withdrawal(f"w{worker}-{i}", customer_id=f"cust-{worker}-{i % 13}")
            for i in range(per_writer)
        ]
        with closing(target.store()) as store:
            try:
                start.wait(timeout=30)
                for first in range(0, per_writer, 3):
                    apply_retrying(store, events[first : first + 3])
            except BaseException as exc:
                errors.append(exc)

    def read(page_size: int) -> None:
        with closing(target.store()) as store:
            try:
                start.wait(timeout=30)
                after = 0
                while True:
                    finished = done.is_set()
                    page = store.read_log("events", after, page_size)
                    seen[page_size] += [(r.seq, r.event().event_id) for r in page.records]
                    after = page.next_after
                    if finished and len(page.records) < page_size:
                        return
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=read, args=(size,)) for size in seen]
    for thread in [*threads, *readers]:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    for thread in readers:
        thread.join(timeout=120)

    assert errors == []
    expected = sorted(f"w{w}-{i}" for w in range(writers) for i in range(per_writer))
    with closing(target.store()) as store:
        from_zero = [
            (r.seq, r.event().event_id) for r in store.read_log("events", 0, 10_000).records
        ]
    assert sorted(event_id for _, event_id in from_zero) == expected  # each once
    assert [seq for seq, _ in from_zero] == sorted({seq for seq, _ in from_zero})
    for followed in seen.values():
        assert followed == from_zero  # the same log, however it was paged and ordered


# -- the dedup window --------------------------------------------------------------------------


def test_an_id_is_duplicate_within_the_window_whatever_its_time(target: Target) -> None:
    with closing(target.store()) as store:
        store.apply_events([withdrawal("e-1")])

        resent = withdrawal("e-1", at=T0 + timedelta(hours=5), amount=50)
        assert store.apply_events([resent]) == [DUPLICATE]

        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == 1


def test_after_the_window_only_the_profile_ring_catches_a_resend(
    target: Target, raw: RawClient
) -> None:
    # Documented behaviour, not a wish: past the window an id is forgotten by the store; an
    # exact resend (same id and time) is still a DUPLICATE thanks to the profile's ring of
    # recent (time, id) pairs, but a resend with another time is folded a second time.
    window = 0.5
    with closing(target.store(dedup_window_seconds=window)) as store:
        began = time.time()  # the server runs on this host: the same clock
        store.apply_events([withdrawal("e-1")])
        dedup = store.keys.customer("cust-1").dedup
        assert _digest("e-1") in _dedup_digests(raw, dedup)
        # The hash expires with its latest bucket: the window and at most an eighth more.
        assert 0 < raw.pttl(dedup) <= window * 1000 * 9 / 8

        wait_until(lambda: raw.exists(dedup) == 0, what="the dedup window's expiry")

        # Not before the window: whatever the load, the id was kept that long.
        assert time.time() - began >= window - CLOCK_TOLERANCE
        assert store.apply_events([withdrawal("e-1")]) == [DUPLICATE]
        resent = withdrawal("e-1", at=T0 + timedelta(minutes=1))
        assert store.apply_events([resent]) == [ACCEPTED]

        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == 2


def test_ids_past_the_window_are_pruned_by_the_next_update(target: Target, raw: RawClient) -> None:
    # e-1 gets a short window, e-2 (from a store configured with a long one) keeps the set
    # alive: e-1 then outlives its window in the set until an update prunes it. The only
    # timing assumption is that two consecutive calls are less than `short` apart.
    short = 2.0
    with (
        closing(target.store(dedup_window_seconds=short)) as store,
        closing(target.store(dedup_window_seconds=600)) as long_lived,
    ):
        dedup = store.keys.customer("cust-1").dedup
        store.apply_events([withdrawal("e-1")])
        long_lived.apply_events([withdrawal("e-2", at=T0 + timedelta(hours=1))])
        e1_expiry_ms = _dedup_digests(raw, dedup).get(_digest("e-1"))
        assert e1_expiry_ms is not None  # within its window when e-2 was committed
        assert raw.pttl(dedup) > short * 1000  # the hash lives as long as its latest bucket

        wait_until(lambda: time.time() * 1000 > e1_expiry_ms + 1, what="e-1's window to pass")

        # Past its window, but nothing pruned yet.
        assert _digest("e-1") in _dedup_digests(raw, dedup)
        before_ms = time.time() * 1000
        store.apply_events([withdrawal("e-3", at=T0 + timedelta(hours=2))])

        remaining = _dedup_digests(raw, dedup)
        ttl_ms = raw.pttl(dedup)

    # e-1 pruned; e-2 (600 s) and e-3 kept.
    assert set(remaining) == {_digest("e-2"), _digest("e-3")}
    # The commit kept only buckets whose expiry was still ahead of it.
    assert all(expiry > before_ms - 1 for expiry in remaining.values())
    assert short * 1000 < ttl_ms <= 600 * 1000 * 9 / 8  # it expires with e-2's bucket


def test_a_dedup_window_of_the_first_format_is_read_and_rewritten_as_buckets(
    target: Target, raw: RawClient
) -> None:
    # Format 1 (a sorted set of event ids -> expiry, Unix ms), as an older version wrote it.
    with closing(target.store()) as store:
        dedup = store.keys.customer("cust-1").dedup
        store.apply_events([withdrawal("e-0")])
        raw.delete(dedup)
        raw.zadd(dedup, {"e-0": time.time() * 1000 + 60_000})

        assert store.apply_events([withdrawal("e-0")]) == [DUPLICATE]
        assert store.apply_events([withdrawal("e-1", at=T0 + timedelta(hours=1))]) == [ACCEPTED]

        assert raw.type(dedup) == b"hash"
        assert {_digest("e-0"), _digest("e-1")} <= set(_dedup_digests(raw, dedup))
        assert store.apply_events([withdrawal("e-0")]) == [DUPLICATE]


def _digest(event_id: str) -> bytes:
    """How the dedup window remembers an event id: 8 bytes of its SHA-1."""
    return hashlib.sha1(event_id.encode(), usedforsecurity=False).digest()[:8]


def _dedup_digests(raw: RawClient, key: str) -> dict[bytes, float]:
    """The digests in a customer's dedup window, each with its bucket's expiry (Unix ms)."""
    found: dict[bytes, float] = {}
    for expiry, blob in raw.hgetall(key).items():
        for start in range(0, len(blob), 8):
            found[bytes(blob[start : start + 8])] = float(expiry)
    return found
