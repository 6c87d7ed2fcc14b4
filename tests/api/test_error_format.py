"""Every error the framework itself raises answers in the API's error format
(`{"error", "message", "errors"}`), not FastAPI's `{"detail": ...}`."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": [{"event_id": "\\xff"}]}'.replace(b"\\xff", b"\xff"),  # invalid UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nesting no parser should follow
        b'{"events": [' + b"1" * 5000 + b"]}",  # an integer of 5,000 digits
        b'{"events": [',  # cut short
    ],
    ids=["invalid-utf8", "deep-nesting", "huge-integer", "truncated"],
)
def test_a_body_that_cannot_be_parsed_is_a_4xx_in_the_error_format(
    client: httpx.Client, body: bytes
) -> None:
    answer = client.post("/v1/events", content=body, headers={"content-type": "application/json"})

    assert 400 <= answer.status_code < 500, answer.text
    error = answer.json()
    assert set(error) == {"error", "message", "errors"}
    assert error["error"] in {"invalid_body", "invalid_request"}


def test_an_unknown_path_is_a_404_in_the_error_format(client: httpx.Client) -> None:
    answer = client.get("/v1/no-such-thing")

    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "message": "not found", "errors": []}


def test_a_wrong_method_is_a_405_in_the_error_format_with_allow(client: httpx.Client) -> None:
    answer = client.delete("/v1/events")

    assert answer.status_code == 405
    assert answer.json()["error"] == "method_not_allowed"
    assert "POST" in answer.headers["allow"]


def test_a_405_allows_every_method_of_the_path(client: httpx.Client) -> None:
    answer = client.request("PATCH", "/v1/customers/cust-1")

    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET"
