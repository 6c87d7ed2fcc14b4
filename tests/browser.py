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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

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

    def load(self, url: str, timeout: float = 30.0, wait_for: str | None = None) -> PageLoad:
        """Open `url` in a new tab and collect what happens until it has loaded and, with
        `wait_for`, until the page's text shows it (pages that render by script)."""
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
            while True:
                value = call(
                    "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
                )
                load.text = value["result"]["value"]
                if wait_for is None or wait_for in load.text or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
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
