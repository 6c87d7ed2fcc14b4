"""Overload protection over real HTTP: the real app, served by uvicorn, with a route that holds
its request until the test lets it go, and cannot be stopped meanwhile (like a sync route).

No timing is asserted: only causality (a 503 that arrives while its handler is still held was
not answered late) and what each answer says.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from fastapi import FastAPI

from api.settings import Settings
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, bearer, create_key

HOLD = "/v1/outcomes/test-hold"  # an interactive route: the short deadline
BULK_HOLD = "/test/bulk-hold"  # any other route: the bulk deadline
WAIT_SECONDS = 20.0  # generous bound on anything the test waits for


class Gate:
    """Handlers of `HOLD` signal that they entered, then wait until the gate opens.

    The wait runs in a thread, and a cancelled handler still waits for it to end, as Starlette
    does for a sync route: such a handler cannot be stopped. (The route itself is async, so it
    enters at once: a sync route may be cancelled before its thread starts, and never enter.)
    """

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.open = threading.Event()
        self.finished = threading.Semaphore(0)

    def _wait(self) -> None:
        self.open.wait(WAIT_SECONDS)
        self.finished.release()

    def install(self, app: FastAPI) -> None:
        async def hold() -> dict[str, str]:
            self.entered.release()
            waiting = asyncio.get_running_loop().run_in_executor(None, self._wait)
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                await waiting
                raise
            return {"status": "released"}

        app.add_api_route(HOLD, hold, methods=["GET"])
        app.add_api_route(BULK_HOLD, hold, methods=["GET"])

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=WAIT_SECONDS), "the held handler never started"


@contextmanager
def guarded_server(settings: Settings, gate: Gate) -> Iterator[httpx.Client]:
    """The app with the gate's routes, and a client that sends a key (routes under /v1 need
    one before their body is read, guarded or not)."""
    live = LiveServer(settings)
    gate.install(live.server.config.app)
    key = create_key(settings, "overload-tests", Scope)
    try:
        with (
            live,
            httpx.Client(base_url=live.url, timeout=WAIT_SECONDS, headers=bearer(key)) as client,
        ):
            yield client
    finally:
        gate.open.set()  # never leave a handler thread waiting


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert body["errors"] == []


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def test_a_request_beyond_the_bound_is_refused_fast_and_the_held_one_still_succeeds(
    settings: Settings, pool: ThreadPoolExecutor
) -> None:
    settings = settings.model_copy(
        update={"max_in_flight": 1, "queue_wait_seconds": 0.05, "request_deadline_seconds": 30}
    )
    gate = Gate()
    with guarded_server(settings, gate) as client:
        held: Future[httpx.Response] = pool.submit(client.get, HOLD)
        gate.wait_entered()

        refused = client.get(HOLD)
        assert_refused(refused, "overloaded")
        assert not held.done()  # refused while the slot was taken
        assert client.get("/healthz").status_code == 200  # probes are exempt

        gate.open.set()
        assert held.result(WAIT_SECONDS).json() == {"status": "released"}
        assert client.get(HOLD).status_code == 200  # the slot is free again


def test_a_request_past_its_deadline_gets_a_503_then_and_its_slot_stays_taken_until_it_ends(
    settings: Settings, pool: ThreadPoolExecutor
) -> None:
    settings = settings.model_copy(
        update={"max_in_flight": 1, "queue_wait_seconds": 0, "request_deadline_seconds": 0.2}
    )
    gate = Gate()
    with guarded_server(settings, gate) as client:
        late = client.get(HOLD)
        assert_refused(late, "deadline_exceeded")
        assert not gate.open.is_set()  # answered while its handler was still held
        gate.wait_entered()

        # The cut-off handler still runs in its thread: it keeps the only slot.
        assert_refused(client.get(HOLD), "overloaded")

        gate.open.set()
        assert gate.finished.acquire(timeout=WAIT_SECONDS)
        answered = wait_for_success(client)
        assert answered.json() == {"status": "released"}


def wait_for_success(client: httpx.Client) -> httpx.Response:
    """GET `HOLD` (the gate is open) until the slot the cut-off handler held is free again."""
    for _ in range(200):
        response = client.get(HOLD)
        if response.status_code == 200:
            return response
        assert_refused(response, "overloaded")
        threading.Event().wait(0.05)
    raise AssertionError("the slot was never released")


def test_decisions_are_answered_as_usual_under_the_guard(settings: Settings, api_key: str) -> None:
    gate = Gate()
    with guarded_server(settings, gate) as client:
        question = {"customer_id": "cust-guarded", "touchpoint": "atm-0042", "channel": "atm"}
        response = client.post("/v1/decisions", json=question, headers=bearer(api_key))
        assert response.status_code == 200
        assert response.json()["customer_id"] == "cust-guarded"


def test_bulk_routes_get_the_longer_deadline(settings: Settings, pool: ThreadPoolExecutor) -> None:
    settings = settings.model_copy(
        update={"request_deadline_seconds": 0.2, "bulk_deadline_seconds": 60}
    )
    gate = Gate()
    with guarded_server(settings, gate) as client:
        bulk: Future[httpx.Response] = pool.submit(client.get, BULK_HOLD)
        gate.wait_entered()
        assert_refused(client.get(HOLD), "deadline_exceeded")  # the short one, meanwhile
        assert not bulk.done()
        gate.open.set()
        assert bulk.result(WAIT_SECONDS).json() == {"status": "released"}


def test_refusals_carry_the_cors_headers_once_each_time(
    settings: Settings, pool: ThreadPoolExecutor
) -> None:
    origin = "https://app.example.com"
    settings = settings.model_copy(
        update={"max_in_flight": 1, "queue_wait_seconds": 0, "cors_origins": [origin]}
    )
    gate = Gate()
    with guarded_server(settings, gate) as client:
        held: Future[httpx.Response] = pool.submit(client.get, HOLD)
        gate.wait_entered()
        for _ in range(3):
            refused = client.get(HOLD, headers={"Origin": origin})
            assert_refused(refused, "overloaded")
            assert refused.headers.get_list("access-control-allow-origin") == [origin]
        gate.open.set()
        assert held.result(WAIT_SECONDS).status_code == 200
