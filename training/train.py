"""Training: logged examples in, one evaluated model bundle out.

Time decides every split, never chance, so that what is measured is what serving will see
(models trained on the past, answering the future):

    |<------------------- training period ------------------->|<--- holdout --->|
    |<--------------- fit --------------->|<--- validation --->|                 |
    | affinity checkpoints ^    ^    ^    ^    ^    ^    ^    ^ served affinity   |

* holdout: the latest `holdout_fraction` of the decisions; it only measures;
* validation: the latest `validation_fraction` of the training decisions: boosting stops when
  their log loss stops improving (then the trees are refitted on the whole training period,
  and calibrated on out-of-time predictions of its folds: `training.boosting`);
* affinity (ALS, past answers, segment rates): a training example is described by what was
  known at the latest checkpoint before it (nothing before the first); the served model,
  which also describes the holdout, by what was known when the holdout starts. No example
  is described by anything that knew its own answer (`training.affinity`).

The bundle shipped is the one evaluated: its holdout metrics, beside the baselines' (popularity,
the online smoothed rates learned from the training period, and a champion bundle if given) on
the same holdout, are in `TrainResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from feature_store.offline.replay import KEY_COLUMNS, LABEL_COLUMNS, feature_columns
from training.affinity import AffinityModel, AffinityParams, fit_affinity, point_in_time_features
from training.baselines import OnlineRatesScorer, PopularityScorer
from training.boosting import BoostingParams, FittedTrees, fit_calibrated_trees
from training.bundle import MIN_STRENGTH, ModelBundle
from training.dataset import DEFAULT_COLUMNS
from training.default_acceptance import DefaultAcceptanceModel, fit_default_acceptance
from training.evaluate import FrameScorer, evaluate
from training.feature_encoding import FeatureEncoder
from training.learning_curve import LearningPoint, learning_curve
from training.plots import Curves, write_plots
from training.propensity import PropensityModel
from training.time_split import NotEnoughData, TimeSplit, split_by_time

__all__ = [
    "STAGES",
    "NotEnoughData",
    "TimeSplit",
    "TrainConfig",
    "TrainResult",
    "describe_dataset",
    "params_of",
    "time_split",
    "train",
]

FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]
STAGES = ("split", "affinity", "propensity", "default_acceptance", "evaluate", "learning_curve")


class TrainConfig(BaseModel):
    """How to split, fit and evaluate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Latest share of the decisions held out to evaluate."
    )
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="Latest share of the training decisions, to stop boosting."
    )
    seed: int = Field(0, ge=0)
    threads: int | None = Field(
        1, ge=1, description="Fitting threads (None: all cores; more than free cores slows it)."
    )
    propensity: BoostingParams = BoostingParams()
    defaults: BoostingParams = BoostingParams(max_depth=3, min_samples_leaf=20)
    affinity: AffinityParams = AffinityParams()
    text_min_count: int = Field(30, ge=1, description="Rows a text value needs to be one-hot.")
    text_max_values: int = Field(24, ge=1, description="One-hot values per text field, at most.")
    max_strength: float = Field(
        50.0, ge=MIN_STRENGTH, description="Cap on an action's posterior pseudo-count."
    )
    min_default_acceptance: float = Field(
        0.5, ge=0, le=1, description="Threshold at which defaults are evaluated."
    )
    ranking_k: int = Field(3, ge=1, le=20)
    learning_curve_points: int = Field(
        4, ge=0, le=10, description="Training sizes of the learning curve (0: none)."
    )


@dataclass
class TrainResult:
    """The bundle and everything a run records about it."""

    bundle: ModelBundle
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    params: dict[str, str | float | int]
    dataset: dict[str, Any]
    curves: Curves
    timings: dict[str, float] = field(default_factory=dict)

    def write_plots(self, directory: Path) -> list[Path]:
        """Calibration curve, lift/gains and learning curve as PNG files in `directory`."""
        return write_plots(self.curves, directory)


