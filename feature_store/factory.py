"""`open_store`: turns a store URL (`RAPPORT_STORE`) into an `OnlineStore`, so callers never branch.

Supported URLs:

* `sqlite:///relative/path.db` and `sqlite:////absolute/path.db`: the embedded store
  (the SQLAlchemy convention: the path is what follows the third slash).

Reserved, not implemented yet: `redis://` and `redis+cluster://`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from engine.config import EngineConfig
from feature_store.base import OnlineStore
from feature_store.errors import StoreUnavailable, UnsupportedStoreUrl
from feature_store.sqlite import SQLiteStore, SQLiteStoreConfig

_SQLITE_EXAMPLE = "sqlite:///var/rapport.db"


def open_store(url: str, config: EngineConfig) -> OnlineStore:
    """Open the store that `url` names, with the engine parameters `config`.

    Raises UnsupportedStoreUrl for a scheme no store implements or a malformed URL, and
    StoreUnavailable when the store cannot be reached or created.
    """
    scheme, separator, _ = url.partition("://")
    # Messages name the scheme only: a URL may carry a password (redis://:secret@host).
    if not separator:
        raise UnsupportedStoreUrl(f"a store URL starts with a scheme, e.g. {_SQLITE_EXAMPLE}")
    opener = _OPENERS.get(scheme.lower())
    if opener is None:
        raise UnsupportedStoreUrl(
            f"no store implements the scheme {scheme!r}; use e.g. {_SQLITE_EXAMPLE}"
        )
    return opener(url, config)


def _open_sqlite(url: str, config: EngineConfig) -> OnlineStore:
    parts = urlsplit(url)
    if parts.netloc or parts.query or parts.fragment:
        raise UnsupportedStoreUrl(
            "a SQLite store URL is a path only (no host, query or fragment), "
            f"e.g. {_SQLITE_EXAMPLE}"
        )
    path = unquote(parts.path)[1:]  # the part after "sqlite:///"
    if not path:
        # An in-memory database would be private to each connection, i.e. to each thread.
        raise UnsupportedStoreUrl(f"a SQLite store URL needs a file path, e.g. {_SQLITE_EXAMPLE}")
    sqlite_config = SQLiteStoreConfig(path=Path(path))
    try:
        sqlite_config.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(f"cannot create the folder of the SQLite store: {exc}") from exc
    return SQLiteStore(config, sqlite_config)


def _not_implemented_yet(url: str, config: EngineConfig) -> OnlineStore:
    scheme = url.partition("://")[0]
    raise UnsupportedStoreUrl(
        f"the {scheme}:// store is not implemented yet; use {_SQLITE_EXAMPLE} meanwhile"
    )


#: Scheme -> opener. A new backend adds its module (with its config class) and one line here.
_OPENERS: dict[str, Callable[[str, EngineConfig], OnlineStore]] = {
    "sqlite": _open_sqlite,
    "redis": _not_implemented_yet,
    "redis+cluster": _not_implemented_yet,
}
