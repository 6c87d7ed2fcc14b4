"""Identities, merges and erasure on Redis, across cluster nodes and under concurrent writers."""

from __future__ import annotations

import json
import threading
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.events import Event
from engine.identity import HashedIdentity, Identity, IdentityType, customer_digest
from feature_store.base import AppendStatus
from feature_store.offline.export import OfflineStore, complete_export
from feature_store.redis.codec import (
    decode_profile,
)
from feature_store.redis.ingest import RedisIngest, fold_new_events
from feature_store.redis.store import RedisStore
from tests.feature_store.contract import (
    ACCEPTED,
    CONFIG,
    DUPLICATE,
    T0,
    TOO_LATE,
    contact,
    decision,
    profile_json,
    withdrawal,
)
from tests.feature_store.contract_privacy import SECRET
from tests.feature_store.redis.support import (
    CONTRACT_LOG_CAP,
    RawClient,
    Target,
    apply_retrying,
    cluster,
    commit,
    history,
    link_retrying,
    read_for_update,
    restamped,
)
from tests.feature_store.redis_servers import LocalCluster
from tests.waiting import wait_until

pytestmark = pytest.mark.redis

ERASED = AppendStatus.ERASED


# -- identities, merges and erasure --------------------------------------------------------------


def _tag_keys(raw: RawClient, store: RedisStore, customer_id: str) -> list[bytes]:
    """What a SCAN over the customer's hash tag finds (every node of a cluster)."""
    return sorted(raw.scan_iter(match=store.keys.customer_pattern(customer_id)))


def _merge_two_customers(store: RedisStore, a: str, b: str, count: int) -> list[Event]:
    """`count` events for each of `a` and `b`, each known by its own card, then both cards
    presented together: `b` is merged into `a` (the smaller id survives)."""
    history = [
        event
        for i in range(count)
        for event in (
            withdrawal(f"{a}-{i}", customer_id=a, at=T0 + timedelta(hours=i)),
            contact(f"{b}-{i}", "sms", customer_id=b, at=T0 + timedelta(hours=i, minutes=30)),
        )
    ]
    store.apply_events(history)
    store.link_identities([_card(a)], a, at=T0)
    store.link_identities([_card(b)], b, at=T0)
    link = store.link_identities([_card(a), _card(b)], None, at=T0)
    assert (link.customer_id, link.merged) == (a, [b])
    return history


def _merged_keys(store: RedisStore, customer_id: str) -> list[bytes]:
    """What a merged customer (with events) keeps in its slot: its alias, and the index of its
    entries in the event log (they stay in its slot's log shard, see feature_store.redis.log)."""
    keys = store.keys.customer(customer_id)
    return sorted([keys.alias.encode(), keys.event_log.encode()])


def _card(customer_id: str) -> HashedIdentity:
    return Identity(type=IdentityType.CARD, value=f"tok_{customer_id}").hashed(SECRET)


def _on_two_nodes(raw: RawClient, store: RedisStore) -> tuple[str, str]:
    """Two customer ids, in this order, whose keys live on two different cluster nodes."""
    ids = [f"cust-{i:03d}" for i in range(100)]
    slots = {c: raw.cluster_keyslot(store.keys.customer(c).profile) for c in ids}
    node = {c: raw.nodes_manager.get_node_from_slot(slots[c]).name for c in ids}
    a = ids[0]
    b = next(c for c in ids if node[c] != node[a])
    assert slots[a] != slots[b]
    return a, b


def test_after_an_erasure_a_scan_over_the_customer_finds_no_key(
    target: Target, raw: RawClient
) -> None:
    with closing(target.store()) as store:
        _merge_two_customers(store, "cust-a", "cust-b", 3)
        store.log_decision(decision("dec-a", customer_id="cust-a"))
        store.log_decision(decision("dec-b", customer_id="cust-b"))  # indexed under cust-a
        assert _tag_keys(raw, store, "cust-a")
        assert _tag_keys(raw, store, "cust-b") == _merged_keys(store, "cust-b")

        assert store.erase_customer("cust-b") is True  # the absorbed id: the same person

        assert _tag_keys(raw, store, "cust-a") == []
        assert _tag_keys(raw, store, "cust-b") == []
        assert list(raw.scan_iter(match=f"{store.keys.prefix}:id:*")) == []
        assert list(raw.scan_iter(match=f"{store.keys.prefix}:dec:*")) == []
        assert store.export_customer("cust-a") is None
        assert store.export_customer("cust-b") is None
        assert store.erase_customer("cust-a") is False
        assert _tag_keys(raw, store, "cust-a") == []  # nor after a repeated erasure