def train(
    examples: pd.DataFrame,
    *,
    config: TrainConfig | None = None,
    champion: ModelBundle | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train and evaluate a bundle on `examples` (`training.dataset.examples_from_logs` or
    `load_examples`; plain `training_examples` works too, without the default-acceptance
    model and the off-policy metrics). Raises `NotEnoughData`."""
    config = config or TrainConfig()
    report = _Reporter(progress)
    report.stage("split")
    split = time_split(_checked(examples), config)
    report.stage("affinity")
    served_affinity, train_affinity = _affinity(split, config)
    report.stage("propensity")
    encoder = FeatureEncoder.fit(
        _actions(split.train), min_count=config.text_min_count, max_values=config.text_max_values
    )
    actions = tuple(sorted(set(_actions(split.train)["item_id"].astype(str))))
    train_rows = _design(split.train, encoder, actions, train_affinity)
    fitted = fit_calibrated_trees(
        train_rows,
        _accepted(_actions(split.train)),
        config.propensity,
        validation_start=len(_actions(split.fit)),
        seed=config.seed,
        threads=config.threads,
    )
    propensity = PropensityModel(encoder, actions, fitted.trees, fitted.calibration)
    report.stage("default_acceptance")
    defaults = _default_model(split, config)
    bundle = ModelBundle(
        propensity=propensity,
        strength=_strength(split.train, actions, config.max_strength),
        unseen_action_rate=float(np.clip(_accepted(_actions(split.train)).mean(), 0.001, 0.999)),
        affinity=served_affinity,
        defaults=defaults,
        created_at=datetime.now(UTC),
    )
    report.stage("evaluate")
    scorers: dict[str, FrameScorer] = {
        "popularity": PopularityScorer(split.train),
        "online_rates": OnlineRatesScorer(split.train),
    }
    if champion is not None:
        scorers["champion"] = champion
    measure = _measure(split.holdout, config)
    metrics = measure(bundle)
    baselines = {name: measure(scorer) for name, scorer in scorers.items()}
    report.stage("learning_curve")
    curve = _learning_curve(split, propensity, served_affinity, train_rows, fitted, config)
    bundle.metrics = metrics
    bundle.params = params_of(config, bundle)
    bundle.dataset = describe_dataset(split)
    report.done()
    return TrainResult(
        bundle=bundle,
        metrics=metrics,
        baselines=baselines,
        params=bundle.params,
        dataset=bundle.dataset,
        curves=_curves(bundle, scorers, split.holdout, curve),
        timings=report.timings,
    )


def time_split(examples: pd.DataFrame, config: TrainConfig) -> TimeSplit:
    """The examples split by time as `train` splits them with `config` (holdout last).
    Raises `NotEnoughData`."""
    return split_by_time(
        examples,
        holdout_fraction=config.holdout_fraction,
        validation_fraction=config.validation_fraction,
    )


# -- models ------------------------------------------------------------------------------------


def _affinity(split: TimeSplit, config: TrainConfig) -> tuple[AffinityModel, FloatArray]:
    """The served affinity model, and the point-in-time affinity features of each training row
    (rows of `split.train`, in order)."""
    train = split.train
    times = train.drop_duplicates("decision_id")["decided_at"].sort_values(kind="stable")
    count = config.affinity.checkpoints
    starts = sorted({times.iloc[int(len(times) * k / (count + 1))] for k in range(1, count + 1)})
    features = point_in_time_features(train, starts, config.affinity, seed=config.seed)
    served = fit_affinity(train, split.holdout_start, config.affinity, seed=config.seed)
    return served, features


def _design(
    part: pd.DataFrame, encoder: FeatureEncoder, actions: Sequence[str], affinity: FloatArray
) -> FloatArray:
    """The classifier's rows of the actions of `part` (rows of the training period, whose
    index is their position in it, as `affinity`'s rows)."""
    rows = _actions(part)
    return PropensityModel.design(
        encoder.encode_frame(rows),
        rows["item_id"].astype(str).tolist(),
        actions,
        affinity[rows.index.to_numpy()],
    )


def _default_model(split: TimeSplit, config: TrainConfig) -> DefaultAcceptanceModel | None:
    if not set(DEFAULT_COLUMNS) <= set(split.train.columns):
        return None
    defaults = _defaults(split.train)
    if defaults.empty:
        return None
    return fit_default_acceptance(
        defaults,
        config.defaults,
        validation_start=len(_defaults(split.fit)),
        seed=config.seed,
        threads=config.threads,
    )


def _strength(train: pd.DataFrame, actions: Sequence[str], cap: float) -> dict[str, float]:
    counts = _actions(train)["item_id"].astype(str).value_counts()
    return {a: float(np.clip(counts.get(a, 0), MIN_STRENGTH, cap)) for a in actions}


# -- evaluation --------------------------------------------------------------------------------


def _measure(
    holdout: pd.DataFrame, config: TrainConfig
) -> Callable[[FrameScorer], dict[str, float]]:
    def measure(scorer: FrameScorer) -> dict[str, float]:
        return evaluate(
            scorer,
            holdout,
            min_default_acceptance=config.min_default_acceptance,
            k=config.ranking_k,
        )

    return measure


def _learning_curve(
    split: TimeSplit,
    propensity: PropensityModel,
    served: AffinityModel,
    train_rows: FloatArray,
    fitted: FittedTrees,
    config: TrainConfig,
) -> list[LearningPoint]:
    if config.learning_curve_points == 0:
        return []
    holdout = _actions(split.holdout)
    holdout_rows = PropensityModel.design(
        propensity.encoder.encode_frame(holdout),
        holdout["item_id"].astype(str).tolist(),
        propensity.actions,
        served.frame_features(
            holdout["customer_id"].astype(str).tolist(),
            holdout["item_id"].astype(str).tolist(),
            holdout["segment"].astype(str).tolist(),
        ),
    )
    return learning_curve(
        propensity,
        train_rows,
        _accepted(_actions(split.train)),
        holdout_rows,
        _accepted(holdout),
        config.propensity,
        iterations=fitted.iterations,
        points=config.learning_curve_points,
        seed=config.seed,
        threads=config.threads,
    )


def _curves(
    bundle: ModelBundle,
    baselines: dict[str, FrameScorer],
    holdout: pd.DataFrame,
    learning: list[LearningPoint],
) -> Curves:
    actions = _actions(holdout)
    scorers: dict[str, FrameScorer] = {"model": bundle, **baselines}
    return Curves(
        accepted=_accepted(actions),
        probability={name: scorer.predict_actions(actions) for name, scorer in scorers.items()},
        learning=learning,
    )


# -- records -----------------------------------------------------------------------------------


def params_of(config: TrainConfig, bundle: ModelBundle) -> dict[str, str | float | int]:
    """The configuration, flattened (`propensity.learning_rate`), and what the fit chose."""
    params: dict[str, str | float | int] = {}
    for name, value in _flatten(config.model_dump()).items():
        params[name] = "none" if value is None else value
    params["propensity.trees"] = bundle.propensity.trees.trees
    params["propensity.features"] = bundle.propensity.trees.n_features
    params["propensity.calibration"] = bundle.propensity.calibration.method
    params["defaults.trained"] = int(bundle.defaults is not None)
    if bundle.defaults is not None:
        params["defaults.trees"] = bundle.defaults.trees.trees
    params["affinity.customers"] = len(bundle.affinity.customers)
    params["affinity.items"] = len(bundle.affinity.items)
    return params


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, bool):
            flat[f"{prefix}{key}"] = int(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_dataset(split: TimeSplit) -> dict[str, Any]:
    everything = pd.concat([split.train, split.holdout])
    actions, defaults = _actions(everything), _defaults(everything)
    return {
        "rows": len(everything),
        "action_rows": len(actions),
        "default_rows": len(defaults),
        "customers": int(everything["customer_id"].nunique()),
        "decisions": int(everything["decision_id"].nunique()),
        "start": everything["decided_at"].min().isoformat(),
        "end": everything["decided_at"].max().isoformat(),
        "holdout_start": split.holdout_start.isoformat(),
        "validation_start": split.validation_start.isoformat(),
        "action_acceptance_rate": float(_accepted(actions).mean()) if len(actions) else 0.0,
        "default_acceptance_rate": float(_accepted(defaults).mean()) if len(defaults) else 0.0,
        "train_rows": len(split.train),
        "fit_rows": len(split.fit),
        "validation_rows": len(split.validation),
        "holdout_rows": len(split.holdout),
        "train_decisions": int(split.train["decision_id"].nunique()),
        "holdout_decisions": int(split.holdout["decision_id"].nunique()),
    }


# -- helpers -----------------------------------------------------------------------------------


def _checked(examples: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in (*KEY_COLUMNS, *feature_columns(), *LABEL_COLUMNS) if c not in examples]
    if missing:
        raise NotEnoughData(f"examples lack the columns {missing[:5]} (of {len(missing)})")
    return examples


def _actions(part: pd.DataFrame) -> pd.DataFrame:
    return part.loc[part["item_kind"] == "action"]


def _defaults(part: pd.DataFrame) -> pd.DataFrame:
    return part.loc[part["item_kind"] == "default"]


def _accepted(rows: pd.DataFrame) -> npt.NDArray[np.bool_]:
    return rows["accepted"].to_numpy(dtype=bool)


class _Reporter:
    """Calls `progress(stage, number, total)` as each stage starts and times the stages."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def stage(self, name: str) -> None:
        self.done()
        self._current = (name, time.perf_counter())
        if self.progress is not None:
            self.progress(name, STAGES.index(name) + 1, len(STAGES))

    def done(self) -> None:
        if self._current is not None:
            name, started = self._current
            self.timings[f"seconds.{name}"] = round(time.perf_counter() - started, 3)
            self._current = None
