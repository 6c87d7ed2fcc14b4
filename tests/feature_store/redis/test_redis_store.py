"""The Redis store against a real redis-server and a real local 3-master Redis Cluster: the
shared contract, and how a customer's keys are laid out."""

from __future__ import annotations

import zlib
from contextlib import closing
from datetime import timedelta

import pytest

from feature_store.redis.codec import (
    decode_log_entry,
    decode_profile,
)
from tests.feature_store.contract import (
    DUPLICATE,
    T0,
    NewBackend,
    OnlineStoreContract,
    contact,
    decision,
    withdrawal,
)
from tests.feature_store.contract_privacy import IdentityPrivacyContract
from tests.feature_store.redis.support import (
    RawClient,
    Target,
    cluster,
    contract_backends,
    standalone,
)
from tests.feature_store.redis_servers import LocalCluster, RedisServer

pytestmark = pytest.mark.redis


class TestRedisContract(OnlineStoreContract, IdentityPrivacyContract):
    @pytest.fixture
    def new_backend(self, redis_server: RedisServer) -> NewBackend:
        return contract_backends(standalone(redis_server))


class TestRedisClusterContract(OnlineStoreContract, IdentityPrivacyContract):
    @pytest.fixture
    def new_backend(self, redis_cluster: LocalCluster) -> NewBackend:
        return contract_backends(cluster(redis_cluster))


# -- the key layout ----------------------------------------------------------------------------


def test_every_key_of_a_customer_is_in_one_slot_of_the_cluster(
    redis_cluster: LocalCluster,
) -> None:
    target = cluster(redis_cluster)
    customers = [f"cust-{i}" for i in range(12)]  # enough to land on all three masters
    with closing(target.store()) as store, closing(target.raw()) as raw:
        for customer_id in customers:
            store.apply_events(
                [
                    withdrawal(f"{customer_id}-w", customer_id=customer_id),
                    contact(f"{customer_id}-c", "sms", customer_id=customer_id),
                ]
            )
        masters = set()
        for customer_id in customers:
            keys = sorted(raw.scan_iter(match=store.keys.customer_pattern(customer_id)))
            held = store.keys.customer(customer_id)
            expected = sorted(
                key.encode() for key in (held.profile, held.events, held.dedup, held.event_log)
            )
            assert keys == expected, customer_id
            # The customer's slot also holds the log shard that its commits append to.
            shard = store.keys.customer_log_shard(customer_id)
            slots = {raw.cluster_keyslot(key) for key in [*keys, shard.events, shard.counters]}
            assert len(slots) == 1, customer_id
            assert raw.xlen(shard.events) >= 2
            masters.add(raw.nodes_manager.get_node_from_slot(slots.pop()).name)

    assert len(masters) == 3  # the customers are spread, each one whole on one master


def test_the_profile_is_compressed_and_the_log_is_compact(target: Target, raw: RawClient) -> None:
    events = [withdrawal(f"e-{i}", at=T0 + timedelta(days=i)) for i in range(20)]
    with closing(target.store()) as store:
        store.apply_events(events)
        keys = store.keys.customer("cust-1")
        stored_profile = raw.get(keys.profile)
        entries = raw.lrange(keys.events, 0, -1)
        store_profile = store.read_profile("cust-1")

    assert stored_profile[:1] == b"x"  # zlib, since it is smaller
    binary = zlib.decompress(stored_profile)
    assert binary[:1] == b"\xdc"  # the versioned msgpack array of feature_store.profile_codec
    assert len(stored_profile) < len(binary)
    assert decode_profile(stored_profile) == store_profile
    assert entries[0].startswith(b'["e-0","atm-0042","atm","request",')
    assert b"cust-1" not in entries[0]  # the key says whose log it is
    assert [decode_log_entry("cust-1", entry) for entry in entries] == events


def test_the_online_event_log_keeps_the_latest_events_only(target: Target) -> None:
    events = [withdrawal(f"e-{i}", at=T0 + timedelta(hours=i)) for i in range(12)]
    with closing(target.store(event_log_cap=5)) as store:
        store.apply_events(events[:3])
        store.apply_events(events[3:])

        assert store.customer_events("cust-1") == events[-5:]
        profile = store.read_profile("cust-1")
        assert profile is not None
        assert profile.event_count == 12  # the log is capped, not the profile
        assert store.apply_events(events[:1]) == [DUPLICATE]  # the dedup window remembers


def test_decisions_expire_after_their_ttl(target: Target, raw: RawClient) -> None:
    with closing(target.store(decision_ttl_seconds=3600)) as store:
        store.log_decision(decision("dec-1"))
        store.log_decision(decision("dec-1"))  # the same bytes again: a retried write

        assert 3590 < raw.ttl(store.keys.decision("dec-1")) <= 3600
