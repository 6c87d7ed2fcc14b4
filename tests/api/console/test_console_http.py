"""The console over real HTTP: sign-in and out, cookies, CSRF, scopes, masking, the dry run."""

from __future__ import annotations

import re
from contextlib import closing
from datetime import UTC, datetime

import httpx

from api.cli.serve import DEMO_CUSTOMER
from api.console import CONTENT_SECURITY_POLICY
from api.console.session import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS
from api.settings import Settings
from experiments.report import CONTENT_SECURITY_POLICY as REPORT_CSP
from feature_store.base import OnlineStore
from feature_store.credentials import Scope
from feature_store.factory import open_credentials
from tests.api.conftest import LiveServer, bearer, create_key
from tests.api.console.conftest import Console, create_experiment, csrf_of


def session_cookie_header(response: httpx.Response) -> str:
    [header] = [
        value
        for value in response.headers.get_list("set-cookie")
        if value.startswith(f"{SESSION_COOKIE}=")
    ]
    return header


# -- sign-in and out ----------------------------------------------------------------------------


def test_pages_redirect_to_the_sign_in_until_signed_in(console: Console) -> None:
    answer = console.get("/console/customers/cust-demo")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=/console/customers/cust-demo"


def test_sign_in_sets_a_signed_httponly_strict_short_lived_cookie(
    console: Console, admin_key: str
) -> None:
    signed_in = console.sign_in(admin_key, "/console/customers/cust-demo")

    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/console/customers/cust-demo"
    cookie = session_cookie_header(signed_in).lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert f"max-age={SESSION_SECONDS}" in cookie
    assert "path=/console" in cookie
    assert "secure" not in cookie  # served over http here; Secure over https
    assert admin_key.lower() not in cookie  # the key's hash is signed, never the key
    assert console.get("/console/customers/cust-demo").status_code == 200


def test_the_cookie_is_secure_when_served_over_https(console: Console, admin_key: str) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1, as from a TLS proxy in front of it
    form = console.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    token = csrf_of(form.text)
    assert "; secure" in form.headers["set-cookie"].lower()
    console.http.cookies.clear()  # httpx keeps Secure cookies for https: send it by hand
    signed_in = console.http.post(
        "/console/login",
        data={"csrf": token, "key": admin_key},
        headers={"X-Forwarded-Proto": "https", "Cookie": f"{LOGIN_COOKIE}={token}"},
    )

    assert signed_in.status_code == 303
    assert "; secure" in session_cookie_header(signed_in).lower()


def test_a_forged_or_tampered_cookie_is_refused(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)
    value = console.http.cookies[SESSION_COOKIE]
    console.http.cookies.clear()
    console.http.cookies.set(
        SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), path="/console"
    )

    assert console.get("/console/").status_code == 303


def test_a_wrong_key_is_refused_with_the_form_again(console: Console) -> None:
    refused = console.sign_in("rk_0123456789abcdef_" + "A" * 43)

    assert refused.status_code == 401
    assert "not valid" in refused.text
    assert SESSION_COOKIE not in console.http.cookies


def test_sign_out_clears_the_cookie(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)
    out = console.post_form("/console/logout", "/console/", {})

    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert "max-age=0" in session_cookie_header(out).lower() or "expires=" in (
        session_cookie_header(out).lower()
    )
    assert console.get("/console/").status_code == 303


def test_a_revoked_key_is_signed_out_at_once(settings: Settings, console: Console) -> None:
    reader = create_key(settings, "revoked-reader", [Scope.CUSTOMERS_READ])
    console.sign_in(reader)
    assert console.get("/console/").status_code == 200
    with closing(open_credentials(settings.store)) as credentials:
        assert credentials.revoke("revoked-reader", at=datetime.now(UTC))

    assert console.get("/console/").status_code == 303


def test_the_next_page_is_never_another_site(console: Console, admin_key: str) -> None:
    answer = console.sign_in(admin_key, "//evil.example.com/")

    assert answer.headers["location"] == "/console/"


# -- CSRF and scopes ----------------------------------------------------------------------------


def test_a_form_without_the_sessions_token_is_refused(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)

    missing = console.http.post("/console/find", data={"customer_id": DEMO_CUSTOMER})
    wrong = console.http.post("/console/find", data={"csrf": "x" * 32, "customer_id": "c"})
    sign_in_without = console.http.post("/console/login", data={"csrf": "x", "key": admin_key})

    assert missing.status_code == 400  # the token is a required field
    assert wrong.status_code == 403
    assert "Form refused" in wrong.text
    assert sign_in_without.status_code == 403
    assert (
        console.post_form("/console/find", "/console/", {"customer_id": DEMO_CUSTOMER}).status_code
        == 303
    )


