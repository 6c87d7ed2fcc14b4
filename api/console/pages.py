"""The console's pages. Each handler checks the scope its data needs, calls the serving
use-cases the API routes call, and renders a template."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.console import simulator, views
from api.console.deps import (
    Csrf,
    CustomerId,
    Decider,
    Reader,
    console_store,
    now,
)
from api.console.rendering import NAVIGATION, render
from api.console.session import (
    check_csrf,
    check_key,
    check_login_token,
    current_operator,
    end_session,
    login_token,
    set_login_token,
    start_session,
)
from api.console.state import api_state
from api.params import ID_PATTERN, CustomerIdPath, DecisionIdPath
from api.routes.customer_list import customer_page
from api.serving import customer_view, export_customer, logged_decision
from engine.decision import DecisionRequest
from engine.events import Channel
from engine.identity import Identity, IdentityType
from experiments.assignment import ExperimentRouter

router = APIRouter(include_in_schema=False)


def _safe_next(path: str | None) -> str:
    """Only a console path: never another site (an open redirect)."""
    if path and path.startswith("/console/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console/"


class BadInstant(ValueError):
    """A simulator time that is not ISO 8601."""


def _instant(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is read as UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise BadInstant(text) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# -- sign-in ------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return render_login(request, login_token(request), _safe_next(next), failed=False)


def render_login(request: Request, token: str, next_path: str, *, failed: bool) -> HTMLResponse:
    response = render(
        request,
        "login.html",
        None,
        status_code=401 if failed else 200,
        next=next_path,
        failed=failed,
        login_csrf=token,
    )
    set_login_token(request, response, token)
    return response


@router.post("/login")
def login(
    request: Request,
    csrf: Csrf,
    key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=500)] = "/console/",
) -> Response:
    check_login_token(request, csrf)
    record = check_key(request, key)
    if record is None:
        return render_login(request, csrf, _safe_next(next), failed=True)
    target = _safe_next(next)
    if target == "/console/":  # no page asked for: the first one the key may see
        allowed = [path for path, _, scope in NAVIGATION if record.grants(scope)]
        target = f"/console{allowed[0]}" if allowed else target
    response = RedirectResponse(target, status_code=303)
    start_session(request, response, record)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Csrf) -> Response:
    check_csrf(current_operator(request), csrf)
    response = RedirectResponse("/console/login", status_code=303)
    end_session(request, response)
    return response


# -- customers ----------------------------------------------------------------------------------


@router.get("/")
def home(request: Request, operator: Reader) -> HTMLResponse:
    recent = views.recently_active(console_store(request), 25)
    return render(request, "home.html", operator, recent=recent, notice=None)


@router.get("/customers")
def customers(
    request: Request,
    operator: Reader,
    after: Annotated[str | None, Query(max_length=128, pattern=ID_PATTERN)] = None,
) -> HTMLResponse:
    """Every customer, in id order, a page at a time (as GET /v1/customers lists them)."""
    page = customer_page(console_store(request), after, 50)
    return render(request, "customers.html", operator, page=page, after=after)


@router.post("/find")
def find(
    request: Request,
    operator: Reader,
    csrf: Csrf,
    customer_id: Annotated[str, Form(max_length=128)] = "",
    identity_type: Annotated[str, Form(max_length=16)] = "",
    identity_value: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """By customer id, or by an identifier normalised and digested as the API does. The raw
    identifier travels in the form body only, and only its masked form is ever shown."""
    check_csrf(operator, csrf)
    if customer_id.strip():
        found, notice = _valid_id(customer_id.strip())
    else:
        found, notice = _find_by_identifier(request, identity_type, identity_value)
    if found is not None:
        return RedirectResponse(f"/console/customers/{found}", status_code=303)
    recent = views.recently_active(console_store(request), 25)
    return render(request, "home.html", operator, status_code=404, recent=recent, notice=notice)


def _valid_id(customer_id: str) -> tuple[str | None, str | None]:
    if re.fullmatch(ID_PATTERN, customer_id) and len(customer_id) <= 128:
        return customer_id, None
    return None, "A customer id has letters, digits and . _ : @ - only."


def _find_by_identifier(request: Request, kind: str, value: str) -> tuple[str | None, str | None]:
    """The customer linked to the identifier, or why there is none (naming it masked only)."""
    try:
        identity = Identity(type=IdentityType(kind), value=value)
    except (ValueError, ValidationError):
        return None, "That is not a valid identifier of the chosen type."
    secret = api_state(request).settings.identity_secret.get_secret_value().encode()
    found = console_store(request).resolve_identity(identity.hashed(secret))
    if found is None:
        return None, f"No customer is linked to {identity.masked()}."
    return found, None


@router.get("/customers/{customer_id}")
def customer(
    request: Request,
    operator: Reader,
    customer_id: CustomerIdPath,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    store = console_store(request)
    view = customer_view(store, customer_id, at=now())
    export = export_customer(store, customer_id)
    rows = views.timeline(export, kind=kind or None, channel=channel or None)
    latest = next((d for d in reversed(export.decisions)), None)
    return render(
        request,
        "customer.html",
        operator,
        view=view,
        export=export,
        profile=export.profile,
        rows=rows,
        kind=kind or "",
        channel=channel or "",
        kinds=sorted({r.kind for r in views.timeline(export, kind=None, channel=None)}),
        channels=views.channels(),
        segment=latest.segment if latest else None,
    )


@router.get("/decisions/{decision_id}")
def decision(request: Request, operator: Reader, decision_id: DecisionIdPath) -> HTMLResponse:
    logged = logged_decision(console_store(request), decision_id)
    return render(
        request,
        "decision.html",
        operator,
        decision=logged,
        matrix=views.arbitration_matrix(logged),
        screen=views.touchpoint_screen(logged),
    )


# -- simulator ----------------------------------------------------------------------------------


@router.get("/simulate")
def simulate_form(
    request: Request, operator: Decider, customer_id: CustomerId | None = None
) -> HTMLResponse:
    return render(
        request,
        "simulate.html",
        operator,
        channels=views.channels(),
        form={"customer_id": customer_id or "", "touchpoint": "atm-0042", "channel": "atm"},
        results=[],
    )


@router.post("/simulate")
def simulate(
    request: Request,
    operator: Decider,
    csrf: Csrf,
    customer_id: Annotated[str, Form(min_length=1, max_length=128, pattern=ID_PATTERN)],
    touchpoint: Annotated[str, Form(min_length=1, max_length=64)],
    channel: Annotated[Channel, Form()],
    request_kind: Annotated[str, Form(max_length=64)] = "",
    at: Annotated[str, Form(max_length=40)] = "",
) -> HTMLResponse:
    """A dry run: `views.simulate` only reads the store (see its docstring)."""
    check_csrf(operator, csrf)
    state = api_state(request)
    when = _instant(at) if at.strip() else now()
    question = DecisionRequest(
        customer_id=customer_id,
        touchpoint=touchpoint,
        channel=channel,
        context={"request": request_kind} if request_kind.strip() else {},
        at=when,
    )
    models = getattr(state, "models", None)
    experiments = ExperimentRouter(
        running=state.running_experiments.at,
        policy=state.decision_policy,
        scorers=None if models is None else models.scorer,
    )
    results = []
    for what_if in (
        simulator.WhatIf(),
        simulator.WhatIf(open_complaint=True),
        simulator.WhatIf(marketing_revoked=True),
    ):
        simulated = simulator.simulate(
            console_store(request),
            question,
            at=when,
            policy=state.decision_policy,
            scorer=None if models is None else models.scorer(),
            assigner=experiments.assigner(when),
            what_if=what_if,
        )
        decision = simulated.decision
        results.append(
            {
                "what_if": what_if,
                "decision": decision,
                "matrix": views.arbitration_matrix(decision),
                "screen": views.touchpoint_screen(decision),
                "considered": simulator.defaults_considered(
                    simulated.profile, decision, console_store(request).config
                ),
            }
        )
    form = {
        "customer_id": customer_id,
        "touchpoint": touchpoint,
        "channel": channel.value,
        "request_kind": request_kind,
        "at": at,
    }
    return render(
        request, "simulate.html", operator, channels=views.channels(), form=form, results=results
    )
