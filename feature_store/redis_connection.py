"""Connecting to Redis and naming its failures: the pooled client and the error translation.

Used by `feature_store.redis`; its `RedisStoreConfig` says how long to wait and how often to
retry. redis-py's errors never leave the store: a lost or slow server, a cluster without a
quorum or a full memory become `StoreUnavailable` (the caller may retry later), anything else
a `StoreError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from feature_store.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from feature_store.redis import RedisStoreConfig

RedisClient = redis.Redis | RedisCluster

#: Retry-after hints, in seconds: a lost server takes a moment, a full memory longer.
RETRY_AFTER_UNREACHABLE = 2.0
RETRY_AFTER_OUT_OF_MEMORY = 5.0


def connect(config: RedisStoreConfig) -> RedisClient:
    """A pooled client. Nothing is sent yet, except a cluster client's discovery of its nodes.

    Commands that lose their connection or time out are retried `config.retries` times with
    jittered exponential backoff (a cluster client also refreshes its slot map in between).
    """
    retry = Retry(
        ExponentialWithJitterBackoff(
            cap=config.backoff_cap_seconds, base=config.backoff_base_seconds
        ),
        config.retries,
    )
    options: dict[str, Any] = {
        "socket_timeout": config.socket_timeout_seconds,
        "socket_connect_timeout": config.socket_connect_timeout_seconds,
        "max_connections": config.max_connections,
    }
    with translated_errors():
        if config.type == "redis+cluster":
            return RedisCluster.from_url(config.url, retry=retry, **options)
        pool = redis.ConnectionPool.from_url(config.url, retry=retry, **options)
        return redis.Redis(connection_pool=pool)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise redis-py's errors as store errors, so callers never handle `redis` themselves."""
    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        raise StoreUnavailable(
            f"Redis is out of memory: {exc}", retry_after=RETRY_AFTER_OUT_OF_MEMORY
        ) from exc
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.RedisClusterException,  # e.g. no node of the cluster answers
    ) as exc:
        raise StoreUnavailable(
            f"Redis store unavailable: {exc}", retry_after=RETRY_AFTER_UNREACHABLE
        ) from exc
    except redis.exceptions.RedisError as exc:
        raise StoreError(f"Redis store error: {exc}") from exc
