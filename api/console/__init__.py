"""The operator console: server-rendered pages at /console over the API's own use-cases.

`install_console(app)` mounts it in the API as a sub-application with its own sign-in (a
session cookie, see `api.console.session`), its pages (`api.console.pages`) and its static
files, all shipped in the package. Every answer carries a strict Content-Security-Policy: the
console runs no script at all, and loads nothing from another origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.console import dashboards, pages
from api.console.errors import install_console_errors

MOUNT = "/console"
STATIC = Path(__file__).parent / "static"

#: No script, no inline style, nothing from another origin, forms only to the console itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds the CSP and its companions to every answer of the console; pages are not cached
    (they show customer data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{MOUNT}/static/") or scope["path"].startswith(
            "/static/"
        )

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                # A page with a CSP of its own (the experiment report: stricter) keeps it.
                own = any(name == b"content-security-policy" for name, _ in headers)
                headers += [
                    h for h in SECURITY_HEADERS if not own or h[0] != SECURITY_HEADERS[0][0]
                ]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def console_app(api: FastAPI) -> FastAPI:
    """The console as an app of its own, reading `api`'s state (store, keys, models)."""
    console = FastAPI(title="Rapport console", docs_url=None, redoc_url=None, openapi_url=None)
    console.state.api = api
    console.mount("/static", StaticFiles(directory=STATIC), name="console-static")
    console.include_router(pages.router)
    console.include_router(dashboards.router)
    install_console_errors(console)
    console.add_middleware(SecurityHeaders)
    return console


def install_console(app: FastAPI) -> None:
    """Mount the console at /console (pages and static files)."""
    app.mount(MOUNT, console_app(app), name="console")