def test_a_key_without_the_scope_sees_the_403_page(settings: Settings, console: Console) -> None:
    signed_in = console.sign_in(create_key(settings, "teller", [Scope.DECISIONS]))

    assert signed_in.headers["location"] == "/console/simulate"  # the first page it may see
    assert "Customers" not in console.get("/console/simulate").text.split("<main>")[0]
    for path, scope in [
        ("/console/customers/cust-demo", "customers:read"),
        ("/console/touchpoints", "customers:read"),
        ("/console/experiments", "experiments"),
        ("/console/models", "admin"),
    ]:
        page = console.get(path)
        assert page.status_code == 403, path
        assert "Not allowed" in page.text
        assert f"the scope “{scope}”" in page.text
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert console.get("/console/simulate").status_code == 200


def test_every_console_page_has_the_strict_csp(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)
    for path in (
        "/console/login",
        "/console/",
        "/console/touchpoints",
        "/console/models",
        "/console/experiments",
        "/console/simulate",
        "/console/static/console.css",
    ):
        answer = console.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert answer.headers["x-frame-options"] == "DENY"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "script-src 'none'" in CONTENT_SECURITY_POLICY


# -- pages --------------------------------------------------------------------------------------


def test_find_by_identifier_opens_the_customer_and_shows_only_the_masked_form(
    console: Console, admin_key: str, logged_decision_id: str
) -> None:
    console.sign_in(admin_key)
    # Written differently from the linked form: normalised as the API normalises it.
    found = console.post_form(
        "/console/find",
        "/console/",
        {"identity_type": "email", "identity_value": "  ann.rossi@EXAMPLE.com "},
    )
    assert found.status_code == 303
    assert found.headers["location"] == f"/console/customers/{DEMO_CUSTOMER}"

    page = console.get(found.headers["location"])
    assert page.status_code == 200
    assert "a***@example.com" in page.text
    assert "ann.rossi" not in page.text.lower()

    unknown = console.post_form(
        "/console/find",
        "/console/",
        {"identity_type": "email", "identity_value": "bob.bianchi@example.com"},
    )
    assert unknown.status_code == 404
    assert "b***@example.com" in unknown.text
    assert "bob.bianchi" not in unknown.text


def test_the_360_shows_stated_and_learned_habits_and_links_decisions(
    console: Console, admin_key: str, logged_decision_id: str
) -> None:
    console.sign_in(admin_key)
    page = console.get(f"/console/customers/{DEMO_CUSTOMER}").text

    assert "contact_channel" in page  # stated, with its source
    assert "app-ios" in page
    assert "cash_withdrawal" in page
    assert "6 of the last 6" in page  # the habit's evidence
    assert "offered" in page
    assert f'href="/console/decisions/{logged_decision_id}"' in page
    only_decisions = console.get(f"/console/customers/{DEMO_CUSTOMER}", params={"kind": "decision"})
    assert only_decisions.text.count("/console/decisions/") == 1


def test_the_customer_list_pages_through_the_api_route(
    console: Console, admin_key: str, console_server: LiveServer
) -> None:
    with httpx.Client(base_url=console_server.url, headers=bearer(admin_key)) as api:
        first = api.get("/v1/customers", params={"limit": 1})
        assert first.status_code == 200
        assert first.json() == {"customers": [DEMO_CUSTOMER], "next_after": None}
        assert api.get("/v1/customers", params={"after": DEMO_CUSTOMER}).json() == {
            "customers": [],
            "next_after": None,
        }
    console.sign_in(admin_key)
    home = console.get("/console/").text
    every = console.get("/console/customers").text
    assert f'href="/console/customers/{DEMO_CUSTOMER}"' in home  # recently active
    assert f'href="/console/customers/{DEMO_CUSTOMER}"' in every
    assert "Next page" not in every


def test_the_inspector_shows_every_candidate_and_the_atm_screen(
    console: Console, admin_key: str, logged_decision_id: str
) -> None:
    console.sign_in(admin_key)
    page = console.get(f"/console/decisions/{logged_decision_id}")

    assert page.status_code == 200
    assert "Your usual 200 EUR, no receipt?" in page.text
    assert "Arbitration matrix" in page.text
    rows = re.findall(r'<tr class="(returned|outranked|dropped)">', page.text)
    assert "dropped" in rows or "outranked" in rows
    assert console.get("/console/decisions/dec_unknown").status_code == 404


