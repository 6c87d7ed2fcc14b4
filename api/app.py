"""The app factory: one place wires settings, the store and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.logs import access_log, configure_logging
from api.routes import customers, decisions, events, health, outcomes
from api.settings import Settings
from feature_store.factory import open_store


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. The store opens in the lifespan, never at import time."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = open_store(settings.store, settings.engine)
        try:
            yield
        finally:
            app.state.store.close()

    app = FastAPI(
        title="Rapport",
        version="0.1.0",
        summary="Learning-relationship personalisation: events in, defaults and actions out.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.middleware("http")(access_log)
    install_error_handlers(app, settings.store_retry_after_seconds)
    for router in (events.router, customers.router, decisions.router, outcomes.router):
        app.include_router(router)
    app.include_router(health.router)
    return app
