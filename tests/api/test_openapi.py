"""The OpenAPI document lists every status each route answers, with the error schema the API
really sends, so that a generated client handles what comes back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture
def document(settings: Settings) -> dict[str, Any]:
    return create_app(settings).openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def test_every_error_status_has_the_error_body(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == ERROR_REF, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    body = document["components"]["schemas"]["ErrorBody"]
    assert body["required"] == ["error", "message", "errors"]


def test_guarded_routes_list_401_403_and_v1_routes_503(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        statuses = set(operation["responses"])
        assert "500" in statuses, (method, path)
        if operation.get("security"):
            assert {"401", "403"} <= statuses, (method, path)
        if path.startswith("/v1/"):
            assert "503" in statuses, (method, path)
        if operation.get("requestBody"):
            assert {"413", "422"} <= statuses, (method, path)


def test_route_specific_statuses_are_listed(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "404" in paths["/v1/decisions/{decision_id}"]["get"]["responses"]
    assert "409" in paths["/v1/experiments"]["post"]["responses"]
    assert "410" in paths["/v1/customers/{customer_id}"]["get"]["responses"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/decisions", {"touchpoint": "atm"}, 422),
        ("GET", "/v1/decisions/dec_nope", None, 404),
        ("GET", "/v1/customers/nobody", None, 404),
    ],
)
def test_the_documented_error_body_is_what_the_api_sends(
    client: httpx.Client,
    document: dict[str, Any],
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    answer = client.request(method, path, json=body)

    assert answer.status_code == status
    error = answer.json()
    schema = document["components"]["schemas"]["ErrorBody"]
    assert set(error) == set(schema["properties"])
    assert all(set(item) == {"field", "reason"} for item in error["errors"])
