"""Domain and store errors mapped to HTTP answers; every error body names field and reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.serving import UnknownCustomer, UnknownDecision
from engine.errors import InvalidPreference, UnknownOutcomeTarget
from experiments.definitions import InvalidExperiment
from feature_store.errors import CustomerErased, StoreUnavailable, UnsupportedCapability
from feature_store.experiments import DuplicateExperiment, StaleExperiment, UnknownExperiment


def field_errors(errors: list[Any], prefix: tuple[str | int, ...] = ()) -> list[dict[str, str]]:
    """Pydantic errors as `[{"field": "body.events.0.occurred_at", "reason": "..."}]`."""
    shaped = []
    for error in errors:
        context = error.get("ctx") or {}
        location = [*prefix, *error.get("loc", ())]
        if "field" in context:  # errors raised inside typed attributes carry their own path
            location = [*location, context["field"]]
            reason = str(context.get("reason", error["msg"]))
        else:
            reason = str(error["msg"])
        shaped.append({"field": ".".join(str(p) for p in location) or "body", "reason": reason})
    return shaped


def error_body(
    code: str, message: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"error": code, "message": message, "errors": errors or []}


def invalid_request(field: str, reason: str) -> JSONResponse:
    """The 422 of one invalid field, as request validation answers it."""
    return JSONResponse(
        status_code=422,
        content=error_body(
            "invalid_request", "invalid request", [{"field": field, "reason": reason}]
        ),
    )


#: The error code of an HTTP error raised by the framework itself (a body it cannot parse, a
#: path no route has, a method the route does not take).
HTTP_ERROR_CODES = {
    400: "invalid_body",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this request's path (Starlette's 405 names only the
    first route that matched the path, though several routes may share it)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = request.app.routes if contexts is None else contexts(request.app.routes)
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        # The framework's details are fixed texts ("Not Found", "There was an error parsing
        # the body"), never the input.
        message = str(exc.detail) if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(
            status_code=exc.status_code, headers=headers, content=error_body(code, message.lower())
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged, scrubbed, by api.app.RapportApp once this answer is sent.
        return JSONResponse(
            status_code=500,
            content=error_body("internal_error", "internal error; it has been logged"),
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(list(exc.errors()))
        return JSONResponse(
            status_code=422, content=error_body("invalid_request", "invalid request", errors)
        )

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(max(retry_after_seconds, round(exc.retry_after)))},
            content=error_body("store_unavailable", "the store is unavailable; retry later"),
        )

    @app.exception_handler(InvalidPreference)
    async def invalid_preference(request: Request, exc: InvalidPreference) -> JSONResponse:
        field = {"field": f"body.preferences.{exc.key}", "reason": exc.reason}
        return JSONResponse(
            status_code=422, content=error_body("invalid_preference", str(exc), [field])
        )

    @app.exception_handler(InvalidExperiment)
    async def invalid_experiment(request: Request, exc: InvalidExperiment) -> JSONResponse:
        field = {"field": f"body.{exc.field}" if exc.field else "body", "reason": exc.reason}
        return JSONResponse(
            status_code=422, content=error_body("invalid_experiment", str(exc), [field])
        )

    for error_type, (status, code, message, field, reason) in FIXED_ANSWERS.items():
        app.add_exception_handler(error_type, _fixed_answer(status, code, message, field, reason))


#: Domain errors with a fixed answer: status, code, message (None: the error's own), and the
#: field and reason named in `errors`.
FIXED_ANSWERS: dict[type[Exception], tuple[int, str, str | None, str, str]] = {
    UnknownCustomer: (404, "unknown_customer", "no such customer", "customer_id", "not found"),
    UnknownDecision: (404, "unknown_decision", "no such decision", "decision_id", "not found"),
    CustomerErased: (
        410,
        "customer_erased",
        "the customer was erased: nothing is stored for them",
        "customer_id",
        "erased",
    ),
    UnknownOutcomeTarget: (422, "unknown_item", None, "id", "not returned by this decision"),
    DuplicateExperiment: (409, "duplicate_experiment", None, "body.id", "already exists"),
    StaleExperiment: (409, "experiment_changed", None, "experiment_id", "changed meanwhile; retry"),
    UnknownExperiment: (404, "unknown_experiment", None, "experiment_id", "not found"),
    UnsupportedCapability: (501, "unsupported_by_store", None, "store", "cannot read its logs"),
}


def _fixed_answer(
    status: int, code: str, message: str | None, field: str, reason: str
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        errors = [{"field": field, "reason": reason}]
        return JSONResponse(
            status_code=status, content=error_body(code, message or str(exc), errors)
        )

    return answer
