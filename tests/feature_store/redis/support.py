"""What the Redis store tests share: a Redis deployment to test on (one server or a cluster),
and helpers that retry through the transient unavailability the tests provoke on purpose."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Literal

import redis
from redis.cluster import RedisCluster

from engine.config import EngineConfig
from engine.events import Event
from engine.identity import HashedIdentity
from feature_store.base import AppendStatus
from feature_store.errors import StoreUnavailable
from feature_store.redis.codec import encode_log_entry
from feature_store.redis.ingest import CustomerBatch, Stored, Update
from feature_store.redis.store import RedisStore, RedisStoreConfig
from tests.feature_store.contract import (
    CONFIG,
    T0,
    NewBackend,
    StoreOpener,
    withdrawal,
)
from tests.feature_store.redis_servers import LocalCluster, RedisServer

#: The contract reads back every event of its concurrency tests (1,600): keep them all online.
CONTRACT_LOG_CAP = 5000

RawClient = redis.Redis | RedisCluster


@dataclass(frozen=True)
class Target:
    """An emptied Redis deployment, and how to reach it."""

    type: Literal["redis", "redis+cluster"]
    client_url: str  # redis-py's form, for RedisStoreConfig.url
    store_url: str  # RAPPORT_STORE's form

    def config(self, **settings: Any) -> RedisStoreConfig:
        return RedisStoreConfig(type=self.type, url=self.client_url, **settings)

    def store(self, engine: EngineConfig = CONFIG, **settings: Any) -> RedisStore:
        return RedisStore(engine, self.config(**settings), prior_ttl_seconds=0.0)

    def raw(self) -> RawClient:
        if self.type == "redis+cluster":
            return RedisCluster.from_url(self.client_url)
        return redis.Redis.from_url(self.client_url)


#: How many times its configured worst case a store call may take to give up during an
#: outage on a loaded host. A call that waited on the OS's TCP timeouts, or retried without
#: bound, would take far longer.
OUTAGE_SLACK = 4


def unavailable_within(config: RedisStoreConfig) -> float:
    """Seconds within which a call must raise `StoreUnavailable` when Redis is down: its
    configured worst case (every attempt timing out on connect and on the command, with the
    longest backoff between attempts), times `OUTAGE_SLACK`."""
    attempts = config.retries + 1
    per_attempt = config.socket_connect_timeout_seconds + config.socket_timeout_seconds
    worst = attempts * per_attempt + config.retries * config.backoff_cap_seconds
    return OUTAGE_SLACK * worst


def standalone(server: RedisServer) -> Target:
    server.flushall()
    return Target("redis", server.url, server.url)


def cluster(local: LocalCluster) -> Target:
    local.flushall()
    return Target("redis+cluster", f"redis://{local.nodes[0].address}", local.url)


def contract_backends(target: Target) -> NewBackend:
    """Each call is a new, empty backend: a key prefix of its own."""
    prefixes = itertools.count()

    def new() -> StoreOpener:
        config = target.config(key_prefix=f"t{next(prefixes)}", event_log_cap=CONTRACT_LOG_CAP)
        # A partial of the class pickles by reference, so child processes can open it too.
        return partial(RedisStore, redis_config=config, prior_ttl_seconds=0.0)

    return new


def history(customer_id: str, count: int) -> list[Event]:
    return [
        withdrawal(f"{customer_id}-{i}", customer_id=customer_id, at=T0 + timedelta(minutes=i))
        for i in range(count)
    ]


def restamped(event: Event) -> Event:
    return event.model_copy(update={"occurred_at": event.occurred_at + timedelta(seconds=1)})


def link_retrying(store: RedisStore, identities: list[HashedIdentity]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            store.link_identities(identities, None, at=T0)
            return
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def apply_retrying(store: RedisStore, events: list[Event]) -> list[AppendStatus]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return store.apply_events(events)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_for_update(store: RedisStore, customer_id: str, event_ids: list[str]) -> Stored:
    """The first step of the store's update of one customer (`feature_store.redis.ingest`)."""
    [stored] = store._ingest.read([(customer_id, event_ids)])
    return stored


def commit(
    store: RedisStore, customer_id: str, stored: bytes | None, update: Update, events: list[Event]
) -> bool:
    """The commit step of the store's update of one customer, on the profile `stored`."""
    entries = [encode_log_entry(event) for event in events]
    batch = CustomerBatch(customer_id, list(range(len(events))), events, entries)
    [committed] = store._ingest.commit([(batch, stored, update)])
    return committed