def test_the_simulator_writes_nothing(
    console: Console,
    console_server: LiveServer,
    admin_key: str,
    logged_decision_id: str,
    demo_store: OnlineStore,
) -> None:
    before = demo_store.export_customer(DEMO_CUSTOMER)
    logs_before = (
        demo_store.read_log("events", 0, 1).high_water,
        demo_store.read_log("decisions", 0, 1).high_water,
    )
    console.sign_in(admin_key)

    page = console.post_form(
        "/console/simulate",
        "/console/simulate",
        {"customer_id": DEMO_CUSTOMER, "touchpoint": "atm-0042", "channel": "atm"},
    )

    assert page.status_code == 200, page.text
    assert "Your usual 200 EUR, no receipt?" in page.text
    assert "With an open complaint" in page.text
    dry_ids = set(re.findall(r"dry-run id (dry_dec_[0-9a-f]+)", page.text))
    assert len(dry_ids) == 3
    assert demo_store.export_customer(DEMO_CUSTOMER) == before
    assert (
        demo_store.read_log("events", 0, 1).high_water,
        demo_store.read_log("decisions", 0, 1).high_water,
    ) == logs_before
    with httpx.Client(base_url=console_server.url, headers=bearer(admin_key)) as api:
        for dry_id in dry_ids:
            assert demo_store.read_decision(dry_id) is None
            assert api.get(f"/v1/decisions/{dry_id}").status_code == 404
            assert console.get(f"/console/decisions/{dry_id}").status_code == 404


def test_models_reload_needs_the_token_and_admin(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)
    reloaded = console.post_form("/console/models/reload", "/console/models", {})

    assert reloaded.status_code == 303
    assert "registered model" in console.get("/console/models?reloaded=true").text
    assert console.http.post("/console/models/reload", data={"csrf": "no"}).status_code == 403


def test_the_login_page_never_needs_a_session(console_server: LiveServer) -> None:
    page = httpx.get(f"{console_server.url}/console/login")

    assert page.status_code == 200
    assert csrf_of(page.text)


def test_the_simulator_says_why_a_declined_habit_is_not_offered(
    console: Console, admin_key: str, console_server: LiveServer
) -> None:
    with httpx.Client(base_url=console_server.url, headers=bearer(admin_key)) as api:
        for _ in range(3):
            decision = api.post(
                "/v1/decisions",
                json={"customer_id": DEMO_CUSTOMER, "touchpoint": "atm-0042", "channel": "atm"},
            ).json()
            declined = api.post(
                "/v1/outcomes",
                json={
                    "decision_id": decision["decision_id"],
                    "id": "default:cash_withdrawal",
                    "outcome": "declined",
                },
            )
            assert declined.status_code == 200, declined.text
    console.sign_in(admin_key)

    page = console.post_form(
        "/console/simulate",
        "/console/simulate",
        {"customer_id": DEMO_CUSTOMER, "touchpoint": "atm-0042", "channel": "atm"},
    ).text

    assert "Defaults considered" in page
    assert "suppressed after 3 declines" in page
    assert "Your usual 200 EUR, no receipt?" not in page


def test_experiments_list_and_report(
    console: Console, admin_key: str, console_server: LiveServer
) -> None:
    create_experiment(console_server, admin_key)
    console.sign_in(admin_key)

    listed = console.get("/console/experiments").text
    report = console.get("/console/experiments/nba-holdout/report")

    assert "nba-holdout" in listed
    assert "running" in listed
    assert "holdout 25.0%" in listed
    assert "personalised 75.0%" in listed
    assert 'href="/console/experiments/nba-holdout/report"' in listed
    assert report.status_code == 200
    assert "nba-holdout" in report.text
    assert report.headers["content-security-policy"] == REPORT_CSP  # the report's own, only
    assert console.get("/console/experiments/nope/report").status_code == 404


def test_bad_input_gets_a_page_that_says_what_is_wrong(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)
    question = {"customer_id": DEMO_CUSTOMER, "touchpoint": "atm-0042", "channel": "atm"}

    bad_time = console.post_form(
        "/console/simulate", "/console/simulate", question | {"at": "soon"}
    )
    at_a_time = console.post_form(
        "/console/simulate", "/console/simulate", question | {"at": "2026-12-04T09:30:00"}
    )
    bad_id = console.post_form("/console/find", "/console/", {"customer_id": "../../v1/models"})
    unknown = console.get("/console/customers/cust-nobody")

    assert bad_time.status_code == 400
    assert "ISO 8601" in bad_time.text
    assert at_a_time.status_code == 200
    assert "2026-12-04 09:30 UTC" in at_a_time.text  # a time without an offset is UTC
    assert bad_id.status_code == 404
    assert "letters, digits" in bad_id.text
    assert unknown.status_code == 404
    assert "Unknown customer" in unknown.text


def test_each_touchpoint_sees_the_decision_its_own_way(console: Console, admin_key: str) -> None:
    console.sign_in(admin_key)
    question = {"customer_id": DEMO_CUSTOMER, "touchpoint": "atm-0042", "channel": "atm"}

    atm = console.post_form("/console/simulate", "/console/simulate", question).text
    agent = console.post_form(
        "/console/simulate",
        "/console/simulate",
        question | {"touchpoint": "cc-milano", "channel": "call_center"},
    ).text

    assert "ATM screen at atm-0042" in atm
    assert "Agent script at cc-milano" in agent
    assert "Offer: “" in agent
    assert "Your usual 200 EUR" not in agent  # the habit is the ATM's
