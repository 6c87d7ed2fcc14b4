"""The one settings class. Every knob is read from the environment (prefix RAPPORT_) here."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from api.bounds import InputBounds
from engine.arbitration import Exploration, Objective
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.config import EngineConfig
from engine.next_best_action import DecisionPolicy
from engine.policy import ContactPolicy

DEVELOPMENT_IDENTITY_SECRET = "rapport-development-identity-secret"

#: Whether a higher value of a holdout metric (named by its last part) is better.
METRIC_DIRECTIONS = {"log_loss": False, "brier": False, "auc": True, "snips_value": True}


class Settings(BaseSettings):
    """Settings of the API and the CLI, e.g. `RAPPORT_STORE=sqlite:///var/rapport.db`.

    Nested engine parameters use `__`: `RAPPORT_ENGINE__HABIT_MIN_COUNT=4`.
    """

    model_config = SettingsConfigDict(
        env_prefix="RAPPORT_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_by_name=True,  # `Settings(auth_enabled=False)` beside the variable RAPPORT_AUTH
    )

    environment: Literal["development", "test", "production"] = "development"
    store: str = Field(
        "sqlite:///var/rapport.db",
        description="sqlite:///path (embedded default), redis://host:port/db or redis+cluster://host:port",
    )
    offline_root: str = Field(
        "var/offline",
        description="Folder of the offline Parquet store that `rapport export` writes "
        "(RAPPORT_OFFLINE_ROOT): the customer export reads back from it what the online store "
        "no longer holds (logs trimmed once exported).",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)
    catalogue: str | None = Field(
        None,
        description="Path of the action catalogue (YAML); the shipped retail-bank example "
        "if unset. Loaded and checked at start-up: a bad catalogue stops the start.",
    )
    experiments: str | None = Field(
        None,
        description="Path of experiment definitions (YAML) applied to the experiment registry "
        "at start-up (RAPPORT_EXPERIMENTS): missing ones are created, changed ones replaced. "
        "A bad file stops the start.",
    )
    contact_policy: ContactPolicy = Field(default_factory=ContactPolicy)
    exploration: Exploration = Field(default_factory=Exploration)
    objective: Objective = Field(
        "expected_value",
        description="What next-best-action maximises: expected_value (propensity x value x "
        "weight) or acceptance (propensity x weight).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    store_retry_after_seconds: int = Field(2, ge=1, description="Retry-After hint on 503.")
    max_in_flight: int = Field(
        8,
        ge=1,
        description="Requests one worker runs at once (RAPPORT_MAX_IN_FLIGHT); more wait for a "
        "slot, within queue_wait_seconds. Health probes are not counted. A worker is one core: "
        "more in flight only queues inside it (and, for thread-pool routes, makes threads fight "
        "for the GIL); at 3x capacity, 8 answered nothing late where 64 did (bench.decisions).",
    )
    queue_wait_seconds: float = Field(
        0.1,
        ge=0,
        description="How long a request may wait for a slot, in seconds; then it is answered "
        "503 with Retry-After at once (0: refused as soon as every slot is taken).",
    )
    request_deadline_seconds: float = Field(
        1.0,
        gt=0,
        description="Seconds from its arrival by which a decision or an outcome is answered: "
        "one still running then is answered 503 with Retry-After, never late.",
    )
    bulk_deadline_seconds: float = Field(
        30.0,
        gt=0,
        description="The same deadline for every other route (event batches, exports, erasure, "
        "admin), whose work grows with its input.",
    )
    overload_retry_after_seconds: int = Field(
        1, ge=0, description="Retry-After hint on a 503 for overload or a missed deadline."
    )
    identity_secret: SecretStr = Field(
        SecretStr(DEVELOPMENT_IDENTITY_SECRET),
        min_length=16,
        description="Key of the HMAC under which identifiers (emails, cards...) are stored. "
        "Must be set, and kept, in production: changing it orphans every identity link.",
    )
    auth_enabled: bool = Field(
        True,
        validation_alias="RAPPORT_AUTH",
        description="Require an API key on every route but health and docs (RAPPORT_AUTH). "
        "Cannot be turned off in production.",
    )
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="How long a worker trusts a key it has looked up, in seconds, before it "
        "looks it up again. Revocations reach every worker sooner: see "
        "auth_revocation_poll_seconds. 0 looks every request up.",
    )
    auth_revocation_poll_seconds: float = Field(
        0.5,
        ge=0,
        le=60,
        description="How often each worker lists the revoked keys and forgets them, in seconds: "
        "a revoked key is refused everywhere within about this long (plus one store read). "
        "0 turns the watch off (then the auth cache alone bounds it).",
    )
    auth_stale_if_error_seconds: float = Field(
        300.0,
        ge=0,
        description="While the store cannot be reached, a key looked up successfully within "
        "this many seconds is still accepted (so decisions can answer degraded); other keys "
        "get 503. 0 turns this off.",
    )
    event_max_ahead_seconds: float = Field(
        86_400.0, gt=0, description="An event dated further in the future is rejected, in seconds."
    )
    event_max_age_days: float = Field(
        3650.0, gt=0, description="An event dated further in the past is rejected, in days."
    )
    body_limit_events_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest body of POST /v1/events, in bytes."
    )
    body_limit_decisions_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Largest body of POST /v1/decisions and POST /v1/outcomes, in bytes.",
    )
    body_limit_default_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest body of every other route, in bytes."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API, e.g. "
        "'https://app.example.com,https://teller.example.com' (or a JSON list). Empty: no CORS "
        "headers at all, so browsers on other origins cannot read answers.",
    )
    mlflow_uri: str = Field(
        "sqlite:///var/mlflow/mlflow.db",
        description="MLflow tracking and registry URI (RAPPORT_MLFLOW_URI): a local SQLite-backed "
        "store by default, an MLflow tracking server (https://...) in production.",
    )
    mlflow_artifacts: str = Field(
        "var/mlflow/artifacts",
        description="Artifact root of the MLflow experiment when training creates it (a local "
        "folder or a URI such as s3://bucket/rapport); a tracking server may impose its own.",
    )
    mlflow_experiment: str = Field("rapport", min_length=1, description="MLflow experiment.")
    dask_scheduler: str | None = Field(
        None,
        description="Dask scheduler that `rapport train` replays the offline store on "
        "(RAPPORT_DASK_SCHEDULER, e.g. tcp://scheduler:8786), or `local` for a local cluster of "
        "one worker process per core; unset: the replay runs in the training process.",
    )
    model_name: str = Field(
        "rapport-nba", min_length=1, description="Registered model that training versions."
    )
    model_signing_key: SecretStr | None = Field(
        None,
        description="HMAC key (RAPPORT_MODEL_SIGNING_KEY) that training signs a registered "
        "bundle's digest with and the API verifies before serving it. Required in production; "
        "without it digests are plain SHA-256, which catches a changed file but not a forgery.",
    )
    model_poll_seconds: float = Field(
        30.0,
        ge=0,
        description="How often the API asks the registry whether an alias moved, in seconds; 0 "
        "turns polling off (POST /v1/admin/models/reload still reloads).",
    )
    model_start_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="How long start-up waits for the champion, in seconds. Past it the API "
        "starts on the online rates and swaps the model in when it has loaded.",
    )
    promote_metric: str = Field(
        "holdout.log_loss",
        min_length=1,
        description="Holdout metric a challenger must beat the champion on to be promoted.",
    )
    promote_higher_is_better: bool | None = Field(
        None,
        description="Direction of promote_metric; unset: known from its name (log_loss, brier "
        "lower; auc, snips_value higher). Must be set for any other metric.",
    )
    promote_min_improvement: float = Field(
        0.0, ge=0, description="By how much (in the metric's units) the challenger must win."
    )

    @field_validator("auth_enabled")
    @classmethod
    def _keys_required_in_production(cls, enabled: bool, info: ValidationInfo) -> bool:
        if not enabled and info.data.get("environment") == "production":
            raise ValueError("RAPPORT_AUTH cannot be turned off in production")
        return enabled

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        """Origins as browsers send them: scheme://host[:port], nothing else, no wildcard."""
        checked = []
        for origin in origins:
            parts = urlsplit(origin.lower())
            _ = parts.port  # raises ValueError for a port that is not a number in range
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or "*" in origin
                or parts.username is not None
                or parts.path
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port] exactly, "
                    "e.g. https://app.example.com (no path, no trailing slash, no wildcard)"
                )
            checked.append(f"{parts.scheme}://{parts.netloc}")
        return checked

    @model_validator(mode="after")
    def _no_embedded_store_claims_in_production(self) -> Settings:
        if self.environment == "production" and self.store.startswith("sqlite:///var/"):
            raise ValueError(
                "RAPPORT_STORE must be set explicitly in production (the default is a demo file)"
            )
        if (
            self.environment == "production"
            and self.identity_secret.get_secret_value() == DEVELOPMENT_IDENTITY_SECRET
        ):
            raise ValueError("RAPPORT_IDENTITY_SECRET must be set in production")
        if self.environment == "production" and not self.model_signing_key_bytes():
            raise ValueError("RAPPORT_MODEL_SIGNING_KEY must be set in production")
        return self

    @model_validator(mode="after")
    def _promotion_direction_known(self) -> Settings:
        known = METRIC_DIRECTIONS.get(self.promote_metric.rsplit(".", 1)[-1])
        if self.promote_higher_is_better is None and known is None:
            raise ValueError(
                f"set RAPPORT_PROMOTE_HIGHER_IS_BETTER: the direction of {self.promote_metric!r} "
                "is not known"
            )
        if known is not None and self.promote_higher_is_better not in (None, known):
            raise ValueError(
                f"{self.promote_metric!r} is {'higher' if known else 'lower'}-is-better; "
                "RAPPORT_PROMOTE_HIGHER_IS_BETTER says the opposite"
            )
        return self

    @property
    def promote_higher_wins(self) -> bool:
        """True if a higher `promote_metric` is better."""
        if self.promote_higher_is_better is not None:
            return self.promote_higher_is_better
        return METRIC_DIRECTIONS[self.promote_metric.rsplit(".", 1)[-1]]

    def decision_policy(self) -> DecisionPolicy:
        """The catalogue (read from disk: call at start-up), contact policy and exploration."""
        catalogue = load_catalogue(self.catalogue or RETAIL_BANK_CATALOGUE)
        return DecisionPolicy(
            catalogue=catalogue,
            contact=self.contact_policy,
            exploration=self.exploration,
            objective=self.objective,
        )

    def model_signing_key_bytes(self) -> bytes | None:
        """The model signing key as bytes; None when unset or empty."""
        if self.model_signing_key is None:
            return None
        return self.model_signing_key.get_secret_value().encode() or None

    def input_bounds(self) -> InputBounds:
        """What one event or one decision's context may carry (`api.bounds`)."""
        return InputBounds(
            max_event_ahead=timedelta(seconds=self.event_max_ahead_seconds),
            max_event_age=timedelta(days=self.event_max_age_days),
        )
