"""The console over real HTTP: the app served by uvicorn, a demo customer with a logged
decision, and a browser-like client that signs in through the sign-in form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.cli.serve import DEMO_CUSTOMER, demo_customer_events
from api.settings import Settings
from engine.events import Channel, Event, EventType
from feature_store.base import OnlineStore
from feature_store.credentials import Scope
from feature_store.factory import open_store
from tests.api.conftest import LiveServer, bearer, create_key

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
EMAIL = "Ann.Rossi@Example.com"


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def demo_events(now: datetime) -> list[Event]:
    """cust-demo's weekly 200 EUR withdrawals, a consent and a stated preference."""
    return [
        *demo_customer_events(now),
        Event(
            event_id="demo-consent",
            customer_id=DEMO_CUSTOMER,
            touchpoint="app-ios",
            channel=Channel.MOBILE_APP,
            type=EventType.CONSENT_CHANGED,
            occurred_at=now,
            attributes={"purpose": "marketing", "status": "granted"},
        ),
        Event(
            event_id="demo-preference",
            customer_id=DEMO_CUSTOMER,
            touchpoint="app-ios",
            channel=Channel.MOBILE_APP,
            type=EventType.PREFERENCE_STATED,
            occurred_at=now,
            attributes={"key": "contact_channel", "value": "sms", "source": "app-ios"},
        ),
    ]


@pytest.fixture
def demo_store(settings: Settings) -> Iterator[OnlineStore]:
    with closing(open_store(settings.store, settings.engine)) as store:
        store.apply_events(demo_events(datetime.now(UTC).replace(microsecond=0)))
        yield store


@pytest.fixture
def console_server(settings: Settings, demo_store: OnlineStore) -> Iterator[LiveServer]:
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def admin_key(settings: Settings) -> str:
    return create_key(settings, "console-admin", [Scope.ADMIN])


@pytest.fixture
def logged_decision_id(console_server: LiveServer, admin_key: str) -> str:
    """A decision for cust-demo at the ATM, asked through the API (so it is logged), with
    an identifier linked to the customer."""
    with httpx.Client(base_url=console_server.url, headers=bearer(admin_key)) as api:
        linked = api.post(
            "/v1/identities/link",
            json={
                "customer_id": DEMO_CUSTOMER,
                "identities": [{"type": "email", "value": EMAIL}],
            },
        )
        assert linked.status_code == 200, linked.text
        answer = api.post(
            "/v1/decisions",
            json={"customer_id": DEMO_CUSTOMER, "touchpoint": "atm-0042", "channel": "atm"},
        )
        assert answer.status_code == 200, answer.text
        decision_id: str = answer.json()["decision_id"]
    return decision_id


def create_experiment(server: LiveServer, key: str) -> str:
    """A running experiment, holdout 1 : personalised 3; returns its id."""
    start = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with httpx.Client(base_url=server.url, headers=bearer(key)) as api:
        created = api.post(
            "/v1/experiments",
            json={
                "id": "nba-holdout",
                "hypothesis": "Personalised actions convert more than the holdout.",
                "start": start,
                "variants": [
                    {"name": "holdout", "weight": 1, "personalisation": False},
                    {"name": "personalised", "weight": 3},
                ],
            },
        )
        assert created.status_code == 201, created.text
    return "nba-holdout"


class Console:
    """A browser-like client of the console: keeps cookies, follows no redirect by itself."""

    def __init__(self, server: LiveServer) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=20, follow_redirects=False)

    def sign_in(self, key: str, next_path: str = "/console/") -> httpx.Response:
        form = self.http.get("/console/login")
        assert form.status_code == 200, form.text
        return self.http.post(
            "/console/login", data={"csrf": csrf_of(form.text), "key": key, "next": next_path}
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post_form(self, path: str, page: str, data: dict[str, str]) -> httpx.Response:
        """Post a form of `page` (a console path), with the CSRF token the page carries."""
        token = csrf_of(self.http.get(page).text)
        return self.http.post(path, data={"csrf": token, **data})

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def console(console_server: LiveServer) -> Iterator[Console]:
    client = Console(console_server)
    try:
        yield client
    finally:
        client.close()
