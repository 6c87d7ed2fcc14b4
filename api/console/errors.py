"""The console's error pages: sign-in redirects, 403 for a missing scope, 404, 503."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.console.pages import BadInstant
from api.console.rendering import render
from api.console.session import (
    BadCsrfToken,
    MissingConsoleScope,
    NeedsSignIn,
    Operator,
    current_operator,
)
from api.serving import UnknownCustomer, UnknownDecision
from feature_store.errors import StoreError, StoreUnavailable, UnsupportedCapability
from feature_store.experiments import UnknownExperiment


def _operator_or_none(request: Request) -> Operator | None:
    try:
        return current_operator(request)
    except (NeedsSignIn, StoreError):
        return None


def error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(
        request,
        "error.html",
        _operator_or_none(request),
        status_code=status,
        title=title,
        message=message,
    )


def install_console_errors(console: FastAPI) -> None:
    @console.exception_handler(NeedsSignIn)
    async def sign_in(request: Request, exc: NeedsSignIn) -> Response:
        path = request.url.path if request.method == "GET" else "/console/"
        return RedirectResponse(f"/console/login?next={path}", status_code=303)

    @console.exception_handler(MissingConsoleScope)
    async def forbidden(request: Request, exc: MissingConsoleScope) -> HTMLResponse:
        return error_page(
            request,
            403,
            "Not allowed",
            f"This page needs an API key with the scope “{exc.scope.value}”. The key you "
            "signed in with does not have it: sign in with another key, or ask an "
            "administrator to issue one (rapport keys create).",
        )

    @console.exception_handler(BadCsrfToken)
    async def bad_form(request: Request, exc: BadCsrfToken) -> HTMLResponse:
        return error_page(
            request,
            403,
            "Form refused",
            "The form did not carry this session's token (it may have expired). Go back, "
            "reload the page and send it again.",
        )

    @console.exception_handler(UnknownCustomer)
    async def unknown_customer(request: Request, exc: UnknownCustomer) -> HTMLResponse:
        return error_page(request, 404, "Unknown customer", "No event of this customer is held.")

    @console.exception_handler(UnknownDecision)
    async def unknown_decision(request: Request, exc: UnknownDecision) -> HTMLResponse:
        return error_page(
            request, 404, "Unknown decision", "No decision with this id is in the decision log."
        )

    @console.exception_handler(UnknownExperiment)
    async def unknown_experiment(request: Request, exc: UnknownExperiment) -> HTMLResponse:
        return error_page(request, 404, "Unknown experiment", "No experiment has this id.")

    @console.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> HTMLResponse:
        return error_page(request, 503, "Store unavailable", "The store cannot be reached now.")

    @console.exception_handler(UnsupportedCapability)
    async def unsupported(request: Request, exc: UnsupportedCapability) -> HTMLResponse:
        return error_page(request, 501, "Not supported", "This store cannot list its customers.")

    @console.exception_handler(BadInstant)
    async def bad_instant(request: Request, exc: BadInstant) -> HTMLResponse:
        return error_page(
            request, 400, "Bad time", "Write the time as ISO 8601, e.g. 2026-12-04T09:30:00+01:00."
        )

    @console.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        fields = ", ".join(str(e["loc"][-1]) for e in exc.errors())
        return error_page(request, 400, "Bad request", f"Check these fields: {fields}.")

    @console.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return error_page(
            request,
            exc.status_code,
            "Not found" if exc.status_code == 404 else "Error",
            "There is no such page in the console.",
        )