def test_the_erasure_record_holds_no_customer_id(target: Target, raw: RawClient) -> None:
    with closing(target.store()) as store:
        store.apply_events([withdrawal("e-1", customer_id="cust-1")])
        store.link_identities([_card("cust-1")], "cust-1", at=T0)
        store.log_decision(decision("dec-1", customer_id="cust-1"))

        store.erase_customer("cust-1")

        digest = customer_digest("cust-1")
        record = raw.hgetall(store.keys.erasures(digest))
        assert list(record) == [digest.encode()]
        assert store.read_log("events", 0, 10).records == []
        assert store.read_log("decisions", 0, 10).records == []
        left = {key: _raw_value(raw, key) for key in raw.scan_iter(match="rp:*")}
        shard = store.keys.customer_log_shard("cust-1")
        allowed = {store.keys.erasures(digest), store.keys.population(), *shard}
        allowed |= {*store.keys.log_order("events"), *store.keys.log_order("decisions")}
        assert set(left) <= {key.encode() for key in allowed}
        for key, value in left.items():
            assert b"cust-1" not in key + value
            assert _card("cust-1").digest.encode() not in value


def _raw_value(raw: RawClient, key: bytes) -> bytes:
    """What a client reads of a key (XDEL'd stream entries are not read)."""
    kind = raw.type(key)
    if kind == b"hash":
        return b" ".join(k + b"=" + v for k, v in raw.hgetall(key).items())
    if kind == b"stream":
        entries = raw.xrange(key)
        return b" ".join(k + b"=" + v for _, fields in entries for k, v in fields.items())
    if kind == b"zset":
        return b" ".join(member for member in raw.zrange(key, 0, -1))
    assert kind == b"string", kind
    return bytes(raw.get(key))


def test_a_merge_across_two_cluster_nodes_keeps_every_event_once(
    redis_cluster: LocalCluster,
) -> None:
    target = cluster(redis_cluster)
    with closing(target.store()) as store, closing(target.raw()) as raw:
        a, b = _on_two_nodes(raw, store)
        history = _merge_two_customers(store, a, b, 20)
        merged = profile_json(store, a)

        assert json.loads(merged or "{}")["event_count"] == 40
        assert {e.event_id for e in store.customer_events(a)} == {e.event_id for e in history}
        assert profile_json(store, b) == merged
        assert _tag_keys(raw, store, b) == _merged_keys(store, b)
        # Repeating the link, or every step of the merge, changes nothing.
        again = store.link_identities([_card(a), _card(b)], None, at=T0)
        assert (again.customer_id, again.merged) == (a, [])
        store._identities._absorb(b, a)
        assert profile_json(store, a) == merged
        assert len(store.customer_events(a)) == 40
        assert store.apply_events(history) == [DUPLICATE] * 40  # by either id


def test_a_commit_read_before_the_customer_was_merged_writes_nothing(target: Target) -> None:
    # cust-b has identifiers but no profile: the commit's profile check alone would pass.
    with closing(target.store()) as store:
        store.apply_events([withdrawal("a-0", customer_id="cust-a")])
        store.link_identities([_card("cust-a")], "cust-a", at=T0)
        store.link_identities([_card("cust-b")], "cust-b", at=T0)
        late = [contact("b-1", "sms", customer_id="cust-b")]
        read = read_for_update(store, "cust-b", ["b-1"])
        store.link_identities([_card("cust-a"), _card("cust-b")], None, at=T0)

        update = fold_new_events(None, late, read.known, CONFIG)
        assert not commit(store, "cust-b", read.profile, update, late)

        assert store.apply_events(late) == [ACCEPTED]  # the normal path follows the alias
        assert [e.event_id for e in store.customer_events("cust-a")] == ["a-0", "b-1"]


