"""MLflow tracking, registry and promotion through the CLI, on a real SQLite-backed MLflow store:
`rapport train` (twice), `rapport evaluate`, `rapport promote` (refused, --force, --rollback).

The heavy steps (simulated logs, an offline store, two trainings) run once for the module; the
tests read what they produced, and the promotion story, which moves the aliases, runs last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from api.cli import app
from api.settings import Settings
from engine.config import EngineConfig
from feature_store.factory import open_store
from feature_store.offline.export import OfflineStore
from training.dataset import examples_from_logs
from training.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
    PromotionRule,
)
from training.simulation.logged_data import SimulatedLogs, simulate_logs

CUSTOMERS, DECISIONS, DAYS, SEED = 100, 800, 60, 7
MODEL = "rapport-nba"


# ---- shared with tests/api/test_models_serving.py ----


@functools.cache
def simulated_logs() -> SimulatedLogs:
    """A small simulated period (the same in every module of a test process)."""
    return simulate_logs(CUSTOMERS, DECISIONS, SEED, days=DAYS)


@functools.cache
def simulated_examples() -> pd.DataFrame:
    logs = simulated_logs()
    return examples_from_logs(logs.events, logs.decisions, None, EngineConfig())


@functools.cache
def _empty_store_template(cache: Path) -> Path:
    """An MLflow SQLite database with MLflow's tables (their migrations take seconds)."""
    template = cache / "mlflow-template" / "mlflow.db"
    template.parent.mkdir(parents=True, exist_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    return template


def empty_mlflow_store(directory: Path, cache: Path) -> str:
    """The URI of a new, empty MLflow store in `directory` (copied from a template made once
    per test process under `cache`)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store_template(cache), directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def write_offline_store(root: Path, logs: SimulatedLogs) -> Path:
    """The simulated logs through an embedded online store, exported as `rapport export` does."""
    with closing(open_store(f"sqlite:///{root / 'online.db'}", EngineConfig())) as store:
        store.apply_events(logs.events)
        for decision in logs.decisions:
            store.log_decision(decision)
        OfflineStore(root / "offline").export(store)
    return root / "offline"


# ---- the module's store: two trainings, the first promoted ----


@dataclass(frozen=True)
class Lab:
    uri: str
    offline: Path
    runner: CliRunner
    first_training: str  # what `rapport train` printed
    second_training: str

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.uri, MODEL)

    def rapport(self, *args: str, exit_code: int = 0, env: dict[str, str] | None = None) -> str:
        result = self.runner.invoke(app, list(args), env=env)
        assert result.exit_code == exit_code, result.output
        return result.output


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("registry")
    uri = empty_mlflow_store(root / "mlflow", tmp_path_factory.getbasetemp())
    offline = write_offline_store(root, simulated_logs())
    runner = CliRunner(
        env={
            "RAPPORT_MLFLOW_URI": uri,
            "RAPPORT_MLFLOW_ARTIFACTS": str(root / "mlflow" / "artifacts"),
            "RAPPORT_STORE": f"sqlite:///{root / 'rapport.db'}",
            "COLUMNS": "200",
        }
    )

    def rapport(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    first = rapport("train", "--offline", str(offline), "--threads", "1")
    rapport("promote")  # no champion yet: the first challenger is promoted without comparison
    second = rapport("train", "--offline", str(offline), "--threads", "1", "--seed", "1")
    return Lab(uri, offline, runner, first, second)


def printed_table(output: str) -> dict[str, dict[str, float]]:
    """A rich table the CLI printed, as column -> metric -> value (empty cells left out)."""
    lines = output.splitlines()
    [header] = [line for line in lines if line.startswith("┃")]
    columns = [cell.strip() for cell in header.strip("┃").split("┃")][1:]
    table: dict[str, dict[str, float]] = {column: {} for column in columns}
    for line in lines:
        if not line.startswith("│"):
            continue
        metric, *cells = (cell.strip() for cell in line.strip("│").split("│"))
        for column, cell in zip(columns, cells, strict=True):
            if cell:
                table[column][metric] = float(cell)
    return table


def holdout_metrics(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {
        name.removeprefix(prefix): value
        for name, value in metrics.items()
        if name.startswith(f"{prefix}holdout.")
    }


def assert_printed(column: dict[str, float], metrics: dict[str, float]) -> None:
    """Every metric the CLI printed is the recorded one, to the 4 decimals it shows."""
    assert column
    for metric, shown in column.items():
        assert shown == pytest.approx(metrics[metric], abs=5e-5), metric


def run_of(lab: Lab, version: str) -> mlflow.entities.Run:
    run_id = lab.registry.version(version).run_id
    assert run_id is not None
    return MlflowClient(tracking_uri=lab.uri).get_run(run_id)


# ---- training ----


def test_train_logs_a_run_with_metrics_baselines_dataset_plots_and_the_model(lab: Lab) -> None:
    run = run_of(lab, "1")
    metrics, params = run.data.metrics, run.data.params
    client = MlflowClient(tracking_uri=lab.uri)

    for prefix in ("", "baseline.popularity.", "baseline.online_rates."):
        auc, log_loss = metrics[f"{prefix}holdout.auc"], metrics[f"{prefix}holdout.log_loss"]
        assert 0.5 < auc <= 1, prefix  # better than chance on the simulated logs
        assert 0 < log_loss < math.log(2), prefix  # better than a coin (acceptance ~30 %)
        assert 0 <= metrics[f"{prefix}holdout.brier"] < 0.25, prefix
        assert metrics[f"{prefix}holdout.snips_value"] > 0, prefix
        assert 0 <= metrics[f"{prefix}holdout.precision_at_1"] <= 1, prefix
    rows, holdout = int(params["dataset.rows"]), int(params["dataset.holdout_rows"])
    assert rows == int(params["dataset.train_rows"]) + holdout
    assert 0 < holdout < rows
    assert metrics["holdout.rows"] + metrics["holdout.default_rows"] == holdout
    assert "propensity.learning_rate" in params
    plots = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/calibration.png", "plots/gains.png", "plots/learning_curve.png"} <= plots
    dataset = json.loads(
        Path(client.download_artifacts(run.info.run_id, "dataset.json")).read_text()
    )
    assert dataset["source"] == str(lab.offline.resolve())
    assert dataset["rows"] == int(params["dataset.rows"])
    assert run.inputs is not None
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["training-examples"]
    info = mlflow.models.get_model_info(f"models:/{MODEL}/1")
    assert info.signature is not None
    assert {"customer_id", "item_id", "context.channel"} <= set(info.signature.inputs.input_names())
    printed = printed_table(lab.first_training)
    assert set(printed) == {"model", "popularity", "online_rates"}
    assert_printed(printed["model"], holdout_metrics(metrics))
    assert_printed(printed["popularity"], holdout_metrics(metrics, "baseline.popularity."))
    assert_printed(printed["online_rates"], holdout_metrics(metrics, "baseline.online_rates."))


def test_each_training_is_registered_as_the_challenger(lab: Lab) -> None:
    assert lab.registry.alias_versions() == {CHAMPION: "1", CHALLENGER: "2"}
    assert "version 2, alias challenger" in " ".join(lab.second_training.split())


def test_a_training_is_compared_with_the_champion_on_its_holdout(lab: Lab) -> None:
    run, champion_run = run_of(lab, "2"), run_of(lab, "1")
    # The same offline store, so the same holdout: the champion scores on it what its own
    # training run measured.
    champion = holdout_metrics(run.data.metrics, "baseline.champion.")

    assert run.data.tags["rapport.champion_version"] == "1"
    assert (
        run.data.params["dataset.holdout_start"]
        == champion_run.data.params["dataset.holdout_start"]
    )
    assert champion == pytest.approx(holdout_metrics(champion_run.data.metrics))
    assert champion["holdout.log_loss"] != run.data.metrics["holdout.log_loss"]  # a new model
    printed = printed_table(lab.second_training)
    assert_printed(printed["champion (v1)"], champion)
    assert_printed(printed["model"], holdout_metrics(run.data.metrics))


def test_the_served_bundle_is_the_trained_one_with_its_checksums(lab: Lab, tmp_path: Path) -> None:
    loaded = lab.registry.load_version("2")
    folder = lab.registry.download_bundle("2", tmp_path)
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    manifest = json.loads((folder / "manifest.json").read_text())
    recomputed = hashlib.sha256()
    for path in files:
        recomputed.update(path.relative_to(folder).as_posix().encode())
        recomputed.update(hashlib.sha256(path.read_bytes()).digest())

    assert loaded.bundle.model_version == f"{MODEL}/2"
    assert loaded.run_id == run_of(lab, "2").info.run_id
    assert loaded.checksum == recomputed.hexdigest()
    assert loaded.checksum != lab.registry.load_version("1").checksum
    # The manifest lists the sha256 of every other file of the bundle.
    assert manifest["files"] == {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in files
        if path.name != "manifest.json"
    }
    assert manifest["metrics"] == pytest.approx(holdout_metrics(run_of(lab, "2").data.metrics))


def test_evaluate_compares_champion_and_challenger_on_one_holdout(lab: Lab) -> None:
    output = lab.rapport("evaluate", "--offline", str(lab.offline))
    printed = printed_table(output)
    # The offline store the models were trained on: its holdout is the training runs' own.
    first, second = run_of(lab, "1").data.metrics, run_of(lab, "2").data.metrics

    assert set(printed) == {"champion (v1)", "challenger (v2)", "popularity", "online_rates"}
    assert_printed(printed["champion (v1)"], holdout_metrics(first))
    assert_printed(printed["challenger (v2)"], holdout_metrics(second))
    assert_printed(printed["popularity"], holdout_metrics(second, "baseline.popularity."))
    assert_printed(printed["online_rates"], holdout_metrics(second, "baseline.online_rates."))
    assert "holdout.log_loss" in printed["challenger (v2)"]


# ---- promotion: moves the aliases, so it runs last ----


def test_promote_refuses_a_challenger_that_does_not_win_force_overrides_rollback_restores(
    lab: Lab,
) -> None:
    unbeatable = {"RAPPORT_PROMOTE_MIN_IMPROVEMENT": "1000"}

    refused = lab.rapport("promote", exit_code=1, env=unbeatable)

    assert "Refused" in refused
    assert lab.registry.alias_versions() == {CHAMPION: "1", CHALLENGER: "2"}
    tags = run_of(lab, "2").data.tags
    assert tags["promotion.decision"] == "refused"
    assert "does not beat the champion" in tags["promotion.reason"]
    assert "holdout of the challenger's run" in tags["promotion.reason"]

    lab.rapport("promote", "--offline", str(lab.offline), exit_code=1, env=unbeatable)
    reason = run_of(lab, "2").data.tags["promotion.reason"]
    assert f"holdout of {lab.offline}" in reason
    assert lab.registry.alias_versions()[CHAMPION] == "1"

    forced = lab.rapport("promote", "--force", env=unbeatable)

    assert "Promoted" in forced
    assert lab.registry.alias_versions() == {CHAMPION: "2"}
    run = run_of(lab, "2")
    assert run.data.tags["promotion.decision"] == "promoted"
    assert run.data.tags["promotion.forced"] == "true"
    assert run.data.tags["promotion.reason"].startswith("forced: does not beat")
    assert "promotion.champion.holdout.log_loss" in run.data.metrics
    assert lab.registry.version("2").tags["previous_champion"] == "1"

    lab.rapport("promote", "--rollback")

    assert lab.registry.alias_versions() == {CHAMPION: "1"}
    assert lab.registry.version("2").tags["rolled_back_to"] == "1"
    history = json.loads(
        MlflowClient(tracking_uri=lab.uri).get_registered_model(MODEL).tags["champion_history"]
    )
    assert [(h["event"], h["from"], h["to"]) for h in history] == [
        ("promote", None, "1"),
        ("promote", "1", "2"),
        ("rollback", "2", "1"),
    ]
    assert "replaced no earlier champion" in lab.rapport("promote", "--rollback", exit_code=1)


# ---- the rule, and its settings ----


@pytest.mark.parametrize(
    ("higher_is_better", "challenger", "champion", "margin", "promoted"),
    [
        (False, 0.40, 0.45, 0.0, True),  # log loss: lower wins
        (False, 0.45, 0.40, 0.0, False),
        (False, 0.40, 0.40, 0.0, False),  # a tie keeps the champion
        (False, 0.44, 0.45, 0.02, False),  # not by the margin
        (True, 0.71, 0.70, 0.0, True),  # AUC: higher wins
        (True, 0.69, 0.70, 0.0, False),
        (True, 0.50, None, 0.0, True),  # no champion to beat
    ],
)
def test_promotion_rule(
    higher_is_better: bool,
    challenger: float,
    champion: float | None,
    margin: float,
    promoted: bool,
) -> None:
    rule = PromotionRule("holdout.metric", higher_is_better, margin)

    assert rule.judge(challenger, champion)[0] is promoted


def test_the_promotion_metric_has_a_known_direction() -> None:
    assert Settings().promote_higher_wins is False  # holdout.log_loss
    assert Settings(promote_metric="holdout.auc").promote_higher_wins is True
    assert Settings(promote_metric="x.lift", promote_higher_is_better=True).promote_higher_wins
    with pytest.raises(ValueError, match="PROMOTE_HIGHER_IS_BETTER"):
        Settings(promote_metric="x.lift")
    with pytest.raises(ValueError, match="lower-is-better"):
        Settings(promote_metric="holdout.log_loss", promote_higher_is_better=True)
