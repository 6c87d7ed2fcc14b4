"""The console's pages. Each handler checks the scope its data needs, calls the serving
use-cases the API routes call, and renders a template."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.console import views
from api.console.rendering import render
from api.console.session import (
    MissingConsoleScope,
    Operator,
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
from api.params import ID_PATTERN, CustomerIdPath, DecisionIdPath, ExperimentIdPath
from api.routes.customer_list import customer_page
from api.routes.models import _served
from api.serving import customer_view, export_customer, logged_decision, touchpoint_stats
from engine.decision import DecisionRequest
from engine.events import Channel
from engine.identity import Identity, IdentityType
from experiments.assignment import ExperimentRouter
from experiments.logs import OnlineLogs
from experiments.offpolicy import greedy_candidate
from experiments.registry import get_experiment, list_experiments
from experiments.report import CONTENT_SECURITY_POLICY as REPORT_CSP
from experiments.report import render_report
from experiments.review import review_logged_experiment
from feature_store.base import OnlineStore
from feature_store.credentials import Scope

router = APIRouter(include_in_schema=False)

CustomerId = Annotated[str, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]


def operator_with(scope: Scope) -> Any:
    """A page dependency: the signed-in operator, whose key must grant `scope`."""

    def dependency(request: Request) -> Operator:
        operator = current_operator(request)
        if not operator.grants(scope):
            raise MissingConsoleScope(scope)
        return operator

    return Depends(dependency)


Reader = Annotated[Operator, operator_with(Scope.CUSTOMERS_READ)]
Decider = Annotated[Operator, operator_with(Scope.DECISIONS)]
Experimenter = Annotated[Operator, operator_with(Scope.EXPERIMENTS)]
Admin = Annotated[Operator, operator_with(Scope.ADMIN)]
Csrf = Annotated[str, Form(max_length=128)]


def _store(request: Request) -> OnlineStore:
    store: OnlineStore = api_state(request).store
    return store


def _now() -> datetime:
    return datetime.now(UTC)


def _safe_next(path: str | None) -> str:
    """Only a console path: never another site (an open redirect)."""
    if path and path.startswith("/console/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console/"


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
    response = RedirectResponse(_safe_next(next), status_code=303)
    start_session(request, response, record)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Csrf) -> Response:
    check_csrf(current_operator(request), csrf)
    response = RedirectResponse("/console/login", status_code=303)
    end_session(response)
    return response


# -- customers ----------------------------------------------------------------------------------


@router.get("/")
def home(
    request: Request,
    operator: Reader,
    after: Annotated[str | None, Query(max_length=128, pattern=ID_PATTERN)] = None,
) -> HTMLResponse:
    page = customer_page(_store(request), after, 25)
    return render(request, "home.html", operator, page=page, after=after, notice=None)


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
    store = _store(request)
    if customer_id.strip():
        return RedirectResponse(f"/console/customers/{customer_id.strip()}", status_code=303)
    try:
        identity = Identity(type=IdentityType(identity_type), value=identity_value)
    except (ValueError, ValidationError):
        notice = "That is not a valid identifier of the chosen type."
    else:
        secret = api_state(request).settings.identity_secret.get_secret_value().encode()
        found = store.resolve_identity(identity.hashed(secret))
        if found is not None:
            return RedirectResponse(f"/console/customers/{found}", status_code=303)
        notice = f"No customer is linked to {identity.masked()}."
    page = customer_page(store, None, 25)
    return render(
        request, "home.html", operator, status_code=404, page=page, after=None, notice=notice
    )


@router.get("/customers/{customer_id}")
def customer(
    request: Request,
    operator: Reader,
    customer_id: CustomerIdPath,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    store = _store(request)
    view = customer_view(store, customer_id, at=_now())
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
    logged = logged_decision(_store(request), decision_id)
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
    when = datetime.fromisoformat(at).astimezone(UTC) if at.strip() else _now()
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
        views.WhatIf(),
        views.WhatIf(open_complaint=True),
        views.WhatIf(marketing_revoked=True),
    ):
        simulated = views.simulate(
            _store(request),
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
                "considered": views.defaults_considered(
                    simulated.profile, decision, _store(request).config
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


# -- dashboards ---------------------------------------------------------------------------------

TOUCHPOINT_SORTS = ("touchpoint", "volume", "feedback", "nps", "complaint_rate")
PAGE = 25


@router.get("/touchpoints")
def touchpoints(
    request: Request,
    operator: Reader,
    sort: str = "volume",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    report = touchpoint_stats(_store(request))
    key = sort if sort in TOUCHPOINT_SORTS else "volume"
    ordered = sorted(
        report,
        key=lambda s: (
            (getattr(s, key) is None, getattr(s, key) or 0)
            if key != "touchpoint"
            else (False, s.touchpoint)
        ),
        reverse=key != "touchpoint",
    )
    if key != "touchpoint":  # None (no feedback) last whatever the direction
        ordered = [s for s in ordered if getattr(s, key) is not None] + [
            s for s in ordered if getattr(s, key) is None
        ]
    page = ordered[offset : offset + PAGE]
    busiest = max((s.volume for s in report), default=0) or 1
    return render(
        request,
        "touchpoints.html",
        operator,
        page=page,
        total=len(report),
        sort=key,
        sorts=TOUCHPOINT_SORTS,
        offset=offset,
        page_size=PAGE,
        busiest=busiest,
    )


@router.get("/experiments")
def experiments(request: Request, operator: Experimenter) -> HTMLResponse:
    now = _now()
    listed = list_experiments(api_state(request).experiments)

    def status(start: datetime, stop: datetime | None) -> str:
        if now < start:
            return "scheduled"
        return "stopped" if stop is not None and stop <= now else "running"

    rows = [(e, status(e.start, e.stop), sum(v.weight for v in e.variants) or 1) for e in listed]
    return render(request, "experiments.html", operator, rows=rows)


@router.get("/experiments/{experiment_id}/report")
def experiment_report(
    request: Request, operator: Experimenter, experiment_id: ExperimentIdPath
) -> HTMLResponse:
    """The experiment's review, as GET /v1/experiments/{id}/report renders it (sample-ratio
    check included), with the report's own, stricter CSP."""
    state = api_state(request)
    experiment = get_experiment(state.experiments, experiment_id)
    review = review_logged_experiment(
        experiment,
        OnlineLogs(_store(request)),
        at=_now(),
        candidate=greedy_candidate(state.decision_policy.catalogue),
    )
    return HTMLResponse(render_report(review), headers={"Content-Security-Policy": REPORT_CSP})


@router.get("/models")
def models(request: Request, operator: Admin, reloaded: bool = False) -> HTMLResponse:
    state = api_state(request)
    served = _served(state.models, state.settings.model_poll_seconds)
    return render(request, "models.html", operator, served=served, reloaded=reloaded)


@router.post("/models/reload")
async def reload_models(request: Request, operator: Admin, csrf: Csrf) -> Response:
    check_csrf(operator, csrf)
    await api_state(request).models.refresh_async(force=True)
    return RedirectResponse("/console/models?reloaded=true", status_code=303)
