"""Serving the registry's champion over HTTP: loaded at start-up, swapped while decisions flow
(polling, or POST /v1/admin/models/reload), a tampered version refused, rolled back, and no
model at all. A real MLflow SQLite store, the real app under uvicorn.

The tests share one registry and one polling server, and move its aliases: they run in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.model_server import ModelServer, RegistrySource
from api.settings import Settings
from feature_store.credentials import Scope
from tests.api.conftest import LiveServer, bearer, create_key, free_port
from tests.training.test_registry import empty_mlflow_store, simulated_examples
from tests.waiting import GENEROUS_SECONDS, wait_until
from training.registry import CHALLENGER, CHAMPION, Comparison, ModelRegistry, PromotionRule
from training.tracking import LoggedRun, TrackingTarget, log_training
from training.train import TrainConfig, TrainResult, train

MODEL = "rapport-nba"
POLL_SECONDS = 0.5
DECISION = {"customer_id": "cust-1", "touchpoint": "atm-0042", "channel": "atm"}
#: A comparison the challenger wins: promoted by the rule, without --force.
WON = Comparison(challenger=0.40, champion=0.45, holdout="the test's holdout")
RULE = PromotionRule("holdout.log_loss", higher_is_better=False)


@dataclass
class Lab:
    """The module's MLflow store: version 1 champion and version 2 challenger at first."""

    root: Path
    uri: str
    target: TrackingTarget
    second: TrainResult

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.uri, MODEL)

    def log_and_register(self, result: TrainResult) -> tuple[LoggedRun, str]:
        run = log_training(result, self.target, source="simulated logs")
        return run, self.registry.register(run.model_uri, run_id=run.run_id).version


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("served")
    uri = empty_mlflow_store(root / "mlflow", tmp_path_factory.getbasetemp())
    target = TrackingTarget(uri, "rapport", str(root / "mlflow" / "artifacts"))
    examples = simulated_examples()
    first = train(examples, config=TrainConfig(seed=0, threads=1, learning_curve_points=0))
    second = train(examples, config=TrainConfig(seed=1, threads=1, learning_curve_points=0))
    lab = Lab(root, uri, target, second)
    lab.log_and_register(first)
    lab.registry.promote(RULE, None)  # no champion yet: version 1 becomes it
    lab.log_and_register(second)
    return lab


@dataclass
class Api:
    url: str
    http: httpx.Client

    def served(self, alias: str = CHAMPION) -> dict[str, Any]:
        answer = self.http.get("/v1/models")
        assert answer.status_code == 200, answer.text
        return _alias(answer.json(), alias)

    def reload(self, alias: str = CHAMPION) -> dict[str, Any]:
        answer = self.http.post("/v1/admin/models/reload")
        assert answer.status_code == 200, answer.text
        return _alias(answer.json(), alias)

    def decide(self) -> dict[str, Any]:
        answer = self.http.post("/v1/decisions", json=DECISION)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def logged_model_version(self, decision_id: str) -> str | None:
        logged = self.http.get(f"/v1/decisions/{decision_id}").json()
        version: str | None = logged["model_version"]
        return version


def _alias(body: dict[str, Any], alias: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in body["aliases"] if a["alias"] == alias)
    return found


def app_settings(directory: Path, mlflow_uri: str, **changes: Any) -> Settings:
    return Settings(
        store=f"sqlite:///{directory / 'rapport.db'}",
        environment="test",
        mlflow_uri=mlflow_uri,
        model_poll_seconds=POLL_SECONDS,
        **changes,
    )


@contextmanager
def running_api(settings: Settings) -> Iterator[Api]:
    key = create_key(settings, "tests-all-scopes", Scope)
    with (
        LiveServer(settings) as server,
        httpx.Client(base_url=server.url, timeout=10, headers=bearer(key)) as http,
    ):
        yield Api(server.url, http)


@pytest.fixture(scope="module")
def api(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(app_settings(tmp_path_factory.mktemp("api"), lab.uri)) as running:
        yield running


def wait_for(condition: Callable[[], bool], timeout: float = GENEROUS_SECONDS) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    return wait_until(condition, timeout=timeout, interval=0.02)


@dataclass
class DecisionLoad:
    """Threads asking decisions in a loop, each answer's status and model version kept."""

    url: str
    headers: dict[str, str]
    threads: int = 3
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _ask(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers=self.headers) as http:
            while not self._stop.is_set():
                try:
                    answer = http.post("/v1/decisions", json=DECISION)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code}: {answer.text}")
                    continue
                self.answers.append((answer.status_code, answer.json()["model_version"]))

    @contextmanager
    def running(self) -> Iterator[DecisionLoad]:
        workers = [threading.Thread(target=self._ask) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=10)


