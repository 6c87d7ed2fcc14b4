"""The review report renders in a real headless Chromium without errors, loads nothing from
anywhere, and shows the key numbers.

The browser is driven through the Chrome DevTools protocol with the `websockets` client that
uvicorn[standard] already brings: console errors, uncaught exceptions, CSP violations and every
network request are collected while the page loads. Chromium must be on PATH
(`.ci/ensure-chromium` installs Debian's package): a missing one fails, never skips.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from websockets.sync.client import connect

from experiments.definitions import Experiment, validated
from experiments.logs import ExperimentLogs
from experiments.report import render_report
from experiments.review import ExperimentReview, review_experiment
from experiments.verdict import format_chance

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STARTUP_SECONDS = 30.0


# -- a minimal DevTools client ------------------------------------------------------------------


@dataclass
class PageLoad:
    """What happened while a page loaded, and its text."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    text: str = ""
    svg_widths: list[float] = field(default_factory=list)


class Chromium:
    """A headless Chromium with remote debugging on a free port, in its own profile folder."""

    def __init__(self, profile: Path) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            pytest.fail(
                "chromium is not on PATH: the report is checked in a real browser. "
                "Run .ci/ensure-chromium (make test does).",
                pytrace=False,
            )
        self.profile = profile
        self.process = subprocess.Popen(
            [
                binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.port = self._port()

    def _port(self) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (active.exists() and active.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        return int(active.read_text().splitlines()[0])

    def load(self, url: str, timeout: float = 30.0) -> PageLoad:
        """Open `url` in a new tab and collect what happens until it has loaded."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            target = json.load(answer)
        ids = itertools.count(1)
        load = PageLoad()
        with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:

            def call(method: str, **params: Any) -> dict[str, Any]:
                call_id = next(ids)
                socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
                while True:
                    message = json.loads(socket.recv(timeout=timeout))
                    if message.get("id") == call_id:
                        result: dict[str, Any] = message.get("result", {})
                        return result
                    self._collect(message, load)

            for domain in ("Runtime", "Log", "Page", "Network"):
                call(f"{domain}.enable")
            call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while True:
                message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
                self._collect(message, load)
                if message.get("method") == "Page.loadEventFired":
                    break
            time.sleep(0.3)  # let late console messages arrive
            value = call(
                "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
            )
            load.text = value["result"]["value"]
            widths = call(
                "Runtime.evaluate",
                expression="[...document.querySelectorAll('svg')]"
                ".map(s => s.getBoundingClientRect().width)",
                returnByValue=True,
            )
            load.svg_widths = widths["result"]["value"]
        return load

    @staticmethod
    def _collect(message: dict[str, Any], load: PageLoad) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "warning",
            "assert",
        ):
            load.errors.append(f"console.{params['type']}: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            load.errors.append(f"exception: {params.get('exceptionDetails')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            load.errors.append(f"log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            load.requests.append(params["request"]["url"])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield browser
    finally:
        browser.close()


# -- a review with known numbers ------------------------------------------------------------------


def experiment() -> Experiment:
    return validated(
        {
            "id": "nba-holdout",
            "hypothesis": "Personalised actions convert more <script>alert(1)</script>.",
            "start": T0.isoformat(),
            "variants": [
                {"name": "holdout", "weight": 1, "personalisation": False},
                {"name": "personalised", "weight": 1, "exploration_epsilon": 0.1},
            ],
            "guardrails": [
                {"metric": "complaint_rate", "margin": 0.05},
                {"metric": "feedback_score", "margin": 1},
            ],
            "min_units": 100,
        }
    )  # fmt: skip


def known_review() -> ExperimentReview:
    """3,000 customers per variant converting at 10 % and 16 % (fixed draws)."""
    rng = np.random.default_rng(5)
    rows, events = [], []
    for variant, rate in (("holdout", 0.10), ("personalised", 0.16)):
        for i in range(3000):
            at = T0 + timedelta(hours=i / 100)
            value = float(rng.random() < rate)
            rows.append((f"{variant}-{i}", variant, at, 2, value, float(rng.poisson(1 + 3 * value)),
                         float(rng.random() < 0.05), 0.0, float(rng.integers(6, 11))))  # fmt: skip
            if value:
                events.append((f"{variant}-{i}", variant, at + timedelta(hours=2), 1.0))
    columns = ["unit_id", "variant", "first_exposed_at", "exposures", "value", "covariate",
               "complaint", "opt_out", "feedback_score"]  # fmt: skip
    units = pd.DataFrame(rows, columns=columns)
    metric_events = pd.DataFrame(events, columns=["unit_id", "variant", "at", "amount"])
    logs = ExperimentLogs(units=units, metric_events=metric_events)
    return review_experiment(experiment(), logs, at=T0 + timedelta(days=2))


@pytest.fixture(scope="module")
def review() -> ExperimentReview:
    return known_review()


def test_the_report_is_self_contained(review: ExperimentReview) -> None:
    html = render_report(review)

    assert "<script" not in html  # the hypothesis' markup is escaped
    assert "&lt;script&gt;" in html
    for reference in ("src=", "href=", "@import", "url(", 'http-equiv="refresh"'):
        assert reference not in html
    # The only URL is the SVG namespace, an identifier that is never fetched.
    assert html.count("http") == html.count("http://www.w3.org/2000/svg") + html.count("http-equiv")


def test_the_report_renders_in_chromium_without_errors_and_shows_the_key_numbers(
    review: ExperimentReview, chromium: Chromium, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_report(review), encoding="utf-8")

    load = chromium.load(page.as_uri())

    assert load.errors == []
    assert load.requests == [page.as_uri()]  # nothing but the page itself
    assert len(load.svg_widths) == 2
    assert min(load.svg_widths) > 300
    summary = {row.variant: row for row in review.variants}
    [comparison] = review.analysis.comparisons if review.analysis else []
    text = load.text
    assert "Verdict: ship" in text
    assert f"{summary['holdout'].units:,}" in text
    assert f"{summary['personalised'].mean:.2%}" in text
    assert f"{summary['holdout'].mean:.2%}" in text
    assert f"{comparison.absolute_lift.estimate * 100:+.2f} pp" in text
    assert f"{format_chance(comparison.chance_to_beat_control)}" in text
    assert "ok χ² = 0.00, p = 1" in text  # the sample-ratio check: 3,000 and 3,000
    assert review.analysis is not None
    assert review.analysis.cuped is not None
    assert f"{review.analysis.cuped.variance_reduction:.1%}" in text
    assert "holdout: personalisation off" in text
    assert "Not available" in text  # no off-policy candidate was given


def test_the_browser_check_catches_a_page_that_loads_or_logs_something(
    review: ExperimentReview, chromium: Chromium, tmp_path: Path
) -> None:
    page = tmp_path / "broken.html"
    html = render_report(review).replace(
        "</main>", '<img src="https://example.invalid/pixel.png"></main>'
    )
    page.write_text(html, encoding="utf-8")

    load = chromium.load(page.as_uri())

    assert any("Content Security Policy" in error for error in load.errors), load.errors
