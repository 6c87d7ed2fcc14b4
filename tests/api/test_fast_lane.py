"""The fast lane (`api.fast_lane`) answers `POST /v1/decisions` as the route does: the same
decision for the same question, and for everything it does not serve itself the route's own
answer (the same status and error body), while logs and metrics still name the route."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.serving
from api.app import create_app
from api.fast_lane import FastLane
from api.settings import Settings
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, bearer, create_key
from tests.api.test_operations import sample

AT = "2026-11-20T12:00:00Z"
ASKED = b'{"customer_id": "c", "touchpoint": "t", "channel": "atm"}'
QUESTION = {"customer_id": "cust-lane-1", "touchpoint": "atm-0042", "channel": "atm", "at": AT}


def _events() -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"lane-{day}",
            "customer_id": "cust-lane-1",
            "touchpoint": "atm-0042",
            "channel": "atm",
            "type": "request",
            "occurred_at": f"2026-11-{day:02d}T10:00:00Z",
            "attributes": {"request": "cash_withdrawal", "amount": 200, "currency": "EUR"},
        }
        for day in range(1, 9)
    ]


class Served:
    """A live app on a store of its own, seeded with the same events, with or without the lane."""

    def __init__(self, tmp_path: Path, *, lane: bool) -> None:
        self.settings = Settings(
            store=f"sqlite:///{tmp_path / 'rapport.db'}",
            environment="test",
            mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
        app = create_app(self.settings)
        if not lane:
            app.user_middleware = [m for m in app.user_middleware if m.cls is not FastLane]
        self.server = LiveServer.for_app(app)
        self.key = create_key(self.settings, "tests", Scope)

    def __enter__(self) -> httpx.Client:
        self.server.__enter__()
        self.client = httpx.Client(base_url=self.server.url, timeout=10, headers=bearer(self.key))
        answer = self.client.post("/v1/events", json={"events": _events()})
        assert answer.status_code == 200, answer.text
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.__exit__(*exc)


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client, Served]]:
    """(with the lane, without it, the served app with the lane)."""
    with_lane = Served(tmp_path / "lane", lane=True)
    without = Served(tmp_path / "route", lane=False)
    with with_lane as fast, without as routed:
        yield fast, routed, with_lane


def test_the_lane_answers_the_same_decision_as_the_route(
    both: tuple[httpx.Client, httpx.Client, Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, routed, _ = both
    answers: dict[str, list[Any]] = {}
    for name, client in (("lane", fast), ("route", routed)):
        # The same decision ids on both sides: exploration is seeded by the id.
        ids = (f"dec_{n:032x}" for n in itertools.count())
        monkeypatch.setattr(api.serving, "new_decision_id", ids.__next__)
        answers[name] = [client.post("/v1/decisions", json=QUESTION) for _ in range(3)]

    for lane, route in zip(answers["lane"], answers["route"], strict=True):
        assert lane.status_code == route.status_code == 200
        assert lane.headers["content-type"] == route.headers["content-type"]
        assert lane.json() == route.json()
    usual = answers["lane"][0].json()["defaults"]
    assert usual, "a real, personal answer"
    assert usual[0]["values"]["amount"] == 200
    # Both logged the decision: an outcome joins it.
    decision = answers["lane"][0].json()
    outcome = {"decision_id": decision["decision_id"], "id": usual[0]["id"], "outcome": "accepted"}
    joined = fast.post("/v1/outcomes", json=outcome)
    assert joined.status_code == 200, joined.text


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"touchpoint": "atm-0042", "channel": "atm"}', {}),  # names no customer
        (b'{"customer_id": "c", "touchpoint": "", "channel": "pigeon"}', {}),
        (b'{"customer_id": "c", "touchpoint": "t", "channel": "atm", "extra": 1}', {}),
        (b'{"customer_id": "c", "touchpoint": "t", "channel": "atm"', {}),  # cut short
        (b"[1, 2]", {}),
        (b"", {}),
        (
            b'{"customer_id": "c", "touchpoint": "t", "channel": "atm"}',
            {"content-type": "text/plain"},
        ),
        (ASKED, {"authorization": ""}),
    ],
    ids=[
        "no-customer",
        "bad-fields",
        "extra-field",
        "truncated",
        "array",
        "empty",
        "text",
        "no-key",
    ],
)
def test_what_the_lane_does_not_serve_gets_the_routes_own_answer(
    both: tuple[httpx.Client, httpx.Client, Served], body: bytes, headers: dict[str, str]
) -> None:
    fast, routed, _ = both
    sent = {"content-type": "application/json", **headers}
    lane = fast.post("/v1/decisions", content=body, headers=sent)
    route = routed.post("/v1/decisions", content=body, headers=sent)

    assert 400 <= lane.status_code < 500
    assert lane.status_code == route.status_code
    assert lane.json() == route.json()


def test_a_key_without_the_decisions_scope_is_refused_by_the_route(
    both: tuple[httpx.Client, httpx.Client, Served],
) -> None:
    _, _, served = both
    key = create_key(served.settings, "events-only", [Scope.EVENTS_WRITE])
    answer = httpx.post(f"{served.server.url}/v1/decisions", json=QUESTION, headers=bearer(key))

    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"


def test_the_lanes_answers_are_counted_under_the_route_template(
    both: tuple[httpx.Client, httpx.Client, Served],
) -> None:
    fast, _, served = both
    scraper = bearer(create_key(served.settings, "prometheus", [Scope.METRICS]))
    url = f"{served.server.url}/metrics"
    route = {"method": "POST", "route": "/v1/decisions", "status": "200"}
    before = sample(httpx.get(url, headers=scraper).text, "rapport_http_requests_total", **route)
    assert fast.post("/v1/decisions", json=QUESTION).status_code == 200
    after = sample(httpx.get(url, headers=scraper).text, "rapport_http_requests_total", **route)

    assert after == before + 1
