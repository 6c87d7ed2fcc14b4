"""The models the API serves: registry versions behind aliases (`champion`, `challenger`...).

Each alias has an immutable `AliasState`; a (re)load builds a new one and swaps it in with one
assignment, so a request sees the old model or the new one, never half of either. A version
that fails to load or validate (a checksum mismatch, a scorer that raises) is refused: the
previous model keeps serving, and the refusal is kept in the state (GET /v1/models) and logged.

The registry is asked in a worker thread (MLflow calls block, and importing MLflow takes
seconds), at start-up, every `model_poll_seconds`, and on POST /v1/admin/models/reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engine.config import EngineConfig
from engine.decision import DecisionRequest
from engine.events import Channel
from engine.facts import facts_for
from engine.scoring import Scorer

if TYPE_CHECKING:
    from api.settings import Settings
    from training.registry import ModelRegistry

logger = logging.getLogger("rapport.models")

CHAMPION = "champion"


class RegistryUnreachable(Exception):
    """The registry could not be asked which versions the aliases point to."""


@dataclass(frozen=True)
class LoadedModel:
    """A registry version loaded, verified and ready to score. Never changes once built."""

    name: str
    alias: str
    version: str
    run_id: str | None
    source: str
    checksum: str
    loaded_at: datetime
    scorer: Scorer = field(repr=False)


class ModelSource(Protocol):
    """Where served models come from (the MLflow registry in `RegistrySource`)."""

    name: str

    def alias_versions(self) -> dict[str, str]:
        """Every alias of the registered model and its version; {} if nothing is registered.
        Raises RegistryUnreachable."""
        ...

    def load(self, alias: str, version: str) -> LoadedModel:
        """Download and load one version, verifying its checksums; raises on any failure."""
        ...


@dataclass(frozen=True)
class AliasState:
    """What is served for one alias, and what went wrong last (`error` None: nothing)."""

    alias: str
    model: LoadedModel | None = None
    registry_version: str | None = None  # where the alias pointed at the last check
    checked_at: datetime | None = None
    error: str | None = None
    error_at: datetime | None = None
    refused_version: str | None = None  # polls do not retry it; a forced reload does


class ModelServer:
    """Serves the versions behind aliases. `scorer()` is safe from any thread and never blocks.

    `validate(scorer)` runs on every freshly loaded model before it is swapped in; it raises to
    refuse the model.
    """

    def __init__(
        self,
        source: ModelSource,
        *,
        validate: Callable[[Scorer], None] = lambda scorer: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.source = source
        self.validate = validate
        self.clock = clock
        self._states: Mapping[str, AliasState] = {CHAMPION: AliasState(CHAMPION)}
        self._state_lock = threading.Lock()  # held only to copy-and-swap `_states`
        self._refresh_lock = threading.Lock()  # one refresh at a time; may be held for seconds

    @property
    def name(self) -> str:
        return self.source.name

    def scorer(self, alias: str = CHAMPION) -> Scorer | None:
        """The scorer served for `alias`, or None (the online rates) while none is loaded.

        An alias asked for the first time starts loading in the background and is polled from
        then on; until it has loaded, this returns None.
        """
        state = self._states.get(alias)
        if state is None:
            self._track(alias)
            return None
        return state.model.scorer if state.model is not None else None

    def states(self) -> list[AliasState]:
        """Every tracked alias, champion first."""
        states = self._states
        return sorted(states.values(), key=lambda state: (state.alias != CHAMPION, state.alias))

    def refresh(self, *, force: bool = False) -> list[AliasState]:
        """Ask the registry where each tracked alias points and load what moved. Blocking.

        `force` also retries versions refused before (a reload asked by an operator).
        """
        with self._refresh_lock:
            now = self.clock()
            try:
                pointed = self.source.alias_versions()
            except RegistryUnreachable as exc:
                logger.warning(
                    "model registry unreachable; the served models stay",
                    extra={"fields": {"model": self.name, "error": _redacted(str(exc))}},
                )
                error = f"registry unreachable: {_redacted(str(exc))}"
                for alias in list(self._states):
                    self._update(alias, lambda s: replace(s, error=error, error_at=now))
                return self.states()
            for alias in list(self._states):
                self._refresh_alias(alias, pointed.get(alias), force=force, now=now)
        return self.states()

    async def refresh_async(self, *, force: bool = False) -> list[AliasState]:
        """`refresh` in a daemon thread, so that an unreachable registry never blocks the event
        loop nor the process's exit."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[AliasState]] = loop.create_future()

        def run() -> None:
            try:
                result = self.refresh(force=force)
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, result, None)

        threading.Thread(target=run, name="rapport-model-refresh", daemon=True).start()
        return await done

    async def poll(self, interval_seconds: float) -> None:
        """Refresh every `interval_seconds` until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.refresh_async()
            except Exception:
                logger.exception("model refresh failed", extra={"fields": {"model": self.name}})

    def _refresh_alias(
        self, alias: str, version: str | None, *, force: bool, now: datetime
    ) -> None:
        state = self._states[alias]
        served = state.model.version if state.model is not None else None
        if version is None:
            if served is not None:
                _log(logging.WARNING, "alias removed; back to the online rates", self.name, alias)
            self._update(alias, lambda s: AliasState(alias, checked_at=now))
        elif version == served:
            self._update(
                alias,
                lambda s: replace(
                    s, registry_version=version, checked_at=now, error=None, error_at=None
                ),
            )
        elif version == state.refused_version and not force:
            self._update(alias, lambda s: replace(s, registry_version=version, checked_at=now))
        else:
            self._swap_in(alias, version, served=served, now=now)

    def _swap_in(self, alias: str, version: str, *, served: str | None, now: datetime) -> None:
        """Load and validate `version`; serve it, or refuse it and keep serving `served`."""
        try:
            loaded = self.source.load(alias, version)
            self.validate(loaded.scorer)
        except Exception as exc:  # whatever breaks a model, the one serving stays
            reason = _redacted(f"{type(exc).__name__}: {exc}")
            _log(
                logging.ERROR,
                "model version refused; the previous one keeps serving",
                self.name,
                alias,
                version=version,
                served_version=served,
                error=reason,
            )
            refused = replace(
                self._states[alias],
                registry_version=version,
                checked_at=now,
                error=f"version {version} refused: {reason}",
                error_at=now,
                refused_version=version,
            )
            self._update(alias, lambda s: refused)
            return
        self._update(
            alias, lambda s: AliasState(alias, loaded, registry_version=version, checked_at=now)
        )
        _log(
            logging.INFO,
            "model version served",
            self.name,
            alias,
            version=version,
            previous_version=served,
            checksum=loaded.checksum,
        )

    def _update(self, alias: str, change: Callable[[AliasState], AliasState]) -> None:
        """Swap in `change(state)` for `alias`: a new mapping, assigned once."""
        with self._state_lock:
            states = dict(self._states)
            states[alias] = change(states.get(alias) or AliasState(alias))
            self._states = states

    def _track(self, alias: str) -> None:
        with self._state_lock:
            if alias in self._states:
                return
            self._states = {**self._states, alias: AliasState(alias)}
        # The first ask loads it; polls keep it current afterwards.
        threading.Thread(
            target=self._refresh_quietly, name="rapport-model-load", daemon=True
        ).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:
            logger.exception("model refresh failed", extra={"fields": {"model": self.name}})


_URL_CREDENTIALS = re.compile(r"//[^/@\s]+@")


def _redacted(text: str) -> str:
    """`text` without credentials written into URLs (https://user:token@host/...): errors are
    shown by GET /v1/models and logged."""
    return _URL_CREDENTIALS.sub("//***@", text)


def _log(level: int, message: str, model: str, alias: str, **fields: str | None) -> None:
    """One structured line (api.logs): names, versions and errors, never customer data."""
    logger.log(level, message, extra={"fields": {"model": model, "alias": alias, **fields}})


def _settle(
    future: asyncio.Future[list[AliasState]],
    result: list[AliasState] | None,
    error: BaseException | None,
) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result or [])


# ---- the MLflow registry as a ModelSource ----


def local_sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI; None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


class RegistrySource:
    """The MLflow model registry, opened on first use (importing MLflow takes seconds), and
    not at all while a local SQLite store has no database file yet (nothing was trained)."""

    def __init__(self, uri: str, name: str, *, signing_key: bytes | None = None) -> None:
        self.uri = uri
        self.name = name
        self._signing_key = signing_key
        self._registry: ModelRegistry | None = None

    def alias_versions(self) -> dict[str, str]:
        try:
            registry = self._open()
            return {} if registry is None else registry.alias_versions()
        except Exception as exc:  # a bad URI, MLflow missing, the server down: all unreachable
            raise RegistryUnreachable(f"{type(exc).__name__}: {exc}") from exc

    def load(self, alias: str, version: str) -> LoadedModel:
        registry = self._open()
        if registry is None:
            raise RegistryUnreachable("no registry database")
        loaded = registry.load_version(version)
        return LoadedModel(
            name=self.name,
            alias=alias,
            version=version,
            run_id=loaded.run_id,
            source=loaded.source,
            checksum=loaded.checksum,
            loaded_at=datetime.now(UTC),
            scorer=loaded.bundle,
        )

    def _open(self) -> ModelRegistry | None:
        if self._registry is None:
            database = local_sqlite_file(self.uri)
            if database is not None and not database.exists():
                return None
            from training.registry import ModelRegistry

            self._registry = ModelRegistry(self.uri, self.name, signing_key=self._signing_key)
        return self._registry


def smoke_test(action_ids: Sequence[str]) -> Callable[[Scorer], None]:
    """A validation that scores every catalogue action for a customer the model has never
    seen: each posterior must be a Beta with finite positive parameters."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    request = DecisionRequest(customer_id="model-smoke-test", touchpoint="web", channel=Channel.WEB)
    facts = facts_for(None, request, at=at, config=EngineConfig())

    def validate(scorer: Scorer) -> None:
        posteriors = scorer.action_posteriors(
            list(action_ids), facts=facts, segment="mass", request=request
        )
        if len(posteriors) != len(action_ids):
            raise ValueError(f"{len(posteriors)} posteriors for {len(action_ids)} actions")
        for action_id, (alpha, beta) in zip(action_ids, posteriors, strict=True):
            if not (math.isfinite(alpha) and math.isfinite(beta) and alpha > 0 and beta > 0):
                raise ValueError(f"Beta({alpha}, {beta}) for {action_id} is not a distribution")
        model_version = scorer.model_version
        if not model_version:
            raise ValueError("the scorer has no model_version to log with decisions")

    return validate


def open_model_server(settings: Settings, action_ids: Sequence[str]) -> ModelServer:
    return ModelServer(
        RegistrySource(
            settings.mlflow_uri, settings.model_name, signing_key=settings.model_signing_key_bytes()
        ),
        validate=smoke_test(action_ids),
    )


async def start_serving(server: ModelServer, settings: Settings) -> asyncio.Task[None] | None:
    """Load the champion (waiting at most `model_start_timeout_seconds`: past it the load goes
    on in the background) and start polling. Returns the polling task, if any."""
    try:
        await asyncio.wait_for(server.refresh_async(), settings.model_start_timeout_seconds)
    except TimeoutError:
        logger.warning(
            "the champion is still loading; serving the online rates meanwhile",
            extra={"fields": {"model": server.name}},
        )
    except Exception:  # the API starts without a model rather than not at all
        logger.exception("model loading failed", extra={"fields": {"model": server.name}})
    if settings.model_poll_seconds <= 0:
        return None
    return asyncio.create_task(server.poll(settings.model_poll_seconds), name="rapport-model-poll")


async def stop_serving(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
