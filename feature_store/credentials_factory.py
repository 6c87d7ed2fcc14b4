"""`open_credentials`: turns a store URL (`RAPPORT_STORE`) into a `CredentialStore`.

API keys live in the same backend as the online store, so one URL configures both:

* `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`: the table `api_keys` in the
  online store's file;
* `redis://[:password@]host:port[/db]`: a Redis server;
* `redis+cluster://[:password@]host:port`: a Redis Cluster, through any one of its nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from feature_store.credentials import CredentialStore
from feature_store.credentials_redis import open_redis_credentials
from feature_store.credentials_sqlite import SQLiteCredentialStore
from feature_store.errors import StoreUnavailable, UnsupportedStoreUrl

_SQLITE_EXAMPLE = "sqlite:///var/rapport.db"


def open_credentials(url: str) -> CredentialStore:
    """Open the credential store of the backend `url` names.

    Raises UnsupportedStoreUrl for a scheme no store implements or a malformed URL, and
    StoreUnavailable when the store cannot be reached or created. Messages never echo the URL
    (it may hold a password).
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        raise UnsupportedStoreUrl(f"a store URL starts with a scheme, e.g. {_SQLITE_EXAMPLE}")
    opener = _OPENERS.get(scheme.lower())
    if opener is None:
        raise UnsupportedStoreUrl(
            f"no credential store implements the scheme {scheme!r}; use e.g. {_SQLITE_EXAMPLE}"
        )
    return opener(url)


def _open_sqlite(url: str) -> CredentialStore:
    parts = urlsplit(url)
    if parts.netloc or parts.query or parts.fragment:
        raise UnsupportedStoreUrl(
            "a SQLite store URL is a path only (no host, query or fragment), "
            f"e.g. {_SQLITE_EXAMPLE}"
        )
    path = Path(unquote(parts.path)[1:])  # the part after "sqlite:///"
    if not str(path) or str(path) == ".":
        raise UnsupportedStoreUrl(f"a SQLite store URL needs a file path, e.g. {_SQLITE_EXAMPLE}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the folder of the SQLite store: {exc}") from exc
    return SQLiteCredentialStore(path)


#: Scheme -> opener, the same schemes as `feature_store.factory.open_store`.
_OPENERS: dict[str, Callable[[str], CredentialStore]] = {
    "sqlite": _open_sqlite,
    "redis": open_redis_credentials,
    "redis+cluster": open_redis_credentials,
}
