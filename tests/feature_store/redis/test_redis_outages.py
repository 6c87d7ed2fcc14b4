"""A Redis store through outages, and how it is configured from settings and URLs."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path

import pytest
from pydantic import ValidationError

from feature_store.errors import StoreUnavailable, UnsupportedStoreUrl
from feature_store.factory import open_store
from feature_store.keys import KeyLayout
from feature_store.redis.store import RedisStore, RedisStoreConfig
from tests.feature_store.contract import (
    ACCEPTED,
    CONFIG,
    DUPLICATE,
    contact,
    decision,
    profile_json,
    withdrawal,
)
from tests.feature_store.redis.support import (
    Target,
    unavailable_within,
)
from tests.feature_store.redis_servers import LocalCluster, RedisServer

pytestmark = pytest.mark.redis


# -- outages -----------------------------------------------------------------------------------


def test_a_killed_server_makes_calls_unavailable_fast_and_the_store_recovers(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    try:
        target = Target("redis", server.url, server.url)
        with closing(target.store()) as store:
            store.apply_events([withdrawal("e-1"), contact("e-2", "sms")])
            store.log_decision(decision("dec-1"))
            before = profile_json(store, "cust-1")

            server.kill()

            calls: dict[str, Callable[[], object]] = {
                "ping": store.ping,
                "read_profile": partial(store.read_profile, "cust-1"),
                "apply_events": partial(store.apply_events, [withdrawal("e-3")]),
                "customer_events": partial(store.customer_events, "cust-1"),
                "log_decision": partial(store.log_decision, decision("dec-2")),
                "read_decision": partial(store.read_decision, "dec-1"),
                "population_prior": store.population_prior,
            }
            bound = unavailable_within(store.redis_config)
            for name, call in calls.items():
                began = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    call()
                assert time.monotonic() - began < bound, name

            server.start()  # same port, same append-only file

            store.ping()  # the same instance reconnects by itself
            assert profile_json(store, "cust-1") == before  # nothing accepted was lost
            assert store.read_decision("dec-1") == decision("dec-1")
            assert store.apply_events([withdrawal("e-3"), withdrawal("e-1")]) == [
                ACCEPTED,
                DUPLICATE,
            ]
    finally:
        server.stop()


def test_a_dead_cluster_master_makes_its_customers_unavailable_until_it_is_back(
    tmp_path: Path,
) -> None:
    with LocalCluster(tmp_path / "cluster", persistent=True) as local:
        target = Target("redis+cluster", f"redis://{local.nodes[0].address}", local.url)
        with closing(target.store()) as store, closing(target.raw()) as raw:
            customers = [f"cust-{i}" for i in range(12)]
            store.apply_events([withdrawal(f"{c}-1", customer_id=c) for c in customers])
            victim = local.nodes[2]
            lost = [
                c
                for c in customers
                if raw.nodes_manager.get_node_from_slot(
                    raw.cluster_keyslot(store.keys.customer(c).profile)
                ).port
                == victim.port
            ]
            assert lost
            before = profile_json(store, lost[0])

            victim.kill()

            calls: dict[str, Callable[[], object]] = {
                "ping": store.ping,
                "read_profile": partial(store.read_profile, lost[0]),
                "apply_events": partial(
                    store.apply_events, [withdrawal("x-2", customer_id=lost[0])]
                ),
            }
            bound = unavailable_within(store.redis_config)
            for name, call in calls.items():
                began = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    call()
                assert time.monotonic() - began < bound, name

            victim.start()  # same port, folder, nodes.conf and append-only file
            local.wait_until_every_node_is_ok()

            store.ping()  # the same instance finds the node again
            assert profile_json(store, lost[0]) == before
            assert store.apply_events([withdrawal("x-2", customer_id=lost[0])]) == [ACCEPTED]


def test_a_store_opened_while_redis_is_down_works_once_it_is_up(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    store = open_store(f"redis://127.0.0.1:{server.port}/0", CONFIG)  # sends nothing yet
    try:
        with pytest.raises(StoreUnavailable):
            store.ping()
        server.start()

        store.ping()
        assert store.apply_events([withdrawal("e-1")]) == [ACCEPTED]
    finally:
        store.close()
        server.stop()


def test_a_closed_store_is_unavailable(target: Target) -> None:
    store = target.store()
    store.ping()
    store.close()

    with pytest.raises(StoreUnavailable, match="closed"):
        store.read_profile("cust-1")
    store.close()  # closing twice is harmless


# -- configuration and URLs --------------------------------------------------------------------


def test_the_config_has_safe_defaults_and_rejects_unknown_keys() -> None:
    config = RedisStoreConfig(url="redis://localhost:6379/0")

    assert (config.type, config.dedup_window_seconds) == ("redis", 7 * 86_400)
    assert config.decision_ttl_seconds == 90 * 86_400
    assert config.socket_timeout_seconds <= 0.25
    assert "localhost" not in repr(config)  # the URL may carry a password
    with pytest.raises(ValidationError, match="extra"):
        RedisStoreConfig.model_validate({"url": "redis://h", "timeout": 3})
    with pytest.raises(ValidationError, match="type"):
        RedisStoreConfig.model_validate({"url": "redis://h", "type": "sqlite"})
    with pytest.raises(ValidationError, match="key_prefix"):
        RedisStoreConfig(url="redis://h", key_prefix="a{b}")


def test_store_urls_open_the_right_store(target: Target) -> None:
    url = f"{target.store_url}?dedup_window_seconds=60&key_prefix=app"
    with closing(open_store(url, CONFIG)) as store:
        assert isinstance(store, RedisStore)
        assert store.redis_config.type == target.type
        assert store.redis_config.dedup_window_seconds == 60
        assert store.apply_events([withdrawal("e-1")]) == [ACCEPTED]
        with closing(target.raw()) as raw:
            assert raw.exists(KeyLayout("app").customer("cust-1").profile) == 1


def test_a_url_without_port_means_6379() -> None:
    with closing(open_store("redis://:s3cret@localhost", CONFIG)) as store:  # sends nothing
        assert isinstance(store, RedisStore)
        assert store.redis_config.url == "redis://:s3cret@localhost:6379/0"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://", "host"),
        ("redis://:s3cret@localhost:notaport/0", "host"),
        ("redis://:s3cret@localhost:6379/zero", "database is a number"),
        ("redis+cluster://:s3cret@localhost:7000/1", "one database"),
        ("redis://:s3cret@localhost:6379/0?ttl=s3cret", "ttl"),
        ("redis://:s3cret@localhost:6379/0?event_log_cap=s3cret", "event_log_cap"),
        ("redis://:s3cret@localhost:6379/0?url=redis://other", "not settings"),
        ("rediss://:s3cret@localhost:6379/0", "'rediss'"),
    ],
)
def test_a_bad_redis_url_is_refused_without_echoing_secrets(url: str, message: str) -> None:
    with pytest.raises(UnsupportedStoreUrl, match=message) as refused:
        open_store(url, CONFIG)

    assert "s3cret" not in str(refused.value)
