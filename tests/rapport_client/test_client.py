"""The typed client against the real app over HTTP: a touchpoint's whole exchange (events, a
decision with its usual default, the customer's answer), errors with their fields and request
id, and retries only where they are safe."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.settings import Settings
from feature_store.credentials import Scope
from rapport_client import Decision, RapportClient, RapportError
from tests.api.conftest import LiveServer, create_key


@pytest.fixture
def rapport(settings: Settings, server: LiveServer) -> Iterator[RapportClient]:
    key = create_key(settings, "atm-switch", [Scope.EVENTS_WRITE, Scope.DECISIONS])
    with RapportClient(server.url, api_key=key) as client:
        yield client


def withdrawals(customer_id: str, count: int) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [
        {
            "event_id": f"{customer_id}-w{week}",
            "customer_id": customer_id,
            "touchpoint": "atm-0042",
            "channel": "atm",
            "type": "request",
            "occurred_at": now - timedelta(weeks=count - week),
            "attributes": {"request": "cash_withdrawal", "amount": 200, "currency": "EUR",
                           "receipt": False},
        }
        for week in range(count)
    ]  # fmt: skip


def test_a_touchpoint_sends_events_gets_its_usual_default_and_reports_the_answer(
    rapport: RapportClient,
) -> None:
    sent = rapport.send_events(withdrawals("cust-client", 6))
    assert (sent.accepted, sent.rejected) == (6, 0)
    assert rapport.send_events(withdrawals("cust-client", 6)).duplicates == 6

    decision = rapport.decide(customer_id="cust-client", touchpoint="atm-0042", channel="atm")

    assert isinstance(decision, Decision)
    assert not decision.degraded
    [usual] = [d for d in decision.defaults if d.request == "cash_withdrawal"]
    assert usual.values == {"amount": 200, "currency": "EUR", "receipt": False}
    assert "200" in usual.reasons.en
    outcome = rapport.record_outcome(decision.decision_id, usual.id, "declined")
    # The report was recorded (status "accepted", recorded true); the answer was a decline.
    assert (outcome.outcome, outcome.status, outcome.recorded) == ("declined", "accepted", True)
    again = rapport.record_outcome(decision.decision_id, usual.id, "declined")
    assert (again.status, again.recorded) == ("duplicate", False)


def test_an_error_carries_the_api_code_the_fields_and_the_request_id(
    rapport: RapportClient,
) -> None:
    with pytest.raises(RapportError) as refused:
        rapport.decide(customer_id="a b", touchpoint="atm-0042", channel="atm", request_id="t-1")

    assert refused.value.status == 422
    assert refused.value.code == "invalid_request"
    assert [e["field"] for e in refused.value.errors] == ["body.customer_id"]
    assert refused.value.request_id == "t-1"


def test_a_key_without_the_scope_is_a_403_error(rapport: RapportClient) -> None:
    with pytest.raises(RapportError) as refused:
        rapport.customer("cust-client")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


class Flaky(httpx.BaseTransport):
    """Answers 503 with Retry-After `failures` times, then passes requests to the server."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[str] = []
        self.real = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        if self.failures > 0:
            self.failures -= 1
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "busy"})
        return self.real.handle_request(request)


def test_idempotent_calls_are_retried_through_a_503_and_decisions_are_not(
    settings: Settings, server: LiveServer
) -> None:
    key = create_key(settings, "flaky", [Scope.EVENTS_WRITE, Scope.DECISIONS])
    flaky = Flaky(failures=2)
    with RapportClient(server.url, api_key=key, transport=flaky, retries=2) as client:
        assert client.send_events(withdrawals("cust-flaky", 1)).accepted == 1
        assert flaky.seen == ["/v1/events"] * 3

        flaky.failures, flaky.seen = 1, []
        with pytest.raises(RapportError) as busy:
            client.decide(customer_id="cust-flaky", touchpoint="atm-0042", channel="atm")
        assert busy.value.status == 503
        assert busy.value.retry_after == 0
        assert flaky.seen == ["/v1/decisions"]


def test_a_server_that_is_not_there_is_tried_again_then_reported() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with (
            RapportClient(f"http://127.0.0.1:{port}", api_key="rk_x", retries=1) as client,
            pytest.raises(httpx.ConnectError),
        ):
            client.decide(customer_id="c", touchpoint="atm-0042", channel="atm")
