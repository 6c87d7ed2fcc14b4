"""Connecting to Redis and naming its failures: the pooled client and the error translation.

Used by `feature_store.redis.store`; its `RedisStoreConfig` says how long to wait and how often to
retry. redis-py's errors never leave the store: a lost or slow server, a cluster without a
quorum or a full memory become `StoreUnavailable` (the caller may retry later), anything else
a `StoreError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import redis
import redis.exceptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from feature_store.errors import StoreError, StoreUnavailable, UnsupportedStoreUrl

if TYPE_CHECKING:
    from feature_store.redis.config import RedisStoreConfig

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


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script to run in a pipeline: `EVALSHA` of `script` on `keys` (one slot) and `args`."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | bytes | int]


#: A plain command in a pipeline, e.g. ("SET", key, value, "NX", "EX", 60).
Command = tuple[str | bytes | int, ...]


def pipelined(client: RedisClient, calls: Sequence[ScriptCall | Command]) -> list[Any]:
    """The replies of `calls`, sent in one pipelined round trip (one per node on a cluster,
    in parallel), in order. Scripts go as `EVALSHA` only: a server that lost its script cache
    (a restart, a failover) answers NOSCRIPT to those, which are then loaded and sent again,
    alone (the others ran: sending them twice could apply them twice). Any other error reply
    is raised, translated, once every reply is in.

    redis-py's own script handling in pipelines would ask `SCRIPT EXISTS` first, a round trip
    per pipeline; this pays it only when a script is actually missing."""
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for _ in range(3):
        with translated_errors():
            pipe = client.pipeline(transaction=False)
            for index in todo:
                call = calls[index]
                if isinstance(call, ScriptCall):
                    pipe.execute_command(
                        "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args
                    )
                else:
                    pipe.execute_command(*call)
            answers = pipe.execute(raise_on_error=False)
        missing: list[int] = []
        failure: Exception | None = None
        for index, answer in zip(todo, answers, strict=True):
            if isinstance(answer, redis.exceptions.NoScriptError):
                missing.append(index)
            elif isinstance(answer, Exception):
                failure = failure or answer
            else:
                replies[index] = answer
        if failure is not None:
            with translated_errors():
                raise failure
        if not missing:
            return replies
        with translated_errors():
            scripts = {
                id(c.script): c.script for i in missing if isinstance(c := calls[i], ScriptCall)
            }
            for script in scripts.values():
                script.sha = client.script_load(script.script)
        todo = missing
    raise StoreError("Redis kept losing the store's scripts")


class RedisSideConfig(BaseModel):
    """Where a side registry (API keys, experiments) is: the online store's Redis, of whose
    URL query it reads only `SIDE_URL_SETTINGS`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["redis", "redis+cluster"] = "redis"
    url: str = Field(repr=False, description="redis://[[user]:password@]host:port/db")
    key_prefix: str = Field("rp", pattern=r"^[A-Za-z0-9_.\-]{1,32}$")
    socket_timeout_seconds: float = Field(0.25, gt=0, description="Per command, in seconds.")
    socket_connect_timeout_seconds: float = Field(0.25, gt=0, description="In seconds.")


#: What a side registry reads from the query of the online store's URL; the rest is the store's.
SIDE_URL_SETTINGS = ("key_prefix", "socket_timeout_seconds", "socket_connect_timeout_seconds")


