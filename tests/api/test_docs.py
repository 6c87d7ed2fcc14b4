"""The API docs work without internet: `/docs` and `/redoc` load only what the API itself serves,
and render the API in a real browser."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.conftest import LiveServer
from tests.browser import Chromium


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_their_assets_from_the_api(server: LiveServer, page: str) -> None:
    html = httpx.get(f"{server.url}{page}", timeout=10)

    assert html.status_code == 200
    assert "cdn" not in html.text.lower()
    assert "fonts.googleapis" not in html.text
    assert "/static/docs/" in html.text


def test_the_shipped_assets_are_served(server: LiveServer) -> None:
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        answer = httpx.get(f"{server.url}/static/docs/{asset}", timeout=10)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 100_000, asset


@pytest.mark.parametrize(
    ("page", "expected"), [("/docs", "/v1/decisions"), ("/redoc", "/v1/decisions")]
)
def test_the_docs_render_in_chromium_from_the_api_alone(
    server: LiveServer, chromium: Chromium, page: str, expected: str
) -> None:
    load = chromium.load(f"{server.url}{page}", wait_for=expected)

    hosts = {urlsplit(url).netloc for url in load.requests if url.startswith("http")}
    assert hosts == {f"127.0.0.1:{server.port}"}, load.requests
    assert expected in load.text, load.text[:500]