def test_a_commit_read_before_a_merge_into_the_customer_began_writes_nothing(
    target: Target,
) -> None:
    # The touchpoint resends b-0, accepted for cust-b, now resolved to cust-a: if the commit
    # went through before the merge brings cust-b's dedup ids, cust-a would count it twice.
    with closing(target.store()) as store:
        store.apply_events(
            [withdrawal("a-0", customer_id="cust-a"), contact("b-0", "sms", customer_id="cust-b")]
        )
        resent = [contact("b-0", "sms", customer_id="cust-a")]
        read = read_for_update(store, "cust-a", ["b-0"])
        store._identities._intend("cust-b", "cust-a")  # a link is under way

        stale = decode_profile(read.profile or b"")
        update = fold_new_events(stale, resent, read.known, CONFIG)
        assert not commit(store, "cust-a", read.profile, update, resent)

        assert store.apply_events(resent) == [DUPLICATE]  # after completing the merge
        profile = store.read_profile("cust-a")
        assert profile is not None
        assert profile.event_count == 2


@pytest.mark.parametrize("died_after", ["intent", "move_out", "merge_in"])
def test_a_merge_interrupted_after_any_step_is_completed_by_the_next_writer(
    target: Target, raw: RawClient, died_after: str
) -> None:
    with closing(target.store()) as store:
        history = [
            *(
                withdrawal(f"a-{i}", customer_id="cust-a", at=T0 + timedelta(hours=i))
                for i in range(5)
            ),
            *(
                contact(f"b-{i}", "sms", customer_id="cust-b", at=T0 + timedelta(hours=i))
                for i in range(4)
            ),
        ]
        store.apply_events(history)
        # A linking process that dies after `died_after`:
        identities = store._identities
        identities._intend("cust-b", "cust-a")
        if died_after != "intent":
            assert identities._move_out("cust-b", "cust-a")
        if died_after == "merge_in":
            identities._merge_in("cust-a", "cust-b", identities._moved("cust-b"))

        late_b = contact("b-late", "email", customer_id="cust-b", at=T0 + timedelta(days=1))
        late_a = withdrawal("a-late", customer_id="cust-a", at=T0 + timedelta(days=1))
        assert store.apply_events([late_b, late_a]) == [ACCEPTED, ACCEPTED]

        profile = store.read_profile("cust-a")
        assert profile is not None
        assert profile.event_count == 11  # nothing lost, nothing twice
        assert len(store.customer_events("cust-a")) == 11
        assert store.apply_events(history) == [DUPLICATE] * 9
        assert _tag_keys(raw, store, "cust-b") == _merged_keys(store, "cust-b")
        assert raw.exists(store.keys.customer("cust-a").pending) == 0


def test_writers_of_both_customers_during_a_merge_lose_nothing(target: Target) -> None:
    roomy = EngineConfig(seen_capacity=4096)  # every event stays inside the idempotence ring
    seeded, writers, per_writer = 200, 4, 60
    customers = ["cust-a", "cust-b"]
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1)
    applied = [0] * writers  # calls each writer has made: the merge starts once all are busy

    def write(worker: int) -> None:
        events = [
            withdrawal(
                f"w{worker}-{i}",
                customer_id=customers[worker % 2],
                at=T0 + timedelta(days=30, seconds=i * writers + worker),
            )
            for i in range(per_writer)
        ]
        with closing(target.store(roomy, event_log_cap=CONTRACT_LOG_CAP)) as store:
            start.wait(timeout=30)
            try:
                for i, event in enumerate(events):
                    # Every third call also resends the previous event, restamped as some
                    # touchpoints do: only the dedup window knows it, not the profile's ring.
                    resend = [restamped(events[i - 1])] if i % 3 == 0 and i else []
                    assert TOO_LATE not in apply_retrying(store, [event, *resend])
                    applied[worker] += 1
            except BaseException as exc:
                errors.append(exc)

    def link() -> None:
        with closing(target.store(roomy, event_log_cap=CONTRACT_LOG_CAP)) as store:
            start.wait(timeout=30)
            try:
                # The writers are under way (or done, should one have raised: then it failed).
                wait_until(lambda: errors or min(applied) >= 3, what="every writer's start")
                link_retrying(store, [_card("cust-a"), _card("cust-b")])
            except BaseException as exc:
                errors.append(exc)

    with closing(target.store(roomy, event_log_cap=CONTRACT_LOG_CAP)) as store:
        for customer in customers:
            store.apply_events(history(customer, seeded))
            store.link_identities([_card(customer)], customer, at=T0)
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        threads.append(threading.Thread(target=link))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        assert errors == []
        profile = store.read_profile("cust-b")
        assert profile is not None
        assert profile.customer_id == "cust-a"
        assert profile.event_count == 2 * seeded + writers * per_writer
        logged = [event.event_id for event in store.customer_events("cust-a")]
        assert len(logged) == len(set(logged)) == 2 * seeded + writers * per_writer


