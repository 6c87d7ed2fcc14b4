"""MLflow tracking of a training: one run with the configuration, the metrics of the model and
of its baselines on the same holdout, the dataset, the plots and the model bundle.

The bundle is logged as an MLflow pyfunc model (`BundleModel`) for the MLflow UI, its
signature and batch scoring; the API does not load it through pyfunc: it downloads the
bundle's files and verifies them with `ModelBundle.load` (training.registry).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema, TensorSpec

from engine.facts import FIELDS, FactType
from feature_store.offline.replay import feature_columns
from training.bundle import ModelBundle
from training.train import TrainResult

#: The artifact key of the bundle's folder in the pyfunc model (training.registry.BUNDLE_PATH).
BUNDLE_ARTIFACT = "bundle"
MODEL_NAME_IN_RUN = "model"
#: The pyfunc model, logged as code (MLflow's "models from code"): nothing is pickled.
MODEL_CODE = '''"""Rapport's model bundle as an MLflow pyfunc (logged by training.tracking)."""

import mlflow

from training.tracking import BundleModel

mlflow.models.set_model(BundleModel())
'''
Step = Callable[[str], None]


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go: `uri` (sqlite:///..., https://...), the experiment and, for a new
    experiment, its artifact root (a folder or a URI)."""

    uri: str
    experiment: str
    artifact_root: str | None = None


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str  # models:/m-... (the logged model), what a registry version is made from


class BundleModel(PythonModel):
    """The bundle as an MLflow pyfunc: predicts P(accept) of each row's action.

    Input: `customer_id`, `item_id` (the action) and the feature columns of
    `feature_store.offline.replay.feature_columns()`; output: one probability per row.
    """

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> npt.NDArray[np.float64]:
        return self.bundle.predict_actions(model_input)


def model_signature() -> ModelSignature:
    """Inputs: the action, the customer (for affinities) and every feature column; text
    features are strings, all others numbers (NaN when unknown)."""
    text = {name for name, spec in FIELDS.items() if spec.type is FactType.TEXT}
    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("string", "customer_id"),
        ColSpec("string", "item_id"),
    ]
    inputs += [
        ColSpec("string", name, required=False)
        if name in text
        else ColSpec("double", name, required=False)
        for name in feature_columns()
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "accepted")]))


def experiment_id(target: TrackingTarget) -> str:
    """The experiment's id, created (with `artifact_root`) if it does not exist."""
    client = mlflow.MlflowClient(tracking_uri=target.uri)
    found = client.get_experiment_by_name(target.experiment)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(target.experiment, artifact_location=_location(target)))


def log_training(
    result: TrainResult,
    target: TrackingTarget,
    *,
    source: str,
    examples: pd.DataFrame | None = None,
    champion_version: str | None = None,
    run_name: str | None = None,
    step: Step | None = None,
    extra_params: Mapping[str, str | int | float] | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> LoggedRun:
    """Log one training run: params, metrics (`model`'s as they are, each baseline's as
    `baseline.<name>.<metric>`), the dataset (`source`: where the examples came from), plots
    and the bundle with a signature. `champion_version`: the registry version the
    `champion` baseline is. `step(description)` is called as each part starts.
    `extra_params` and `extra_tags` are logged as they are (e.g. the Dask cluster that replayed
    the examples, its partitioning and each phase's seconds)."""
    announce = step or (lambda description: None)
    _prepare_local_store(target.uri)
    mlflow.set_tracking_uri(target.uri)
    tags = {"rapport.source": source, "rapport.champion_version": champion_version or ""}
    tags.update(extra_tags or {})
    with (
        _quiet_mlflow(),
        mlflow.start_run(experiment_id=experiment_id(target), run_name=run_name, tags=tags) as run,
        tempfile.TemporaryDirectory(prefix="rapport-run-") as scratch,
    ):
        announce("params and metrics")
        mlflow.log_params(dict(result.params))
        if extra_params:
            mlflow.log_params(dict(extra_params))
        mlflow.log_metrics(run_metrics(result))
        announce("dataset")
        _log_dataset(result.dataset, source, examples)
        announce("plots")
        plots = Path(scratch) / "plots"
        result.write_plots(plots)
        mlflow.log_artifacts(str(plots), artifact_path="plots")
        announce("model bundle")
        bundle = Path(scratch) / "bundle"
        result.bundle.save(bundle)
        code = Path(scratch) / "rapport_model.py"
        code.write_text(MODEL_CODE)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(code),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            signature=model_signature(),
            pip_requirements=_requirements(),
        )
        return LoggedRun(run.info.run_id, run.info.experiment_id, str(info.model_uri))


def run_metrics(result: TrainResult) -> dict[str, float]:
    """The model's metrics as they are, each baseline's prefixed `baseline.<name>.`; timings."""
    metrics = dict(result.metrics)
    for name, values in result.baselines.items():
        metrics.update({f"baseline.{name}.{metric}": value for metric, value in values.items()})
    metrics.update(result.timings)
    return {name: float(value) for name, value in metrics.items() if np.isfinite(value)}


def _log_dataset(
    description: Mapping[str, Any], source: str, examples: pd.DataFrame | None
) -> None:
    mlflow.log_dict({"source": source, **description}, "dataset.json")
    mlflow.log_params(
        {
            f"dataset.{key}": value
            for key, value in description.items()
            if isinstance(value, int | float | str) and not isinstance(value, bool)
        }
    )
    if examples is not None:
        # Schema, size and digest of the examples (not their rows) in the run's inputs.
        dataset = from_pandas(examples, source=source, name="training-examples", targets="accepted")
        mlflow.log_input(dataset, context="training")


def _requirements() -> list[str]:
    try:
        return [f"rapport=={package_version('rapport')}", f"mlflow=={mlflow.__version__}"]
    except PackageNotFoundError:
        return [f"mlflow=={mlflow.__version__}"]


def _location(target: TrackingTarget) -> str | None:
    root = target.artifact_root
    if root is None:
        return None
    if "://" in root:
        return root
    return Path(root).resolve().as_uri()


def _prepare_local_store(uri: str) -> None:
    """A local SQLite store's folder must exist before MLflow creates the database."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Without MLflow's download bars (they would break the CLI's own progress bars) and its
    warnings: advice (an input example, integer columns in the examples' schema: the model's
    inputs are `model_signature()`) and deprecations of its own dependencies."""
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.set(False)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"mlflow\.")
        # MLflow's digest of the examples reads their datetime columns the deprecated way.
        warnings.filterwarnings("ignore", message=r"Series\.values returning an ndarray")
        yield
