"""Every main page of the console in a real headless Chromium: no console error, no CSP
violation, no request to another origin, and the key figures on the page."""

from __future__ import annotations

import json
import re

import pytest

from api.cli.serve import DEMO_CUSTOMER
from api.console.session import SESSION_COOKIE
from api.settings import Settings
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, create_key
from tests.api.console.conftest import Console, create_experiment
from tests.browser import Chromium, PageLoad


def set_cookie(chromium: Chromium, url: str, name: str, value: str) -> None:
    """Give the browser the session cookie, with the flags the console sets."""
    with chromium.tab(timeout=10) as tab:
        result = tab.call(
            "Network.setCookie",
            name=name,
            value=value,
            url=url,
            path="/console",
            httpOnly=True,
            sameSite="Strict",
        )
    assert result["success"], result


def submit_form(
    chromium: Chromium, url: str, form: str, fields: dict[str, str], timeout: float = 30.0
) -> tuple[PageLoad, list[str]]:
    """Open `url`, fill the fields of the form matched by the CSS selector `form` and submit
    it, then collect the answer's load and the names of the cookies the browser holds for
    `url`. (The fields are filled through DevTools, which the page's CSP does not govern.)"""
    with chromium.tab(timeout) as tab:
        tab.open(url)
        fill = "".join(
            f"f.querySelector({json.dumps(f'[name={name}]')}).value = {json.dumps(value)};"
            for name, value in fields.items()
        )
        tab.call(
            "Runtime.evaluate",
            expression=f"{{const f = document.querySelector({json.dumps(form)});"
            f"{fill} f.requestSubmit();}}",
        )
        tab.wait_loaded()
        tab.read_text()
        cookies = tab.call("Network.getCookies", urls=[url])
    return tab.load, [cookie["name"] for cookie in cookies["cookies"]]


def assert_clean(load: PageLoad, origin: str) -> None:
    assert load.errors == [], load.errors  # console errors and CSP violations alike
    foreign = [url for url in load.requests if not url.startswith(origin)]
    assert foreign == [], foreign


@pytest.fixture
def signed_in_browser(
    chromium: Chromium, console: Console, console_server: LiveServer, admin_key: str
) -> Chromium:
    assert console.sign_in(admin_key).status_code == 303
    set_cookie(
        chromium,
        console_server.url + "/console/",
        SESSION_COOKIE,
        console.http.cookies[SESSION_COOKIE],
    )
    return chromium


def test_the_main_pages_load_clean_in_chromium(
    signed_in_browser: Chromium,
    console_server: LiveServer,
    console: Console,
    logged_decision_id: str,
    admin_key: str,
) -> None:
    origin = console_server.url
    experiment = create_experiment(console_server, admin_key)
    pages = {
        "/console/": [DEMO_CUSTOMER, "Find a customer", "Recently active"],
        "/console/customers": [DEMO_CUSTOMER, "Every customer"],
        f"/console/customers/{DEMO_CUSTOMER}": ["cash_withdrawal", "6 of the last 6", "a***@"],
        f"/console/decisions/{logged_decision_id}": ["Your usual 200 EUR, no receipt?"],
        "/console/simulate?customer_id=cust-demo": ["dry run"],
        "/console/touchpoints": ["atm-0042"],
        "/console/experiments": [experiment, "holdout 25.0%"],
        f"/console/experiments/{experiment}/report": [experiment],
        "/console/models": ["rapport-nba"],
    }
    for path, figures in pages.items():
        load = signed_in_browser.load(origin + path, wait_for=figures[0])
        assert_clean(load, origin)
        for figure in figures:
            assert figure in load.text, (path, figure)
        report = path.endswith("/report")  # the experiment report inlines its own style
        assert report or any(url.endswith("/console.css") for url in load.requests), path


def test_the_login_and_403_pages_load_clean_in_chromium(
    chromium: Chromium, console_server: LiveServer, console: Console, settings: Settings
) -> None:
    origin = console_server.url
    login = chromium.load(origin + "/console/login", wait_for="Sign in")
    assert_clean(login, origin)
    assert "API key" in login.text

    console.sign_in(create_key(settings, "teller", [Scope.DECISIONS]))
    set_cookie(chromium, origin + "/console/", SESSION_COOKIE, console.http.cookies[SESSION_COOKIE])
    refused = chromium.load(origin + "/console/models", wait_for="Not allowed")
    assert "needs an API key with the scope “admin”" in refused.text
    # The browser reports the 403 of the page itself; nothing else may go wrong.
    others = [e for e in refused.errors if not re.search(r"status of 403", e)]
    assert others == []
    assert [url for url in refused.requests if not url.startswith(origin)] == []


def test_sign_in_simulate_and_sign_out_in_chromium(
    chromium: Chromium, console_server: LiveServer, admin_key: str, logged_decision_id: str
) -> None:
    """The walk of the issue, in the browser: sign in, run the simulator, sign out."""
    origin = console_server.url
    signed_in, cookies = submit_form(
        chromium, f"{origin}/console/login", "form", {"key": admin_key}
    )
    assert_clean(signed_in, origin)
    assert "Find a customer" in signed_in.text
    assert SESSION_COOKIE in cookies

    simulated, _ = submit_form(
        chromium,
        f"{origin}/console/simulate?customer_id={DEMO_CUSTOMER}",
        "main form",
        {"touchpoint": "atm-0042", "channel": "atm"},
    )
    assert_clean(simulated, origin)
    assert "Your usual 200 EUR, no receipt?" in simulated.text
    assert "With an open complaint" in simulated.text

    signed_out, cookies = submit_form(chromium, f"{origin}/console/", "form.signout", {})
    assert_clean(signed_out, origin)
    assert "Sign in" in signed_out.text
    assert SESSION_COOKIE not in cookies
