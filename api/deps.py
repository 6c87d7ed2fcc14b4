"""Dependencies injected into route handlers, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from api.bounds import InputBounds
from api.model_server import ModelServer
from api.serving import PopulationCache
from api.settings import Settings
from engine.next_best_action import DecisionPolicy
from engine.scoring import Scorer
from experiments.assignment import ExperimentRouter
from experiments.registry import RunningExperiments
from feature_store.base import OnlineStore
from feature_store.experiments import ExperimentRegistry


async def get_store(request: Request) -> OnlineStore:
    store: OnlineStore = request.app.state.store
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_now() -> datetime:
    """The server's clock: the only place the serving path reads it.

    The dependencies here are `async`: FastAPI would run sync ones in the thread pool, a
    thread hop each per request."""
    return datetime.now(UTC)


async def get_identity_secret(request: Request) -> bytes:
    settings: Settings = request.app.state.settings
    return settings.identity_secret.get_secret_value().encode()


async def get_decision_policy(request: Request) -> DecisionPolicy:
    policy: DecisionPolicy = request.app.state.decision_policy
    return policy


async def get_model_server(request: Request) -> ModelServer:
    models: ModelServer = request.app.state.models
    return models


async def get_served_model(request: Request) -> Scorer | None:
    """The champion's scorer; None (the online rates) while no champion is loaded."""
    models: ModelServer = request.app.state.models
    return models.scorer()


async def get_experiment_registry(request: Request) -> ExperimentRegistry:
    registry: ExperimentRegistry = request.app.state.experiments
    return registry


async def get_running_experiments(request: Request) -> RunningExperiments:
    running: RunningExperiments = request.app.state.running_experiments
    return running


async def get_experiment_router(request: Request) -> ExperimentRouter:
    """The running experiments and the models of their variants' aliases (none without a
    model server)."""
    state = request.app.state
    models = getattr(state, "models", None)
    return ExperimentRouter(
        running=state.running_experiments.at,
        policy=state.decision_policy,
        scorers=None if models is None else models.scorer,
    )


@dataclass(frozen=True, slots=True)
class DecisionServing:
    """Everything the decision route reads of the app, gathered by one dependency: FastAPI
    resolving seven of them cost more per decision than the engine's contact policy."""

    store: OnlineStore
    identity_secret: bytes
    policy: DecisionPolicy
    scorer: Scorer | None
    experiments: ExperimentRouter
    population: PopulationCache
    bounds: InputBounds
    now: datetime


async def get_decision_serving(request: Request) -> DecisionServing:
    state = request.app.state
    return DecisionServing(
        store=state.store,
        identity_secret=await get_identity_secret(request),
        policy=state.decision_policy,
        scorer=await get_served_model(request),
        experiments=await get_experiment_router(request),
        population=state.population,
        bounds=state.input_bounds,
        now=await get_now(),
    )


Store = Annotated[OnlineStore, Depends(get_store)]
Policy = Annotated[DecisionPolicy, Depends(get_decision_policy)]
IdentitySecret = Annotated[bytes, Depends(get_identity_secret)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Now = Annotated[datetime, Depends(get_now)]


def get_input_bounds(request: Request) -> InputBounds:
    bounds: InputBounds = request.app.state.input_bounds
    return bounds


Bounds = Annotated[InputBounds, Depends(get_input_bounds)]
ForDecisions = Annotated[DecisionServing, Depends(get_decision_serving)]
ModelServing = Annotated[ModelServer, Depends(get_model_server)]
ServedModel = Annotated[Scorer | None, Depends(get_served_model)]
ExperimentAssignment = Annotated[ExperimentRouter, Depends(get_experiment_router)]
Experiments = Annotated[ExperimentRegistry, Depends(get_experiment_registry)]
Running = Annotated[RunningExperiments, Depends(get_running_experiments)]
