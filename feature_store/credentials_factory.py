"""`open_credentials`: turns a store URL (`RAPPORT_STORE`) into a `CredentialStore`.

API keys live in the same backend as the online store, so one URL configures both:

* `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`: the table `api_keys` in the
  online store's file;
* `redis://[:password@]host:port[/db]`: a Redis server;
* `redis+cluster://[:password@]host:port`: a Redis Cluster, through any one of its nodes.
"""

from __future__ import annotations

from collections.abc import Callable

from feature_store.credentials import CredentialStore
from feature_store.credentials_redis import open_redis_credentials
from feature_store.credentials_sqlite import SQLiteCredentialStore
from feature_store.factory import opener_for, sqlite_path


def open_credentials(url: str) -> CredentialStore:
    """Open the credential store of the backend `url` names.

    Raises UnsupportedStoreUrl for a scheme no store implements or a malformed URL, and
    StoreUnavailable when the store cannot be reached or created. Messages never echo the URL
    (it may hold a password).
    """
    return opener_for(url, _OPENERS, "credential store")(url)


def _open_sqlite(url: str) -> CredentialStore:
    return SQLiteCredentialStore(sqlite_path(url))


#: Scheme -> opener, the same schemes as `feature_store.factory.open_store`.
_OPENERS: dict[str, Callable[[str], CredentialStore]] = {
    "sqlite": _open_sqlite,
    "redis": open_redis_credentials,
    "redis+cluster": open_redis_credentials,
}
