"""Experiments: define them, change their weights, stop them, and review them.

Every route needs the `experiments` scope. Definitions are validated as
`experiments.definitions.Experiment` (422 naming the field) and against the serving catalogue.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require
from api.deps import Experiments, Now, Policy, Running, Store
from api.params import ExperimentIdPath, Instant
from api.params import as_of as as_of_query
from experiments.definitions import Experiment
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

    at: Instant | None = Field(None, description="When it stops; now if omitted.")


def _changed(running: RunningExperiments, experiment: Experiment) -> Experiment:
    """A change made here reaches this worker's decisions at once (others within the TTL)."""
    running.forget()
    return experiment


@router.post("", status_code=201, response_model=Experiment)
def post_experiment(
    experiment: Experiment, registry: Experiments, running: Running, policy: Policy
) -> Experiment:
    """Define an experiment. 409 if its id exists; 422 naming the field if it is invalid
    (including action ids the catalogue does not hold)."""
    experiment.check_catalogue(policy.catalogue)
    return _changed(running, create_experiment(registry, experiment))


@router.get("", response_model=list[Experiment])
def get_experiments(registry: Experiments) -> list[Experiment]:
    """Every experiment, by id."""
    return list_experiments(registry)


@router.get("/{experiment_id}", response_model=Experiment)
def get_one_experiment(experiment_id: ExperimentIdPath, registry: Experiments) -> Experiment:
    return get_experiment(registry, experiment_id)


@router.put("/{experiment_id}/weights", response_model=Experiment)
def put_weights(
    experiment_id: ExperimentIdPath, body: WeightsIn, registry: Experiments, running: Running
) -> Experiment:
    """New traffic weights. Customers move only into variants whose share grew and out of
    variants whose share shrank, no more than the new shares require."""
    changed = change_experiment(registry, experiment_id, lambda e: e.with_weights(body.weights))
    return _changed(running, changed)


@router.post("/{experiment_id}/stop", response_model=Experiment)
def stop_experiment(
    experiment_id: ExperimentIdPath,
    registry: Experiments,
    running: Running,
    now: Now,
    body: StopIn | None = None,
) -> Experiment:
    """Stop the experiment (now, or at `at`): from then on its customers get the serving
    policy and no exposure is logged."""
    at = body.at if body and body.at else now
    changed = change_experiment(registry, experiment_id, lambda e: e.stopped(at))
    return _changed(running, changed)


@router.get(
    "/{experiment_id}/report",
    response_model=None,
    responses={200: {"content": {"text/html": {}, "application/json": {}}}},
)
def get_report(
    experiment_id: ExperimentIdPath,
    registry: Experiments,
    store: Store,
    policy: Policy,
    now: Now,
    format: Annotated[Literal["html", "json"], Query(description="html or json")] = "html",
    as_of: Annotated[Instant | None, as_of_query("Review as of this time.")] = None,
) -> Response:
    """The review: summary with intervals, lift, metric over time, sample-ratio check,
    guardrails, the off-policy estimate of the greedy ranking, and the verdict. Reads the
    store's whole logs: for large stores, use `rapport experiments report --offline`."""
    experiment = get_experiment(registry, experiment_id)
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
