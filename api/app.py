"""The app factory: one place wires settings, the store and the routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing, suppress

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Receive, Send
from starlette.types import Scope as StarletteScope

from api.auth import KeyAuthenticator, install_auth_error_handlers, watch_revocations
from api.console import install_console
from api.docs import install_docs
from api.errors import install_error_handlers
from api.fast_lane import FastLane
from api.limits import BodyLimits, InputGuard
from api.logs import AccessLog, configure_logging, log_unhandled
from api.model_server import open_model_server, start_serving, stop_serving
from api.openapi import install_openapi
from api.overload import OverloadGuard, OverloadLimits
from api.routes import (
    customer_list,
    customers,
    decisions,
    events,
    health,
    identities,
    metrics,
    models,
    outcomes,
    privacy,
    touchpoints,
)
from api.routes.experiments import router as experiments_router
from api.serving import PopulationCache
from api.settings import Settings
from experiments.registry import start_experiments
from feature_store.factory import open_credentials, open_experiment_registry, open_store

#: How old the population state a decision reads may be (channel prior, acceptance rates).
POPULATION_STALENESS_SECONDS = 1.0


class RapportApp(FastAPI):
    """FastAPI that logs the errors no handler answered itself, without personal data.

    Starlette answers such an error with a 500, then raises it again for the server to log,
    and uvicorn would log it with its message (a validation error's message quotes the input).
    Here it is logged scrubbed (types and frames, see `api.logs`) and stops.
    """

    async def __call__(self, scope: StarletteScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # start-up failures stop the server: let it say why
            await super().__call__(scope, receive, send)
            return
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:  # the 500 has been sent; the error only remains to be logged
            log_unhandled(exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API. The store opens in the lifespan, never at import time."""
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with (
            closing(open_store(settings.store, settings.engine)) as store,
            closing(open_credentials(settings.store)) as credentials,  # API keys: same backend
            closing(open_experiment_registry(settings.store)) as experiment_registry,
        ):
            app.state.store = store
            app.state.credentials = credentials
            app.state.api_keys = KeyAuthenticator(
                credentials,
                ttl_seconds=settings.auth_cache_seconds,
                stale_if_error_seconds=settings.auth_stale_if_error_seconds,
            )
            app.state.decision_policy = settings.decision_policy()
            app.state.decision_policy.compiled()  # catalogue and contact policy: once, here
            app.state.population = PopulationCache(
                store, max_staleness_seconds=POPULATION_STALENESS_SECONDS
            )
            refreshing = app.state.population.refresh_every(POPULATION_STALENESS_SECONDS / 2)
            app.state.experiments = experiment_registry
            app.state.running_experiments = start_experiments(
                experiment_registry,
                declared=settings.experiments,
                catalogue=app.state.decision_policy.catalogue,
            )
            catalogue = app.state.decision_policy.catalogue
            app.state.models = open_model_server(settings, [a.id for a in catalogue.actions])
            polling = await start_serving(app.state.models, settings)
            revocations = (
                asyncio.create_task(
                    watch_revocations(app.state.api_keys, settings.auth_revocation_poll_seconds)
                )
                if settings.auth_enabled and settings.auth_revocation_poll_seconds > 0
                else None
            )
            try:
                yield
            finally:
                refreshing.set()
                if revocations is not None:
                    revocations.cancel()
                    with suppress(asyncio.CancelledError):
                        await revocations
                await stop_serving(polling)

    app = RapportApp(
        title="Rapport",
        version="0.1.0",
        summary="Learning-relationship personalisation: events in, defaults and actions out.",
        lifespan=lifespan,
        docs_url=None,  # served by api.docs with shipped assets, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.input_bounds = settings.input_bounds()
    install_docs(app)
    install_openapi(app)
    # Middleware added later wraps what was added before: the access log sees every answer,
    # the overload guard refuses before a key is looked up or a body read, and the input
    # guard checks the key, then bounds the body, before the app parses anything. Innermost,
    # the fast lane answers ordinary decisions without the router's walk (`api.fast_lane`).
    app.add_middleware(FastLane)
    app.add_middleware(
        InputGuard,
        limits=BodyLimits(
            events=settings.body_limit_events_bytes,
            decisions=settings.body_limit_decisions_bytes,
            default=settings.body_limit_default_bytes,
        ),
        auth_enabled=settings.auth_enabled,
    )
    app.add_middleware(OverloadGuard, limits=OverloadLimits.of(settings))
    app.add_middleware(AccessLog)
    if settings.cors_origins:
        # Added last, so outermost: preflights are answered before any key is asked for, and
        # error answers carry the CORS headers too. Keys travel in a header, not in cookies.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )
    install_error_handlers(app, settings.store_retry_after_seconds)
    install_auth_error_handlers(app)
    for router in (
        events.router,
        customers.router,
        privacy.router,
        identities.router,
        decisions.router,
        outcomes.router,
        touchpoints.router,
        models.router,
    ):
        app.include_router(router)
    app.include_router(experiments_router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(customer_list.router)
    install_console(app)
    return app