class _RedisBackendConfig(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def socket_timeout_seconds(self) -> float: ...
    @property
    def socket_connect_timeout_seconds(self) -> float: ...


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def redis_config_from_url(
    url: str, model: type[ConfigT], *, what: str, settings: Collection[str] | None = None
) -> ConfigT:
    """The pydantic config `model` of a Redis backend from `redis://[[user]:password@]host
    [:port][/db]` or `redis+cluster://...@host[:port]`; the URL's query sets its fields (only
    those named in `settings`, if given: a side registry leaves the rest to the store).

    Raises UnsupportedStoreUrl naming what is wrong; messages never quote the URL (it may hold
    a password)."""
    scheme = url.partition("://")[0].lower()
    example = "redis+cluster://host:7000" if scheme == "redis+cluster" else "redis://host:6379/0"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise UnsupportedStoreUrl(f"a {scheme}:// URL needs host[:port], e.g. {example}") from None
    if not parts.hostname or parts.fragment:
        raise UnsupportedStoreUrl(f"a {scheme}:// URL needs host[:port], e.g. {example}")
    database = parts.path.lstrip("/")
    if scheme == "redis+cluster" and database not in ("", "0"):
        raise UnsupportedStoreUrl(f"a Redis Cluster has one database: no /db, e.g. {example}")
    if not (database == "" or database.isdigit()):
        raise UnsupportedStoreUrl(f"a Redis database is a number, e.g. {example}")
    netloc = parts.netloc if port is not None else f"{parts.netloc}:6379"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if settings is not None:
        query = {name: value for name, value in query.items() if name in settings}
    if {"type", "url"} & query.keys():
        raise UnsupportedStoreUrl(f"the scheme and address of a {scheme}:// URL are not settings")
    path = "" if scheme == "redis+cluster" else f"/{database or 0}"
    try:
        return model.model_validate(
            {**query, "type": scheme, "url": urlunsplit(("redis", netloc, path, "", ""))}
        )
    except ValidationError as exc:
        # Names the fields only: a message that quotes the input could quote a password.
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
        raise UnsupportedStoreUrl(
            f"bad {what} settings in the {scheme}:// URL query: {', '.join(fields)}"
        ) from None


def plain_client(config: _RedisBackendConfig) -> RedisClient:
    """A pooled client decoding answers to str, for the side registries (API keys,
    experiments); a cluster client asks the node for the others at once."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": config.socket_timeout_seconds,
        "socket_connect_timeout": config.socket_connect_timeout_seconds,
    }
    if config.type == "redis+cluster":
        return RedisCluster.from_url(config.url, **options)
    return redis.Redis.from_url(config.url, **options)


class LazyClient:
    """A pooled client opened on first use (so nothing talks to Redis before the first call),
    shared by threads and closed once: later calls raise `StoreUnavailable`. `on_open` runs
    once with the new client, before anyone else gets it (the store registers its scripts).
    `what` names it in errors, e.g. "Redis store" (never the URL, which may hold a password).
    """

    def __init__(
        self,
        open_client: Callable[[], RedisClient],
        what: str,
        on_open: Callable[[RedisClient], None] | None = None,
    ) -> None:
        self.what = what
        self._open_client, self._on_open = open_client, on_open
        self._lock = threading.Lock()
        self._client: RedisClient | None = None
        self._closed = False

    def get(self) -> RedisClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise StoreUnavailable(
                    f"the {self.what} is closed", retry_after=RETRY_AFTER_UNREACHABLE
                )
            if self._client is None:
                client = self._open_client()
                if self._on_open is not None:
                    self._on_open(client)
                self._client = client
            return self._client

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()


class SideClient(LazyClient):
    """The client of a side registry (API keys, experiments): a `LazyClient` decoding answers
    to str, and redis-py's errors translated into store errors naming the registry (`what`,
    e.g. "Redis credential store")."""

    #: Retry-after hint when the registry's Redis is unreachable, in seconds.
    RETRY_AFTER_SECONDS = 1.0

    def __init__(self, config: _RedisBackendConfig, what: str) -> None:
        super().__init__(lambda: plain_client(config), what)
        self.config = config

    @contextmanager
    def translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.RedisClusterException,
        ) as exc:
            raise StoreUnavailable(
                f"{self.what} unavailable: {type(exc).__name__}",
                retry_after=self.RETRY_AFTER_SECONDS,
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise StoreError(f"{self.what} error: {exc}") from exc
