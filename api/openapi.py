"""The OpenAPI document, completed with every status each route answers and the real error
schema, so that a client generated from it handles what the API sends.

FastAPI lists 200 and its own 422 (`{"detail": [...]}`, which this API never sends). Here every
error status carries `ErrorBody` (`{"error", "message", "errors": [{"field", "reason"}]}`):

* every route with parameters or a body: 422;
* every guarded route: 401, 403;
* every route taking a body: 413 (`RAPPORT_BODY_LIMIT_*`);
* every `/v1` route: 503 (the store, or the worker's overload guard, with `Retry-After`);
* the route-specific statuses of `ROUTE_STATUSES` (404, 409, 410, 501);
* every route: 500 (an internal error, still in the error format).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_BODY = {
    "type": "object",
    "required": ["error", "message", "errors"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. invalid_request."},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

_DESCRIPTIONS = {
    "400": "The body is not JSON (invalid UTF-8, cut short, nested too deep, a huge number).",
    "401": "No valid API key (missing, malformed, unknown or revoked).",
    "403": "The key lacks the route's scope.",
    "404": "Not found.",
    "409": "Conflicts with what is stored (a duplicate, or changed meanwhile).",
    "410": "The customer was erased.",
    "413": "The body is larger than the route takes.",
    "422": "A field is invalid: `errors` names it and says why.",
    "500": "Internal error (logged without personal data).",
    "501": "The store cannot do this.",
    "503": "The store or the worker is unavailable or overloaded; retry after `Retry-After`.",
}

#: Statuses particular to a route, beyond those every route of its kind answers.
ROUTE_STATUSES: dict[tuple[str, str], tuple[str, ...]] = {
    ("get", "/v1/customers/{customer_id}"): ("404", "410"),
    ("put", "/v1/customers/{customer_id}/preferences"): ("410",),
    ("put", "/v1/customers/{customer_id}/consents"): ("404", "410"),
    ("get", "/v1/customers/{customer_id}/export"): ("404", "410", "501"),
    ("delete", "/v1/customers/{customer_id}"): ("404",),
    ("post", "/v1/identities/link"): ("410",),
    ("get", "/v1/decisions/{decision_id}"): ("404",),
    ("post", "/v1/outcomes"): ("404", "410"),
    ("post", "/v1/experiments"): ("409",),
    ("get", "/v1/experiments/{experiment_id}"): ("404",),
    ("put", "/v1/experiments/{experiment_id}/weights"): ("404", "409"),
    ("post", "/v1/experiments/{experiment_id}/stop"): ("404", "409"),
    ("get", "/v1/experiments/{experiment_id}/report"): ("404",),
}


def install_openapi(app: FastAPI) -> None:
    """Replace `app.openapi` with one that completes FastAPI's document (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = completed(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def completed(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ERROR_BODY
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            statuses = {"500", *ROUTE_STATUSES.get((method, path), ())}
            if operation.get("parameters") or operation.get("requestBody"):
                statuses.add("422")
            if operation.get("security"):
                statuses |= {"401", "403"}
            if operation.get("requestBody"):
                statuses |= {"400", "413"}
            if path.startswith("/v1/"):
                statuses.add("503")
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses[status] = {
                    "description": _DESCRIPTIONS[status],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
    return document
