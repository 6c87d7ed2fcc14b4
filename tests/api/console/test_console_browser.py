"""Every main page of the console in a real headless Chromium: no console error, no CSP
violation, no request to another origin, and the key figures on the page."""

from __future__ import annotations

import itertools
import json
import re
import time
import urllib.request
from typing import Any

import pytest
from websockets.sync.client import connect

from api.cli.serve import DEMO_CUSTOMER
from api.console.session import SESSION_COOKIE
from api.settings import Settings
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, create_key
from tests.api.console.conftest import Console, create_experiment
from tests.browser import Chromium, PageLoad


def set_cookie(chromium: Chromium, url: str, name: str, value: str) -> None:
    """Give the browser the session cookie, with the flags the console sets."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{chromium.port}/json/new?about:blank", method="PUT"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        target = json.load(answer)
    with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
        params: dict[str, Any] = {
            "name": name,
            "value": value,
            "url": url,
            "path": "/console",
            "httpOnly": True,
            "sameSite": "Strict",
        }
        socket.send(json.dumps({"id": 1, "method": "Network.setCookie", "params": params}))
        while True:
            message = json.loads(socket.recv(timeout=10))
            if message.get("id") == 1:
                assert message["result"]["success"], message
                return


def submit_form(
    chromium: Chromium, url: str, form: str, fields: dict[str, str], timeout: float = 30.0
) -> tuple[PageLoad, list[str]]:
    """Open `url`, fill the fields of the form matched by the CSS selector `form` and submit
    it, then collect the answer's load and the names of the cookies the browser holds for
    `url`. (The fields are filled through DevTools, which the page's CSP does not govern.)"""
    request = urllib.request.Request(
        f"http://127.0.0.1:{chromium.port}/json/new?about:blank", method="PUT"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        target = json.load(answer)
    load = PageLoad()
    ids = itertools.count(1)
    with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:

        def call(method: str, **params: Any) -> dict[str, Any]:
            call_id = next(ids)
            socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
            while True:
                message = json.loads(socket.recv(timeout=timeout))
                if message.get("id") == call_id:
                    result: dict[str, Any] = message.get("result", {})
                    return result
                Chromium._collect(message, load)

        def loaded() -> None:
            while True:
                message = json.loads(socket.recv(timeout=timeout))
                Chromium._collect(message, load)
                if message.get("method") == "Page.loadEventFired":
                    return

        for domain in ("Runtime", "Log", "Page", "Network"):
            call(f"{domain}.enable")
        call("Page.navigate", url=url)
        loaded()
        fill = "".join(
            f"f.querySelector({json.dumps(f'[name={name}]')}).value = {json.dumps(value)};"
            for name, value in fields.items()
        )
        call(
            "Runtime.evaluate",
            expression=f"{{const f = document.querySelector({json.dumps(form)});"
            f"{fill} f.requestSubmit();}}",
        )
        loaded()
        time.sleep(0.3)  # late console messages
        text = call("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)
        load.text = text["result"]["value"]
        cookies = call("Network.getCookies", urls=[url])
    return load, [cookie["name"] for cookie in cookies["cookies"]]


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
