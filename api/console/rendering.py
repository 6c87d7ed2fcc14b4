"""Templates and the values every page gets (the operator, the CSRF token, the navigation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from api.console.session import Operator
from feature_store.credentials import Scope

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.autoescape = True

#: The navigation: (path under /console, label, scope the page needs).
NAVIGATION = [
    ("/", "Customers", Scope.CUSTOMERS_READ),
    ("/simulate", "Simulator", Scope.DECISIONS),
    ("/touchpoints", "Touchpoints", Scope.CUSTOMERS_READ),
    ("/experiments", "Experiments", Scope.EXPERIMENTS),
    ("/models", "Models", Scope.ADMIN),
]


def render(
    request: Request,
    template: str,
    operator: Operator | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    nav = [
        (path, label, operator is not None and operator.grants(scope))
        for path, label, scope in NAVIGATION
    ]
    return templates.TemplateResponse(
        request,
        template,
        {"operator": operator, "csrf": operator.csrf if operator else "", "nav": nav, **context},
        status_code=status_code,
    )


#: What a missing figure shows.
NONE = "-"


def percent(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


def number(value: float | None, digits: int = 3) -> str:
    return NONE if value is None else f"{value:.{digits}g}"


def when(value: Any) -> str:
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["percent"] = percent
templates.env.filters["number"] = number
templates.env.filters["when"] = when
