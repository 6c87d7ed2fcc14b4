"""API key records in Redis or Redis Cluster.

Keys, under the online store's namespace prefix (`rp` unless the URL sets `key_prefix`) and one
hash tag (`{api_keys}`), so that every credential key lives in one cluster slot and each change
is one atomic Lua script, in cluster mode too:

* `rp:auth:{api_keys}:key:<key_hash>`: a hash per record (key_id, name, scopes as a JSON list,
  created_at, and revoked_at once revoked);
* `rp:auth:{api_keys}:id:<key_id>`: the key_hash of that key_id;
* `rp:auth:{api_keys}:name:<name>`: the key_hash of the active key with that name, if any;
* `rp:auth:{api_keys}:all`: a set of every key_hash, for listing.

There are a few keys per touchpoint system, so keeping them in one slot costs nothing. No
command is sent before the first call, so an API can start while Redis is down.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import cast

from feature_store.credentials import ApiKey, CredentialStore, DuplicateKey, DuplicateKeyName
from feature_store.redis.connection import (
    SIDE_URL_SETTINGS,
    RedisSideConfig,
    SideClient,
    redis_config_from_url,
)

# KEYS: record, id, name, index. ARGV: hash, key_id, name, scopes, created_at, revoked_at or "".
_SAVE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
    return 'duplicate_key'
end
local active = ARGV[6] == ''
if active and redis.call('EXISTS', KEYS[3]) == 1 then
    return 'duplicate_name'
end
redis.call('HSET', KEYS[1], 'key_id', ARGV[2], 'name', ARGV[3], 'scopes', ARGV[4],
           'created_at', ARGV[5])
if active then
    redis.call('SET', KEYS[3], ARGV[1])
else
    redis.call('HSET', KEYS[1], 'revoked_at', ARGV[6])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return 'ok'
"""

# KEYS: record, name. ARGV: revoked_at, hash. Returns 1 if revoked now, 0 if not active.
_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then
    return 0
end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
if redis.call('GET', KEYS[2]) == ARGV[2] then
    redis.call('DEL', KEYS[2])
end
return 1
"""


class RedisCredentialConfig(RedisSideConfig):
    """Where the Redis credential store is (see `open_redis_credentials` for the URL)."""


class RedisCredentialStore(CredentialStore):
    """`CredentialStore` on a Redis server or a Redis Cluster (see the module docstring)."""

    def __init__(self, config: RedisCredentialConfig) -> None:
        self.config = config
        self._prefix = f"{config.key_prefix}:auth:{{api_keys}}:"
        self._side = SideClient(config, "Redis credential store")

    def save(self, key: ApiKey) -> None:
        revoked_at = "" if key.revoked_at is None else _utc_text(key.revoked_at)
        with self._side.translated_errors():
            outcome = self._side.get().eval(
                _SAVE,
                4,
                self._key(key.key_hash),
                self._id(key.key_id),
                self._name(key.name),
                self._index(),
                key.key_hash,
                key.key_id,
                key.name,
                json.dumps(sorted(key.scopes)),
                _utc_text(key.created_at),
                revoked_at,
            )
        if outcome == "duplicate_name":
            raise DuplicateKeyName(f"an active key is already named {key.name!r}")
        if outcome == "duplicate_key":
            raise DuplicateKey(f"key {key.key_id} is already stored")

    def find_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._side.translated_errors():
            fields = cast(Mapping[str, str], self._side.get().hgetall(self._key(key_hash)))
        return _record(key_hash, fields) if fields else None

    def list_keys(self) -> list[ApiKey]:
        with self._side.translated_errors():
            client = self._side.get()
            hashes = sorted(cast(set[str], client.smembers(self._index())))
            pipeline = client.pipeline()
            for key_hash in hashes:
                pipeline.hgetall(self._key(key_hash))
            records = cast(list[Mapping[str, str]], pipeline.execute())
        keys = [
            _record(key_hash, fields)
            for key_hash, fields in zip(hashes, records, strict=True)
            if fields
        ]
        return sorted(keys, key=lambda key: (key.created_at, key.name))

    def revoke(self, key_id_or_name: str, *, at: datetime) -> bool:
        # An id first (see CredentialStore.revoke). The lookups run outside the script because
        # a script may only touch the keys it is given; the script checks the state again.
        for index_key in (self._id(key_id_or_name), self._name(key_id_or_name)):
            with self._side.translated_errors():
                client = self._side.get()
                key_hash = cast(str | None, client.get(index_key))
                if key_hash is None:
                    continue
                name = cast(str | None, client.hget(self._key(key_hash), "name"))
                if name is None:
                    continue
                revoked = client.eval(
                    _REVOKE, 2, self._key(key_hash), self._name(name), _utc_text(at), key_hash
                )
            if revoked == 1:
                return True
        return False

    def close(self) -> None:
        self._side.close()

    def _key(self, key_hash: str) -> str:
        return f"{self._prefix}key:{key_hash}"

    def _id(self, key_id: str) -> str:
        return f"{self._prefix}id:{key_id}"

    def _name(self, name: str) -> str:
        return f"{self._prefix}name:{name}"

    def _index(self) -> str:
        return f"{self._prefix}all"


def open_redis_credentials(url: str) -> RedisCredentialStore:
    """A store on `redis://host[:port][/db]` or, for a cluster, `redis+cluster://host[:port]`
    (any one node). The URL is the online store's (`RAPPORT_STORE`): of its query, this store
    reads `key_prefix`, `socket_timeout_seconds` and `socket_connect_timeout_seconds`, and
    leaves the rest to the online store. Messages never quote the URL (it may hold a password).
    """
    config = redis_config_from_url(
        url, RedisCredentialConfig, what="credential store", settings=SIDE_URL_SETTINGS
    )
    return RedisCredentialStore(config)


def _utc_text(when: datetime) -> str:
    return when.astimezone(UTC).isoformat()


def _record(key_hash: str, fields: Mapping[str, str]) -> ApiKey:
    return ApiKey.model_validate(
        {
            "key_hash": key_hash,
            "key_id": fields["key_id"],
            "name": fields["name"],
            "scopes": json.loads(fields["scopes"]),
            "created_at": fields["created_at"],
            "revoked_at": fields.get("revoked_at"),
        }
    )
