"""Experiment definitions in Redis or Redis Cluster.

One hash, `rp:experiments:{experiments}` (under the online store's prefix, `rp` unless the URL
sets `key_prefix`): field = experiment id, value = `{"revision": n, "definition": "<JSON>"}`.
One key is one cluster slot, so each change is one atomic command or script, in cluster mode
too; there are few experiments, so one key costs nothing. No command is sent before the first
call, so an API can start while Redis is down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import cast

from feature_store.experiments import (
    DuplicateExperiment,
    ExperimentRegistry,
    StaleExperiment,
    StoredExperiment,
    UnknownExperiment,
)
from feature_store.redis.connection import (
    SIDE_URL_SETTINGS,
    RedisSideConfig,
    SideClient,
    redis_config_from_url,
)

# KEYS: the hash. ARGV: id, expected revision, new envelope. Returns ok, unknown or stale.
_REPLACE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
    return 'unknown'
end
if tostring(cjson.decode(current)['revision']) ~= ARGV[2] then
    return 'stale'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 'ok'
"""


class RedisExperimentConfig(RedisSideConfig):
    """Where the Redis experiment registry is (see `open_redis_experiments` for the URL)."""


class RedisExperimentRegistry(ExperimentRegistry):
    """`ExperimentRegistry` on a Redis server or a Redis Cluster (see the module docstring)."""

    def __init__(self, config: RedisExperimentConfig) -> None:
        self.config = config
        self._key = f"{config.key_prefix}:experiments:{{experiments}}"
        self._side = SideClient(config, "Redis experiment registry")

    def create(self, experiment_id: str, definition: str) -> StoredExperiment:
        with self._side.translated_errors():
            created = self._side.get().hsetnx(self._key, experiment_id, _envelope(definition, 1))
        if not created:
            raise DuplicateExperiment(f"experiment {experiment_id!r} already exists")
        return StoredExperiment(experiment_id, definition, 1)

    def get(self, experiment_id: str) -> StoredExperiment | None:
        with self._side.translated_errors():
            envelope = cast(str | None, self._side.get().hget(self._key, experiment_id))
        return None if envelope is None else _stored(experiment_id, envelope)

    def list(self) -> list[StoredExperiment]:
        with self._side.translated_errors():
            envelopes = cast(Mapping[str, str], self._side.get().hgetall(self._key))
        return [_stored(name, envelopes[name]) for name in sorted(envelopes)]

    def replace(self, experiment_id: str, definition: str, *, revision: int) -> StoredExperiment:
        with self._side.translated_errors():
            outcome = self._side.get().eval(
                _REPLACE,
                1,
                self._key,
                experiment_id,
                str(revision),
                _envelope(definition, revision + 1),
            )
        if outcome == "unknown":
            raise UnknownExperiment(f"no experiment {experiment_id!r}")
        if outcome == "stale":
            raise StaleExperiment(f"experiment {experiment_id!r} is no longer at {revision}")
        return StoredExperiment(experiment_id, definition, revision + 1)

    def close(self) -> None:
        self._side.close()


def open_redis_experiments(url: str) -> RedisExperimentRegistry:
    """A registry on `redis://host[:port][/db]` or `redis+cluster://host[:port]` (any node).

    The URL is the online store's (`RAPPORT_STORE`): of its query, the registry reads
    `key_prefix` and the socket timeouts and leaves the rest to the store. Messages never quote
    the URL (it may hold a password).
    """
    config = redis_config_from_url(
        url, RedisExperimentConfig, what="experiment registry", settings=SIDE_URL_SETTINGS
    )
    return RedisExperimentRegistry(config)


def _envelope(definition: str, revision: int) -> str:
    return json.dumps({"revision": revision, "definition": definition})


def _stored(experiment_id: str, envelope: str) -> StoredExperiment:
    data = json.loads(envelope)
    return StoredExperiment(experiment_id, str(data["definition"]), int(data["revision"]))
