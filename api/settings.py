"""The one settings class. Every knob is read from the environment (prefix RAPPORT_) here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.config import EngineConfig


class Settings(BaseSettings):
    """Settings of the API and the CLI, e.g. `RAPPORT_STORE=sqlite:///var/rapport.db`.

    Nested engine parameters use `__`: `RAPPORT_ENGINE__HABIT_MIN_COUNT=4`.
    """

    model_config = SettingsConfigDict(
        env_prefix="RAPPORT_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["development", "test", "production"] = "development"
    store: str = Field(
        "sqlite:///var/rapport.db",
        description="sqlite:///path (embedded default), later redis:// or redis+cluster://",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    store_retry_after_seconds: int = Field(2, ge=1, description="Retry-After hint on 503.")

    @model_validator(mode="after")
    def _no_embedded_store_claims_in_production(self) -> Settings:
        if self.environment == "production" and self.store.startswith("sqlite:///var/"):
            raise ValueError(
                "RAPPORT_STORE must be set explicitly in production (the default is a demo file)"
            )
        return self
