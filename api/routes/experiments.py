"""Experiments: define them, change their weights, stop them, and review them.

Every route needs the `experiments` scope. Definitions are validated as
`experiments.definitions.Experiment` (422 naming the field) and against the serving catalogue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import Now, Policy, Store
from api.errors import error_body
from experiments.definitions import Experiment, InvalidExperiment
from experiments.logs import OnlineLogs
from experiments.offpolicy import greedy_candidate
from experiments.registry import (
    RunningExperiments,
    change_experiment,
    create_experiment,
    get_experiment,
    list_experiments,
)
from experiments.report import CONTENT_SECURITY_POLICY, render_report
from experiments.review import review_logged_experiment
from feature_store.credentials import Scope
from feature_store.errors import UnsupportedCapability
from feature_store.experiments import (
    DuplicateExperiment,
    ExperimentRegistry,
    StaleExperiment,
    UnknownExperiment,
)

router = APIRouter(
    prefix="/v1/experiments", tags=["experiments"], dependencies=[require(Scope.EXPERIMENTS)]
)


class WeightsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(
        min_length=1, description="New relative traffic weight of every variant."
    )


class StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: AwareDatetime | None = Field(None, description="When it stops; now if omitted.")


def _registry(request: Request) -> ExperimentRegistry:
    registry: ExperimentRegistry = request.app.state.experiments
    return registry


def _changed(request: Request, experiment: Experiment) -> Experiment:
    """A change made here reaches this worker's decisions at once (others within the TTL)."""
    running: RunningExperiments = request.app.state.running_experiments
    running.forget()
    return experiment


@router.post("", status_code=201, response_model=Experiment)
def post_experiment(experiment: Experiment, request: Request, policy: Policy) -> Experiment:
    """Define an experiment. 409 if its id exists; 422 naming the field if it is invalid
    (including action ids the catalogue does not hold)."""
    experiment.check_catalogue(policy.catalogue)
    return _changed(request, create_experiment(_registry(request), experiment))


@router.get("", response_model=list[Experiment])
def get_experiments(request: Request) -> list[Experiment]:
    """Every experiment, by id."""
    return list_experiments(_registry(request))


@router.get("/{experiment_id}", response_model=Experiment)
def get_one_experiment(experiment_id: str, request: Request) -> Experiment:
    return get_experiment(_registry(request), experiment_id)


@router.put("/{experiment_id}/weights", response_model=Experiment)
def put_weights(experiment_id: str, body: WeightsIn, request: Request) -> Experiment:
    """New traffic weights. Customers move only into variants whose share grew and out of
    variants whose share shrank, no more than the new shares require."""
    changed = change_experiment(
        _registry(request), experiment_id, lambda e: e.with_weights(body.weights)
    )
    return _changed(request, changed)


@router.post("/{experiment_id}/stop", response_model=Experiment)
def stop_experiment(
    experiment_id: str, request: Request, now: Now, body: StopIn | None = None
) -> Experiment:
    """Stop the experiment (now, or at `at`): from then on its customers get the serving
    policy and no exposure is logged."""
    at = body.at if body and body.at else now
    changed = change_experiment(_registry(request), experiment_id, lambda e: e.stopped(at))
    return _changed(request, changed)


@router.get(
    "/{experiment_id}/report",
    response_model=None,
    responses={200: {"content": {"text/html": {}, "application/json": {}}}},
)
def get_report(
    experiment_id: str,
    request: Request,
    store: Store,
    policy: Policy,
    now: Now,
    format: Annotated[Literal["html", "json"], Query(description="html or json")] = "html",
    as_of: Annotated[AwareDatetime | None, Query(description="Review as of this time.")] = None,
) -> Response:
    """The review: summary with intervals, lift, metric over time, sample-ratio check,
    guardrails, the off-policy estimate of the greedy ranking, and the verdict. Reads the
    store's whole logs: for large stores, use `rapport experiments report --offline`."""
    experiment = get_experiment(_registry(request), experiment_id)
    review = review_logged_experiment(
        experiment,
        OnlineLogs(store),
        at=as_of or now,
        candidate=greedy_candidate(policy.catalogue),
    )
    if format == "json":
        return JSONResponse(review.model_dump(mode="json"))
    return HTMLResponse(
        render_report(review), headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY}
    )


#: Domain errors with a fixed answer: status, code, and the field and reason named.
_FIXED_ANSWERS: dict[type[Exception], tuple[int, str, str, str]] = {
    DuplicateExperiment: (409, "duplicate_experiment", "body.id", "already exists"),
    StaleExperiment: (409, "experiment_changed", "experiment_id", "changed meanwhile; retry"),
    UnknownExperiment: (404, "unknown_experiment", "experiment_id", "not found"),
    UnsupportedCapability: (501, "unsupported_by_store", "store", "cannot read its logs"),
}


def install_experiment_error_handlers(app: FastAPI) -> None:
    """The experiments' domain errors as JSON answers in the app's error format."""
    app.add_exception_handler(InvalidExperiment, _invalid_experiment)
    for error_type, (status, code, field, reason) in _FIXED_ANSWERS.items():
        app.add_exception_handler(error_type, _fixed_answer(status, code, field, reason))


async def _invalid_experiment(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidExperiment)
    field = f"body.{exc.field}" if exc.field else "body"
    errors = [{"field": field, "reason": exc.reason}]
    return JSONResponse(status_code=422, content=error_body("invalid_experiment", str(exc), errors))


def _fixed_answer(
    status: int, code: str, field: str, reason: str
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        errors = [{"field": field, "reason": reason}]
        return JSONResponse(status_code=status, content=error_body(code, str(exc), errors))

    return answer
