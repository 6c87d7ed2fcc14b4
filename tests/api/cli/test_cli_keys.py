"""`rapport keys` and the demo's key: a printed key works against the app, a revoked one not."""

from __future__ import annotations

import re

import httpx
import pytest
from typer.testing import CliRunner

from api.cli import app
from api.cli.keys import create_key
from api.cli.serve import DEMO_KEY_NAME, what_to_try
from api.settings import Settings
from feature_store.credentials import Scope, is_well_formed
from tests.api.conftest import LiveServer, bearer

DECISION = {"customer_id": "cust-1", "touchpoint": "atm-0042", "channel": "atm"}


@pytest.fixture
def runner(settings: Settings) -> CliRunner:
    return CliRunner(env={"RAPPORT_STORE": settings.store, "COLUMNS": "200"})


def rapport(runner: CliRunner, *args: str, exit_code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == exit_code, result.output
    return result.output


def test_a_created_key_is_printed_last_and_works_within_its_scopes(
    runner: CliRunner, settings: Settings
) -> None:
    output = rapport(runner, "keys", "create", "--name", "atm-fleet", "--scopes", "decisions")
    key = output.strip().splitlines()[-1]

    assert is_well_formed(key)
    assert output.count(key) == 1
    uncached = settings.model_copy(update={"auth_cache_seconds": 0.0})
    with LiveServer(uncached) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/decisions", json=DECISION, headers=bearer(key)).status_code == 200
        assert http.get("/v1/customers/cust-1", headers=bearer(key)).status_code == 403

        rapport(runner, "keys", "revoke", "atm-fleet")

        assert http.post("/v1/decisions", json=DECISION, headers=bearer(key)).status_code == 401


def test_keys_list_shows_names_and_scopes_but_no_secret(runner: CliRunner) -> None:
    key = rapport(runner, "keys", "create", "--name", "crm", "--scopes", "customers:read,privacy")
    key = key.strip().splitlines()[-1]
    rapport(runner, "keys", "create", "--name", "ops", "--scopes", "admin")
    rapport(runner, "keys", "revoke", "ops")

    listed = rapport(runner, "keys", "list")

    assert "crm" in listed
    assert "customers:read" in listed
    assert "privacy" in listed
    assert "ops" in listed
    assert key not in listed
    assert key.split("_", 2)[2] not in listed
    assert re.search(r"[0-9a-f]{64}", listed) is None  # no hash either


def test_bad_scopes_and_names_are_refused_before_anything_is_stored(runner: CliRunner) -> None:
    unknown = rapport(
        runner, "keys", "create", "--name", "x", "--scopes", "decisions,root", exit_code=2
    )
    bad_name = rapport(
        runner, "keys", "create", "--name", "no spaces", "--scopes", "decisions", exit_code=2
    )

    assert "unknown scope root" in unknown
    assert "--name" in bad_name
    assert "API keys (0)" in rapport(runner, "keys", "list")


def test_a_name_in_use_is_refused_and_an_unknown_key_cannot_be_revoked(runner: CliRunner) -> None:
    rapport(runner, "keys", "create", "--name", "web", "--scopes", "decisions")

    taken = rapport(runner, "keys", "create", "--name", "web", "--scopes", "admin", exit_code=1)
    missing = rapport(runner, "keys", "revoke", "nobody", exit_code=1)

    assert "already named 'web'" in taken
    assert "No active key" in missing


def test_the_demo_key_has_every_scope_and_every_curl_line_sends_it(settings: Settings) -> None:
    key = create_key(settings.store, DEMO_KEY_NAME, list(Scope))
    welcome = what_to_try("127.0.0.1", 8000, key)

    assert f"export RAPPORT_KEY={key}" in welcome
    curls = [line for line in welcome.splitlines() if "curl " in line]
    assert len(curls) == 5
    assert all('-H "Authorization: Bearer $RAPPORT_KEY"' in line for line in curls)
    with LiveServer(settings) as server, httpx.Client(base_url=server.url) as http:
        for scope_check in (
            http.post("/v1/decisions", json=DECISION, headers=bearer(key)),
            http.get("/v1/customers/cust-1", headers=bearer(key)),
        ):
            assert scope_check.status_code in (200, 404), scope_check.text


def test_the_demo_says_which_store_its_commands_use_and_where_the_console_is() -> None:
    welcome = what_to_try("127.0.0.1", 8080, "rk_x", "sqlite:///var/demo.db")

    assert "export RAPPORT_STORE=sqlite:///var/demo.db" in welcome
    assert "http://127.0.0.1:8080/console/" in welcome


def test_the_demo_refuses_a_busy_port_before_it_prints_a_key() -> None:
    import socket

    from typer.testing import CliRunner as Runner

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = Runner(env={"COLUMNS": "200"}).invoke(app, ["demo", "--port", str(port)])

    assert result.exit_code == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.output
    assert "RAPPORT_KEY" not in result.output
