"""A real headless Chromium for the tests of pages (the experiment report, the API docs, the
console), driven through the Chrome DevTools protocol with the `websockets` client that
uvicorn[standard] already brings: console errors, uncaught exceptions, CSP violations and every
network request are collected while a page loads. Chromium must be on PATH
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

STARTUP_SECONDS = 30.0


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

    @contextmanager
    def tab(self, timeout: float = 30.0) -> Iterator[Tab]:
        """A new tab, driven over DevTools, collecting into its `PageLoad` what happens."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            target = json.load(answer)
        with connect(target["webSocketDebuggerUrl"], max_size=None) as socket:
            yield Tab(socket, timeout)

    def load(self, url: str, timeout: float = 30.0, wait_for: str | None = None) -> PageLoad:
        """Open `url` in a new tab and collect what happens until it has loaded and, with
        `wait_for`, until the page's text shows it (pages that render by script)."""
        with self.tab(timeout) as tab:
            tab.open(url)
            deadline = time.monotonic() + timeout
            while True:
                tab.read_text()
                if wait_for is None or wait_for in tab.load.text or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            widths = tab.call(
                "Runtime.evaluate",
                expression="[...document.querySelectorAll('svg')]"
                ".map(s => s.getBoundingClientRect().width)",
                returnByValue=True,
            )
            tab.load.svg_widths = widths["result"]["value"]
            return tab.load

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


class Tab:
    """One DevTools session on a tab: commands, and the events seen meanwhile (`load`)."""

    def __init__(self, socket: ClientConnection, timeout: float) -> None:
        self.socket = socket
        self.timeout = timeout
        self.load = PageLoad()
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=self.timeout))
            if message.get("id") == call_id:
                result: dict[str, Any] = message.get("result", {})
                return result
            Chromium._collect(message, self.load)

    def wait_loaded(self) -> None:
        """Until the page's load event, collecting what comes meanwhile."""
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = max(0.1, deadline - time.monotonic())
            message = json.loads(self.socket.recv(timeout=remaining))
            Chromium._collect(message, self.load)
            if message.get("method") == "Page.loadEventFired":
                return

    def open(self, url: str) -> None:
        """Enable the domains collected, navigate to `url` and wait until it has loaded."""
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        self.wait_loaded()

    def read_text(self) -> str:
        """The page's text, once late console messages had a moment to arrive."""
        time.sleep(0.3)
        value = self.call(
            "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
        )
        self.load.text = value["result"]["value"]
        return self.load.text