def test_concurrent_first_links_of_one_identifier_agree_on_one_customer(
    target: Target, raw: RawClient
) -> None:
    threads = 6
    linked: list[str] = []
    start = threading.Barrier(threads)

    def run() -> None:
        with closing(target.store()) as store:
            start.wait(timeout=30)
            linked.append(store.link_identities([_card("new")], None, at=T0).customer_id)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)

    assert len(linked) == threads
    assert len(set(linked)) == 1  # the first to claim the card won; the others adopted it
    with closing(target.store()) as store:
        assert store.resolve_identity(_card("new")) == linked[0]
        indexes = list(raw.scan_iter(match=f"{store.keys.prefix}:{{*}}:i"))
        assert indexes == [store.keys.customer(linked[0]).identities.encode()]


@pytest.mark.parametrize("known", [False, True])
def test_a_write_racing_an_erasure_leaves_nothing_of_the_customer(
    target: Target, raw: RawClient, known: bool
) -> None:
    # The interleaving the erasure order must survive, made to happen: the writer has read
    # the customer (and, for a new one, found no erasure record) when the erasure runs.
    with closing(target.store()) as eraser, closing(_ErasingBeforeCommit(eraser, target)) as store:
        if known:
            eraser.apply_events([withdrawal("e-0")])

        assert store.apply_events([withdrawal("e-1", at=T0 + timedelta(hours=1))]) == [ERASED]

        assert _tag_keys(raw, store, "cust-1") == []
        assert store.read_profile("cust-1") is None
        assert store.read_log("events", 0, 10).records == []
        assert store.apply_events([withdrawal("e-2")]) == [ERASED]


class _ErasingBeforeCommit(RedisStore):
    """A store whose first commit comes right after another store erased cust-1."""

    def __init__(self, eraser: RedisStore, target: Target) -> None:
        super().__init__(CONFIG, target.config(), prior_ttl_seconds=0.0)
        self._ingest = _ErasingIngest(self._ingest, eraser)


class _ErasingIngest(RedisIngest):
    def __init__(self, ingest: RedisIngest, eraser: RedisStore) -> None:
        super().__init__(ingest.access, ingest.identities, ingest.privacy)
        self.eraser = eraser
        self.erased = False

    def commit(self, *args: Any) -> list[bool]:
        if not self.erased:
            self.erased = True
            self.eraser.erase_customer("cust-1")
        return super().commit(*args)


def test_decisions_are_indexed_only_under_customers_the_store_holds(
    target: Target, raw: RawClient
) -> None:
    with closing(target.store()) as store:
        store.log_decision(decision("dec-anon", customer_id="anonymous"))
        _merge_two_customers(store, "cust-a", "cust-b", 1)
        store.log_decision(decision("dec-b", customer_id="cust-b"))

        # Logged, so that erasing the id would find it, but not indexed as a decision to export.
        anonymous = store.keys.customer("anonymous")
        assert _tag_keys(raw, store, "anonymous") == [anonymous.decision_log.encode()]
        export = store.export_customer("cust-b")
        assert export is not None
        assert export.customer_id == "cust-a"
        assert [d.decision_id for d in export.decisions] == ["dec-b"]
        assert store.read_decision("dec-anon") is not None  # logged, only not indexed


def test_an_exported_merged_history_leaves_the_survivor_and_is_exported_whole(
    target: Target, raw: RawClient, tmp_path: Path
) -> None:
    with closing(target.store()) as store:
        a, b = (
            _on_two_nodes(target.raw(), store)
            if target.type == "redis+cluster"
            else ("cust-a", "cust-b")
        )
        history = _merge_two_customers(store, a, b, 3)
        offline = OfflineStore(tmp_path / "offline")
        offline.export(store)
        offline.export(store)  # acknowledges the first run: trimmed online

        assert store.customer_events(a) == []
        export = store.export_customer(b)
        assert export is not None
        complete = complete_export(export, offline)
        assert complete.customer_id == a
        assert {e.event_id for e in complete.events} == {e.event_id for e in history}
        assert {e.customer_id for e in complete.events} == {a}
