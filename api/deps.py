"""Dependencies injected into route handlers, as `Annotated` aliases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from api.settings import Settings
from feature_store.base import OnlineStore


def get_store(request: Request) -> OnlineStore:
    store: OnlineStore = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_now() -> datetime:
    """The server's clock: the only place the serving path reads it."""
    return datetime.now(UTC)


def get_identity_secret(request: Request) -> bytes:
    settings: Settings = request.app.state.settings
    return settings.identity_secret.get_secret_value().encode()


Store = Annotated[OnlineStore, Depends(get_store)]
IdentitySecret = Annotated[bytes, Depends(get_identity_secret)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Now = Annotated[datetime, Depends(get_now)]