@pytest.fixture
def model_log() -> Iterator[list[logging.LogRecord]]:
    """What the model server logs during the test."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("rapport.models")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# ---- the champion, served and swapped ----


def test_the_champion_is_served_from_start_up_and_logged_with_each_decision(
    lab: Lab, api: Api
) -> None:
    served = api.served()

    assert served["version"] == "1"
    assert served["model_version"] == f"{MODEL}/1"
    assert served["run_id"] == lab.registry.version("1").run_id
    assert served["source"].startswith("models:/m-")
    assert len(served["checksum"]) == 64
    assert served["loaded_at"] is not None
    assert served["last_error"] is None
    decision = api.decide()
    assert decision["model_version"] == f"{MODEL}/1"
    assert api.logged_model_version(decision["decision_id"]) == f"{MODEL}/1"


def test_a_promotion_is_served_within_the_polling_interval_while_no_request_fails(
    lab: Lab, api: Api, record_property: Callable[[str, object], None]
) -> None:
    load = DecisionLoad(api.url, dict(api.http.headers))
    with load.running():
        wait_for(lambda: len(load.answers) >= 20)
        promoted_at = datetime.now(UTC)
        lab.registry.promote(RULE, WON)
        # The next poll finds it (then downloads and checks it): waited for with a generous
        # bound, not timed against the interval, since a loaded host stretches the download.
        swap_seconds = wait_for(
            lambda: api.served()["version"] == "2", timeout=POLL_SECONDS + GENEROUS_SECONDS
        )
        answered = len(load.answers)
        wait_for(lambda: len(load.answers) >= answered + 20)

    record_property("swap_seconds", round(swap_seconds, 3))
    served = api.served()
    assert load.failures == []
    # Loaded by the server's own polling after the promotion: nobody asked for a reload.
    assert datetime.fromisoformat(served["loaded_at"]) >= promoted_at
    assert served["last_error"] is None
    versions = [version for _, version in load.answers]
    assert set(versions) == {f"{MODEL}/1", f"{MODEL}/2"}
    assert versions[-1] == f"{MODEL}/2"


def test_a_rollback_is_served_at_once_on_reload(lab: Lab, api: Api) -> None:
    lab.registry.rollback()

    assert api.reload()["version"] == "1"
    assert api.decide()["model_version"] == f"{MODEL}/1"


def test_a_tampered_version_is_refused_and_the_champion_keeps_serving(
    lab: Lab, api: Api, model_log: list[logging.LogRecord]
) -> None:
    serving = api.served()
    run, version = lab.log_and_register(lab.second)
    model_id = run.model_uri.removeprefix("models:/")
    [weights] = (lab.root / "mlflow" / "artifacts" / "models" / model_id).rglob("propensity.npz")
    weights.write_bytes(weights.read_bytes() + b"tampered")
    lab.registry.promote(RULE, WON)

    refused = api.reload()

    assert refused["version"] == serving["version"] == "1"
    assert refused["checksum"] == serving["checksum"]
    assert refused["registry_version"] == version
    assert f"version {version} refused" in refused["last_error"]
    assert "checksum mismatch" in refused["last_error"]
    assert api.decide()["model_version"] == f"{MODEL}/1"
    # Refused by the reload, and by the poll if it came first.
    refusals = [r for r in model_log if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 2
    for refusal in refusals:
        assert refusal.levelno == logging.ERROR
        assert refusal.fields["version"] == version  # type: ignore[attr-defined]
        assert "checksum mismatch" in refusal.fields["error"]  # type: ignore[attr-defined]
        assert "cust-1" not in str(refusal.fields)  # type: ignore[attr-defined]

    lab.registry.rollback()

    restored = api.reload()
    assert restored["version"] == "1"
    assert restored["last_error"] is None


def test_the_challenger_loads_on_first_ask_for_experiments(lab: Lab) -> None:
    lab.registry.client.set_registered_model_alias(MODEL, CHALLENGER, "2")
    server = ModelServer(RegistrySource(lab.uri, MODEL))

    assert server.scorer(CHALLENGER) is None  # loading in the background

    wait_for(lambda: server.scorer(CHALLENGER) is not None)
    challenger = server.scorer(CHALLENGER)
    assert challenger is not None
    assert challenger.model_version == f"{MODEL}/2"
    assert [state.alias for state in server.states()] == [CHAMPION, CHALLENGER]


# ---- no model ----


def test_without_a_registered_model_the_api_starts_and_decides_with_the_online_rates(
    tmp_path: Path,
) -> None:
    database = tmp_path / "mlflow" / "mlflow.db"
    with running_api(app_settings(tmp_path, f"sqlite:///{database}")) as api:
        decision = api.decide()
        served = api.served()

    assert decision["model_version"] is None
    assert served["version"] is None
    assert served["last_error"] is None
    assert not database.exists()  # the API never creates a registry


def test_an_unreachable_registry_does_not_stop_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    unreachable = f"http://127.0.0.1:{free_port()}"
    with running_api(app_settings(tmp_path, unreachable, model_start_timeout_seconds=5)) as api:
        decision = api.decide()
        served = api.served()

    assert decision["model_version"] is None
    assert served["version"] is None
    assert "unreachable" in served["last_error"]
