"""The factories: a store URL (`RAPPORT_STORE`) opens the online store, its API keys and its
experiment registry in the backend it names, so callers never branch.

* `open_store(url, config)`: the `OnlineStore`;
* `open_credentials(url)`: the `CredentialStore` (the table `api_keys` in the SQLite file, or
  keys under the store's prefix in Redis);
* `open_experiment_registry(url)`: the `ExperimentRegistry` (the table `experiments`, or one
  Redis hash in one cluster slot).

Supported URLs:

* `sqlite:///relative/path.db` and `sqlite:////absolute/path.db`: the embedded store
  (the SQLAlchemy convention: the path is what follows the third slash).
* `redis://[[user]:password@]host[:port][/db]`: one Redis server (port 6379, db 0 by default).
* `redis+cluster://[[user]:password@]host[:port]`: a Redis Cluster, through any one of its
  nodes; the others are discovered.

A Redis URL's query sets fields of `RedisStoreConfig`, e.g.
`redis://cache:6379/0?dedup_window_seconds=86400&socket_timeout_seconds=0.1`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from engine.config import EngineConfig
from feature_store.base import OnlineStore
from feature_store.credentials import CredentialStore
from feature_store.errors import StoreUnavailable, UnsupportedStoreUrl
from feature_store.experiments import ExperimentRegistry
from feature_store.redis.config import RedisStoreConfig
from feature_store.redis.connection import redis_config_from_url
from feature_store.redis.credentials import open_redis_credentials
from feature_store.redis.experiments import open_redis_experiments
from feature_store.redis.store import RedisStore
from feature_store.sqlite.credentials import SQLiteCredentialStore
from feature_store.sqlite.experiments import SQLiteExperimentRegistry
from feature_store.sqlite.store import SQLiteStore, SQLiteStoreConfig

_SQLITE_EXAMPLE = "sqlite:///var/rapport.db"

Opener = TypeVar("Opener")


def open_store(url: str, config: EngineConfig) -> OnlineStore:
    """Open the store that `url` names, with the engine parameters `config`.

    Raises UnsupportedStoreUrl for a scheme no store implements or a malformed URL, and
    StoreUnavailable when the store cannot be reached or created.
    """
    return opener_for(url, _OPENERS, "store")(url, config)


def open_credentials(url: str) -> CredentialStore:
    """Open the credential store of the backend `url` names: API keys live in the same backend
    as the online store, so one URL configures both.

    Raises UnsupportedStoreUrl for a scheme no store implements or a malformed URL, and
    StoreUnavailable when the store cannot be reached or created. Messages never echo the URL
    (it may hold a password).
    """
    return opener_for(url, _CREDENTIAL_OPENERS, "credential store")(url)


def open_experiment_registry(url: str) -> ExperimentRegistry:
    """Open the experiment registry of the backend `url` names.

    Raises UnsupportedStoreUrl for a scheme no registry implements or a malformed URL, and
    StoreUnavailable when it cannot be reached or created. Messages never echo the URL.
    """
    return opener_for(url, _EXPERIMENT_OPENERS, "experiment registry")(url)


def opener_for(url: str, openers: Mapping[str, Opener], what: str) -> Opener:
    """The opener of `url`'s scheme among `openers`: one scheme table per thing a store URL
    opens (the store, its API keys, its experiments). `what` names that thing in errors."""
    scheme, separator, _ = url.partition("://")
    # Messages name the scheme only: a URL may carry a password (redis://:secret@host).
    if not separator:
        raise UnsupportedStoreUrl(f"a store URL starts with a scheme, e.g. {_SQLITE_EXAMPLE}")
    opener = openers.get(scheme.lower())
    if opener is None:
        raise UnsupportedStoreUrl(
            f"no {what} implements the scheme {scheme!r}; use e.g. {_SQLITE_EXAMPLE}"
        )
    return opener


def sqlite_path(url: str) -> Path:
    """The database file of a `sqlite:///` URL, its folder created. Raises
    UnsupportedStoreUrl for a malformed URL, StoreUnavailable if the folder cannot be made."""
    parts = urlsplit(url)
    if parts.netloc or parts.query or parts.fragment:
        raise UnsupportedStoreUrl(
            "a SQLite store URL is a path only (no host, query or fragment), "
            f"e.g. {_SQLITE_EXAMPLE}"
        )
    path = unquote(parts.path)[1:]  # the part after "sqlite:///"
    if not path or path == ".":
        # An in-memory database would be private to each connection, i.e. to each thread.
        raise UnsupportedStoreUrl(f"a SQLite store URL needs a file path, e.g. {_SQLITE_EXAMPLE}")
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the folder of the SQLite store: {exc}") from exc
    return Path(path)


def _open_sqlite(url: str, config: EngineConfig) -> OnlineStore:
    return SQLiteStore(config, SQLiteStoreConfig(path=sqlite_path(url)))


def _open_redis(url: str, config: EngineConfig) -> OnlineStore:
    """A Redis store; nothing is sent to Redis until the store's first call."""
    return RedisStore(config, redis_config_from_url(url, RedisStoreConfig, what="store"))


#: Scheme -> opener. A new backend adds its module (with its config class) and one line here.
_OPENERS: dict[str, Callable[[str, EngineConfig], OnlineStore]] = {
    "sqlite": _open_sqlite,
    "redis": _open_redis,
    "redis+cluster": _open_redis,
}


def _open_sqlite_credentials(url: str) -> CredentialStore:
    return SQLiteCredentialStore(sqlite_path(url))


def _open_sqlite_experiments(url: str) -> ExperimentRegistry:
    return SQLiteExperimentRegistry(sqlite_path(url))


_CREDENTIAL_OPENERS: dict[str, Callable[[str], CredentialStore]] = {
    "sqlite": _open_sqlite_credentials,
    "redis": open_redis_credentials,
    "redis+cluster": open_redis_credentials,
}

_EXPERIMENT_OPENERS: dict[str, Callable[[str], ExperimentRegistry]] = {
    "sqlite": _open_sqlite_experiments,
    "redis": open_redis_experiments,
    "redis+cluster": open_redis_experiments,
}
