"""The real app, served by uvicorn on a free port, driven over HTTP with a real API key."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.settings import Settings
from feature_store.credentials import Scope, issue_key
from feature_store.factory import open_credentials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn in a background thread; stops when the test ends."""

    def __init__(self, settings: Settings, app: FastAPI | None = None) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app or create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @classmethod
    def for_app(cls, app: FastAPI) -> LiveServer:
        """Serve an app built (and changed) by the test itself."""
        return cls(app.state.settings, app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The MLflow store is the test's own (never created unless a test trains): a champion in
    # the project's var/mlflow must not change what these tests' decisions are scored by.
    return Settings(
        store=f"sqlite:///{tmp_path / 'rapport.db'}",
        environment="test",
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )


def create_key(settings: Settings, name: str, scopes: Iterable[Scope]) -> str:
    """Issue a key and save it in the settings' store, as `rapport keys create` does."""
    key, record = issue_key(name, scopes, at=datetime.now(UTC))
    with closing(open_credentials(settings.store)) as credentials:
        credentials.save(record)
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def api_key(settings: Settings) -> str:
    """A key with every scope, in the test store."""
    return create_key(settings, "tests-all-scopes", Scope)


@pytest.fixture
def client(api_key: str, server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of the live app that sends `api_key` (every scope) on each request."""
    with httpx.Client(base_url=server.url, timeout=10, headers=bearer(api_key)) as http:
        yield http


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_settings(
    request: pytest.FixtureRequest, tmp_path: Path, settings: Settings
) -> Iterator[Settings]:
    """The test's settings on SQLite, then on a redis-server of its own: tests that take it run
    once on each store."""
    if request.param == "sqlite":
        yield settings
        return
    from tests.feature_store.redis_servers import RedisServer

    with RedisServer(tmp_path / "redis") as redis:
        yield settings.model_copy(update={"store": redis.url})
