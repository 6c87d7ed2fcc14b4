"""API keys over HTTP: 401 without a valid key, 403 without the scope, every route guarded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from pydantic import ValidationError

from api.app import create_app
from api.auth import PUBLIC_PATHS, KeyAuthenticator, ScopeRequirement, require
from api.settings import Settings
from feature_store.credentials import Scope, issue_key
from feature_store.errors import StoreUnavailable
from feature_store.factory import open_credentials
from feature_store.sqlite.credentials import SQLiteCredentialStore
from tests.api.conftest import LiveServer, bearer, create_key

DECISION = {"customer_id": "cust-1", "touchpoint": "atm-0042", "channel": "atm"}
EVENT = {
    "event_id": "ev-1",
    "customer_id": "cust-1",
    "touchpoint": "atm-0042",
    "channel": "atm",
    "type": "request",
    "occurred_at": "2026-01-05T09:30:00Z",
    "attributes": {"request": "balance_enquiry"},
}

#: The scope of each route of the first release; routes added later are checked for having one.
ROUTE_SCOPES = {
    ("POST", "/v1/events"): Scope.EVENTS_WRITE,
    ("GET", "/v1/customers/{customer_id}"): Scope.CUSTOMERS_READ,
    ("PUT", "/v1/customers/{customer_id}/preferences"): Scope.CUSTOMERS_WRITE,
    ("POST", "/v1/decisions"): Scope.DECISIONS,
    ("POST", "/v1/outcomes"): Scope.DECISIONS,
    ("GET", "/v1/models"): Scope.ADMIN,
    ("POST", "/v1/admin/models/reload"): Scope.ADMIN,
    ("POST", "/v1/experiments"): Scope.EXPERIMENTS,
    ("GET", "/v1/experiments/{experiment_id}/report"): Scope.EXPERIMENTS,
}


# -- every route is public or guarded -----------------------------------------------------------


def effective_routes(app: FastAPI) -> list[Any]:
    """The app's routes as served: with their routers' prefixes and dependencies."""
    # FastAPI >= 0.16x keeps included routers whole in `app.routes`; this flattens them.
    iter_route_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(app.routes if iter_route_contexts is None else iter_route_contexts(app.routes))


def required_scopes(dependant: Dependant) -> list[Scope]:
    """The scopes of every `require(...)` in a dependency tree."""
    scopes = []
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, ScopeRequirement):
            scopes.append(dependency.call.scope)
        scopes.extend(required_scopes(dependency))
    return scopes


def route_scopes(app: FastAPI) -> dict[tuple[str, str], list[Scope]]:
    """(method, path) -> required scopes, for every non-public route."""
    found: dict[tuple[str, str], list[Scope]] = {}
    for route in effective_routes(app):
        path = str(getattr(route, "path", route))
        if path in PUBLIC_PATHS:
            continue
        dependant = getattr(route, "dependant", None)
        scopes = [] if dependant is None else required_scopes(dependant)
        for method in sorted(getattr(route, "methods", None) or {"*"}):
            found[(method, path)] = scopes
    return found


def unguarded(app: FastAPI) -> list[str]:
    return [
        f"{method} {path}" for (method, path), scopes in route_scopes(app).items() if not scopes
    ]


def test_every_route_is_public_or_requires_a_scope(settings: Settings) -> None:
    app = create_app(settings)

    assert unguarded(app) == [], "add dependencies=[require(Scope.X)] to these routes"
    scopes = route_scopes(app)
    assert {route: scopes[route] for route in ROUTE_SCOPES} == {
        route: [scope] for route, scope in ROUTE_SCOPES.items()
    }


def test_the_route_check_finds_an_unguarded_route_and_accepts_router_level_scopes(
    settings: Settings,
) -> None:
    app = create_app(settings)
    forgotten = APIRouter(prefix="/v1/forgotten")
    guarded = APIRouter(prefix="/v1/guarded", dependencies=[require(Scope.PRIVACY)])

    @forgotten.delete("/{customer_id}")
    @guarded.delete("/{customer_id}")
    def erase(customer_id: str) -> None: ...

    app.include_router(forgotten)
    app.include_router(guarded)

    assert unguarded(app) == ["DELETE /v1/forgotten/{customer_id}"]
    assert route_scopes(app)[("DELETE", "/v1/guarded/{customer_id}")] == [Scope.PRIVACY]


def test_every_guarded_route_answers_401_without_a_key(settings: Settings) -> None:
    routes = route_scopes(create_app(settings))
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as http:
        for method, path in routes:
            url = path.replace("{customer_id}", "cust-1").replace("{", "").replace("}", "")
            # A valid JSON body: authentication must come before the body is looked at.
            response = http.request(method, url, json={} if method in ("POST", "PUT") else None)

            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {
                "error": "unauthorized",
                "message": "a valid API key is required: send 'Authorization: Bearer <key>'",
                "errors": [{"field": "header.authorization", "reason": "missing"}],
            }


def test_public_routes_need_no_key(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc"):
            assert anonymous.get(path).status_code == 200, path


# -- 401 and 403 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer rk_0123456789abcdef_" + "A" * 43,  # well formed, never issued
        "Bearer not-a-key",
        "Bearer " + "rk_0123456789abcdef_" + "A" * 44,
        "Bearer rk_0123456789ABCDEF_" + "A" * 43,
    ],
)
def test_an_unknown_or_malformed_key_is_401(server: LiveServer, authorization: str) -> None:
    response = httpx.post(
        f"{server.url}/v1/decisions", json=DECISION, headers={"Authorization": authorization}
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json()["errors"] == [
        {"field": "header.authorization", "reason": "malformed, unknown or revoked key"}
    ]


@pytest.mark.parametrize("scheme", ["Basic", "Token", ""])
def test_a_key_sent_without_the_bearer_scheme_is_401(
    settings: Settings, server: LiveServer, scheme: str
) -> None:
    key = create_key(settings, "teller", [Scope.DECISIONS])
    response = httpx.post(
        f"{server.url}/v1/decisions",
        json=DECISION,
        headers={"Authorization": f"{scheme} {key}".strip()},
    )

    assert response.status_code == 401
    assert response.json()["errors"][0]["reason"] == "missing"


def test_the_bearer_scheme_is_case_insensitive(settings: Settings, server: LiveServer) -> None:
    key = create_key(settings, "teller", [Scope.DECISIONS])
    response = httpx.post(
        f"{server.url}/v1/decisions", json=DECISION, headers={"Authorization": f"bearer {key}"}
    )

    assert response.status_code == 200, response.text


def test_a_key_without_the_scope_is_403_and_with_it_passes(
    settings: Settings, server: LiveServer
) -> None:
    key = create_key(settings, "crm-reader", [Scope.CUSTOMERS_READ])
    with httpx.Client(base_url=server.url, headers=bearer(key)) as reader:
        refused = reader.post("/v1/decisions", json=DECISION)
        allowed = reader.get("/v1/customers/cust-unknown")

    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="decisions"'
    )
    assert refused.json() == {
        "error": "forbidden",
        "message": "this API key does not have the scope 'decisions'",
        "errors": [{"field": "header.authorization", "reason": "needs the scope decisions"}],
    }
    assert allowed.status_code == 404  # past authentication: the customer is unknown


def test_each_scope_opens_its_routes_only(settings: Settings, server: LiveServer) -> None:
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/events"): {"events": [EVENT]},
        ("POST", "/v1/decisions"): DECISION,
        ("PUT", "/v1/customers/cust-1/preferences"): {"preferences": {"receipt": False}},
    }
    for scope in (Scope.EVENTS_WRITE, Scope.DECISIONS, Scope.CUSTOMERS_WRITE):
        key = create_key(settings, f"only-{scope.value.replace(':', '-')}", [scope])
        with httpx.Client(base_url=server.url, headers=bearer(key)) as http:
            for (method, path), body in bodies.items():
                status = http.request(method, path, json=body).status_code
                template = path.replace("cust-1", "{customer_id}")
                expected_scope = ROUTE_SCOPES[(method, template)]
                assert (status == 403) == (expected_scope != scope), (scope, method, path, status)


def test_admin_grants_every_scope(settings: Settings, server: LiveServer) -> None:
    key = create_key(settings, "ops", [Scope.ADMIN])
    with httpx.Client(base_url=server.url, headers=bearer(key)) as admin:
        assert admin.post("/v1/events", json={"events": [EVENT]}).status_code == 200
        assert admin.get("/v1/customers/cust-1").status_code == 200
        decision = admin.post("/v1/decisions", json=DECISION)
        assert decision.status_code == 200


def test_a_revoked_key_is_refused_once_the_cache_expires(settings: Settings) -> None:
    uncached = settings.model_copy(update={"auth_cache_seconds": 0.0})
    key = create_key(uncached, "kiosk", [Scope.DECISIONS])
    with LiveServer(uncached) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/decisions", json=DECISION, headers=bearer(key)).status_code == 200
        with closing(open_credentials(uncached.store)) as credentials:
            assert credentials.revoke("kiosk", at=datetime.now(UTC))

        response = http.post("/v1/decisions", json=DECISION, headers=bearer(key))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_the_openapi_names_the_scheme_and_each_routes_scope(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()

    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/decisions"]["post"]["security"] == [{"HTTPBearer": ["decisions"]}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


# -- turning authentication off -----------------------------------------------------------------


def test_auth_can_be_turned_off_outside_production(settings: Settings) -> None:
    open_settings = settings.model_copy(update={"auth_enabled": False})
    with LiveServer(open_settings) as server:
        response = httpx.post(f"{server.url}/v1/decisions", json=DECISION)

    assert response.status_code == 200


def test_production_refuses_to_turn_auth_off(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'rapport.db'}"
    assert Settings(store=store).auth_enabled

    with pytest.raises(ValidationError, match="RAPPORT_AUTH cannot be turned off"):
        Settings(store=store, environment="production", auth_enabled=False)


def test_rapport_auth_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_AUTH", "false")
    assert Settings().auth_enabled is False
    monkeypatch.setenv("RAPPORT_AUTH", "true")
    assert Settings().auth_enabled is True


# -- the key cache ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def credentials(tmp_path: Path) -> Iterator[SQLiteCredentialStore]:
    with closing(SQLiteCredentialStore(tmp_path / "rapport.db")) as store:
        yield store


def authenticator(store: SQLiteCredentialStore, clock: Clock) -> KeyAuthenticator:
    return KeyAuthenticator(store, ttl_seconds=5.0, stale_if_error_seconds=60.0, clock=clock)


def test_a_found_key_is_remembered_for_the_ttl_and_a_revocation_is_seen_after_it(
    credentials: SQLiteCredentialStore,
) -> None:
    clock = Clock()
    keys = authenticator(credentials, clock)
    key, record = issue_key("atm-fleet", [Scope.DECISIONS], at=datetime.now(UTC))
    credentials.save(record)

    assert keys.remembered(key) is None  # never looked up yet
    assert keys.look_up(key) == record
    credentials.revoke("atm-fleet", at=datetime.now(UTC))
    clock.now += 4.9
    assert keys.remembered(key) == record  # revoked, but within the TTL
    clock.now += 0.1
    assert keys.remembered(key) is None
    assert keys.look_up(key) is None
    clock.now -= 5.0  # a refusal forgets the key at once, whatever the clock says
    assert keys.remembered(key) is None


def test_an_unknown_key_is_not_remembered_so_a_new_key_works_at_once(
    credentials: SQLiteCredentialStore,
) -> None:
    keys = authenticator(credentials, Clock())
    key, record = issue_key("web", [Scope.DECISIONS], at=datetime.now(UTC))

    assert keys.look_up(key) is None
    credentials.save(record)
    assert keys.look_up(key) == record


def test_during_an_outage_a_recently_found_key_is_still_accepted(
    credentials: SQLiteCredentialStore,
) -> None:
    clock = Clock()
    keys = authenticator(credentials, clock)
    known, record = issue_key("atm-fleet", [Scope.DECISIONS], at=datetime.now(UTC))
    other, other_record = issue_key("web", [Scope.DECISIONS], at=datetime.now(UTC))
    credentials.save(record)
    credentials.save(other_record)
    assert keys.look_up(known) == record
    credentials.close()  # the store is now unavailable

    clock.now += 60.0
    assert keys.look_up(known) == record
    with pytest.raises(StoreUnavailable):
        keys.look_up(other)  # never found before: no way to tell
    clock.now += 0.1
    with pytest.raises(StoreUnavailable):
        keys.look_up(known)


# -- CORS ---------------------------------------------------------------------------------------


def preflight(http: httpx.Client, origin: str) -> httpx.Response:
    return http.options(
        "/v1/decisions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_is_closed_by_default(client: httpx.Client) -> None:
    response = preflight(client, "https://app.example.com")
    simple = client.post("/v1/decisions", json=DECISION, headers={"Origin": "https://x.example"})

    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_exactly_the_configured_origins(settings: Settings) -> None:
    allowed = "https://teller.example.com"
    configured = Settings.model_validate(
        {**settings.model_dump(), "cors_origins": f"{allowed}, https://app.example.com:8443"}
    )
    with LiveServer(configured) as server, httpx.Client(base_url=server.url) as http:
        granted = preflight(http, allowed)
        refused = preflight(http, "https://evil.example.com")
        answered = http.post("/v1/decisions", json=DECISION, headers={"Origin": allowed})

    assert granted.status_code == 200
    assert granted.headers["access-control-allow-origin"] == allowed
    assert "authorization" in granted.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in granted.headers
    assert "access-control-allow-origin" not in refused.headers
    # A 401 carries the header too, so that the browser app can read why it was refused.
    assert answered.status_code == 401
    assert answered.headers["access-control-allow-origin"] == allowed


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        (
            "https://a.example.com,http://localhost:3000",
            ["https://a.example.com", "http://localhost:3000"],
        ),
        ('["https://A.example.com"]', ["https://a.example.com"]),
        ("", []),
    ],
)
def test_cors_origins_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, origins: list[str]
) -> None:
    monkeypatch.setenv("RAPPORT_CORS_ORIGINS", value)

    assert Settings().cors_origins == origins


@pytest.mark.parametrize(
    "origin",
    ["*", "https://*.example.com", "https://a.example.com/", "a.example.com", "ftp://a.example"],
)
def test_a_cors_origin_must_be_exact(origin: str) -> None:
    with pytest.raises(ValidationError, match="not an origin"):
        Settings(cors_origins=[origin])
