"""The console's dashboards: touchpoints, experiments (with their reports) and models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.deps import Admin, Csrf, Experimenter, Reader, console_store, now
from api.console.rendering import render
from api.console.session import check_csrf
from api.console.state import api_state
from api.params import ExperimentIdPath
from api.routes.models import _served
from api.serving import touchpoint_stats
from experiments.logs import OnlineLogs
from experiments.offpolicy import greedy_candidate
from experiments.registry import get_experiment, list_experiments
from experiments.report import CONTENT_SECURITY_POLICY as REPORT_CSP
from experiments.report import render_report
from experiments.review import review_logged_experiment

router = APIRouter(include_in_schema=False)


TOUCHPOINT_SORTS = ("touchpoint", "volume", "feedback", "nps", "complaint_rate")
PAGE = 25


@router.get("/touchpoints")
def touchpoints(
    request: Request,
    operator: Reader,
    sort: str = "volume",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HTMLResponse:
    report = touchpoint_stats(console_store(request))
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
    at = now()
    listed = list_experiments(api_state(request).experiments)

    def status(start: datetime, stop: datetime | None) -> str:
        if at < start:
            return "scheduled"
        return "stopped" if stop is not None and stop <= at else "running"

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
        OnlineLogs(console_store(request)),
        at=now(),
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
