"""What model the API serves, and reloading it from the registry on demand."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import require
from api.deps import AppSettings, ModelServing
from api.model_server import AliasState, ModelServer
from feature_store.credentials import Scope

router = APIRouter(prefix="/v1", tags=["models"])


class ServedAlias(BaseModel):
    """One alias of the registered model: the version served and the last refusal, if any."""

    alias: str
    version: str | None = Field(description="The version served; null: the online rates.")
    model_version: str | None = Field(description="As logged with decisions, e.g. rapport-nba/3.")
    run_id: str | None
    source: str | None = Field(description="Where the registry keeps the version's artifacts.")
    checksum: str | None = Field(description="SHA-256 over the served bundle's files.")
    loaded_at: datetime | None
    registry_version: str | None = Field(description="Where the alias pointed at the last check.")
    checked_at: datetime | None
    last_error: str | None = Field(
        description="Why the registry's version is not served (refused, or registry unreachable)."
    )
    last_error_at: datetime | None

    @classmethod
    def of(cls, state: AliasState) -> ServedAlias:
        model = state.model
        return cls(
            alias=state.alias,
            version=model.version if model else None,
            model_version=model.scorer.model_version if model else None,
            run_id=model.run_id if model else None,
            source=model.source if model else None,
            checksum=model.checksum if model else None,
            loaded_at=model.loaded_at if model else None,
            registry_version=state.registry_version,
            checked_at=state.checked_at,
            last_error=state.error,
            last_error_at=state.error_at,
        )


class ServedModels(BaseModel):
    name: str = Field(description="The registered model.")
    poll_seconds: float = Field(description="How often the registry is asked; 0: never.")
    aliases: list[ServedAlias] = Field(description="Champion first.")


def _served(models: ModelServer, poll_seconds: float) -> ServedModels:
    return ServedModels(
        name=models.name,
        poll_seconds=poll_seconds,
        aliases=[ServedAlias.of(state) for state in models.states()],
    )


@router.get("/models", response_model=ServedModels, dependencies=[require(Scope.ADMIN)])
async def get_models(models: ModelServing, settings: AppSettings) -> ServedModels:
    """The versions served behind each alias (champion first), with checksum and run, and why
    the registry's version is not served when it was refused."""
    return _served(models, settings.model_poll_seconds)


@router.post(
    "/admin/models/reload", response_model=ServedModels, dependencies=[require(Scope.ADMIN)]
)
async def reload_models(models: ModelServing, settings: AppSettings) -> ServedModels:
    """Ask the registry now and swap in what moved, retrying versions refused before. Answers
    once done; a refused version leaves the previous one serving (see `last_error`)."""
    await models.refresh_async(force=True)
    return _served(models, settings.model_poll_seconds)
