"""Path and query parameters are checked as bodies are: a bad one is a 422 naming it, in the
error format, never a 500 from deeper in."""

from __future__ import annotations

import httpx
import pytest

BAD_IDS = ["a%20b", "a'b", "a*b", "a%25b", "a!b", "a%00b", "x" * 129]


@pytest.mark.parametrize("customer_id", BAD_IDS)
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/customers/{}/preferences", {"preferences": {"receipt": False}}),
        (
            "PUT",
            "/v1/customers/{}/consents",
            {"consents": [{"purpose": "service", "status": "granted"}]},
        ),
        ("GET", "/v1/customers/{}", None),
        ("GET", "/v1/customers/{}/export", None),
        ("DELETE", "/v1/customers/{}", None),
    ],
)
def test_a_customer_id_outside_the_grammar_is_a_422_naming_it(
    client: httpx.Client, customer_id: str, method: str, path: str, body: object
) -> None:
    answer = client.request(method, path.format(customer_id), json=body)

    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["error"] == "invalid_request"
    assert [e["field"] for e in error["errors"]] == ["path.customer_id"]


@pytest.mark.parametrize(
    ("as_of", "reason"),
    [
        ("2026-01-01T00:00:00", "timezone"),
        ("-2823815", "ISO 8601"),
        ("1700000000", "ISO 8601"),
        ("1066-10-14T09:00:00Z", "between the years"),
    ],
)
def test_as_of_must_be_an_iso_time_with_an_offset(
    client: httpx.Client, as_of: str, reason: str
) -> None:
    answer = client.get("/v1/customers/cust-1", params={"as_of": as_of})

    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"] == "query.as_of"
    assert reason in error["reason"]


def test_a_report_as_of_a_number_is_a_422(client: httpx.Client) -> None:
    answer = client.get("/v1/experiments/exp-1/report", params={"as_of": "-2823815"})

    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["query.as_of"]


def test_a_well_formed_as_of_is_accepted(client: httpx.Client) -> None:
    answer = client.get("/v1/customers/cust-none", params={"as_of": "2026-01-01T00:00:00+01:00"})

    assert answer.status_code == 404  # well formed; the customer is unknown


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/decisions", {"customer_id": "c", "touchpoint": "atm", "channel": "atm", "at": 0},
         "body.at"),
        ("/v1/decisions", {"customer_id": "c", "touchpoint": "atm", "channel": "atm",
                           "at": "2026-01-01T00:00:00"}, "body.at"),
    ],
    ids=["number", "naive"],
)  # fmt: skip
def test_a_body_time_must_be_iso_with_an_offset(
    client: httpx.Client, path: str, body: dict[str, object], field: str
) -> None:
    answer = client.post(path, json=body)

    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_the_decision_schema_says_exactly_one_of_customer_id_and_identity(
    client: httpx.Client,
) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["DecisionIn"]

    assert [option["required"] for option in schema["oneOf"]] == [["customer_id"], ["identity"]]
    both = {
        "customer_id": "c",
        "identity": {"type": "email", "value": "a@example.com"},
        "touchpoint": "atm",
        "channel": "atm",
    }
    assert client.post("/v1/decisions", json=both).status_code == 422
