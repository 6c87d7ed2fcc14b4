"""Domain and store errors mapped to HTTP answers; every error body names field and reason."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from engine.errors import InvalidPreference, UnknownOutcomeTarget
from feature_store.errors import CustomerErased, StoreUnavailable
from feature_store.serving import UnknownCustomer, UnknownDecision


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


def install_error_handlers(app: FastAPI, retry_after_seconds: int) -> None:
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

    @app.exception_handler(UnknownCustomer)
    async def unknown_customer(request: Request, exc: UnknownCustomer) -> JSONResponse:
        return JSONResponse(
            status_code=404,
            content=error_body(
                "unknown_customer",
                "no such customer",
                [{"field": "customer_id", "reason": "not found"}],
            ),
        )

    @app.exception_handler(UnknownDecision)
    async def unknown_decision(request: Request, exc: UnknownDecision) -> JSONResponse:
        return JSONResponse(
            status_code=404,
            content=error_body(
                "unknown_decision",
                "no such decision",
                [{"field": "decision_id", "reason": "not found"}],
            ),
        )

    @app.exception_handler(InvalidPreference)
    async def invalid_preference(request: Request, exc: InvalidPreference) -> JSONResponse:
        field = {"field": f"body.preferences.{exc.key}", "reason": exc.reason}
        return JSONResponse(
            status_code=422, content=error_body("invalid_preference", str(exc), [field])
        )

    @app.exception_handler(CustomerErased)
    async def customer_erased(request: Request, exc: CustomerErased) -> JSONResponse:
        return JSONResponse(
            status_code=410,
            content=error_body(
                "customer_erased",
                "the customer was erased: nothing is stored for them",
                [{"field": "customer_id", "reason": "erased"}],
            ),
        )

    @app.exception_handler(UnknownOutcomeTarget)
    async def unknown_target(request: Request, exc: UnknownOutcomeTarget) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content=error_body(
                "unknown_item",
                str(exc),
                [{"field": "id", "reason": "not returned by this decision"}],
            ),
        )
