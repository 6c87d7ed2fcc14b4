"""Gradient-boosted trees, calibrated on their own predictions of the future: the classifier
behind both models.

`fit_calibrated_trees` takes the training rows in time order and:

1. finds how many boosting iterations to run: fitted on the rows before the validation window
   (the latest ones), boosting stops when the validation log loss stops improving;
2. checks calibration on out-of-time predictions: for each of `calibration_folds` time folds,
   trees fitted on the rows before it predict it, as the served model will predict decisions
   after its training; a sigmoid (Platt) or isotonic map from those log-odds to the acceptance
   observed (`training.calibration`) is fitted on all of them together (far more rows than the
   validation window alone, so a few unusual weeks do not shift every probability), and kept
   if it fits them significantly better than the trees' own probabilities;
3. fits the trees served, with that many iterations, on every training row (the latest
   decisions are the most like the next ones).

It returns the trees as arrays (`training.tree_ensemble`) with the calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import chi2
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from training.calibration import Calibration, Method
from training.tree_ensemble import TreeEnsemble

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
#: Rows below which a validation window or a calibration set is not used.
MIN_ROWS = 50
#: Boosting iterations when no validation window can measure how many help.
UNMEASURED_ITERATIONS = 50


class BoostingParams(BaseModel):
    """Hyper-parameters of the boosted trees (scikit-learn's names) and their calibration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learning_rate: float = Field(0.1, gt=0, le=1)
    max_iter: int = Field(200, ge=1, le=5_000, description="Boosting iterations, at most.")
    max_leaf_nodes: int = Field(7, ge=2, le=255)
    max_depth: int = Field(4, ge=1, le=32)
    min_samples_leaf: int = Field(80, ge=1)
    l2_regularization: float = Field(1.0, ge=0)
    n_iter_no_change: int = Field(15, ge=1, description="Early stopping patience.")
    calibration: Method = "sigmoid"
    calibration_folds: int = Field(
        3, ge=0, le=10, description="Time folds predicted out of time to calibrate (0: none)."
    )
    calibration_test: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Significance level at which the calibration map replaces the trees' own "
        "probabilities (1: always).",
    )


@dataclass(frozen=True)
class FittedTrees:
    trees: TreeEnsemble
    calibration: Calibration
    iterations: int
    calibration_rows: int


def fit_calibrated_trees(
    rows: FloatArray,
    accepted: BoolArray,
    params: BoostingParams,
    *,
    validation_start: int,
    seed: int,
    threads: int | None = None,
    monotonic: Sequence[int] | None = None,
) -> FittedTrees:
    """Trees and calibration from `rows` in time order, `rows[validation_start:]` the latest
    (see the module docstring). With too small a validation window (or one class in it),
    boosting runs `UNMEASURED_ITERATIONS` iterations (at most `max_iter`); without enough
    out-of-time predictions, the trees' own probabilities are kept. `monotonic`: per column,
    +1 (the probability never decreases with it), -1 or 0, as scikit-learn's `monotonic_cst`."""
    fit = _Fitter(rows, params, seed, threads, monotonic)
    validation = slice(validation_start, None)
    if len(rows) - validation_start >= MIN_ROWS and _both_classes(accepted[validation]):
        early = fit.model(slice(0, validation_start), accepted, params.max_iter, validation)
        iterations = int(early.n_iter_)
    else:
        iterations = min(params.max_iter, UNMEASURED_ITERATIONS)
    raw: list[FloatArray] = []
    observed: list[BoolArray] = []
    bounds = np.linspace(0, len(rows), params.calibration_folds + 2).astype(int)
    for start, end in pairwise(bounds[1:]):
        if _both_classes(accepted[:start]) and end > start:
            past = fit.model(slice(0, start), accepted, iterations)
            with threadpool_limits(limits=threads):
                raw.append(_raw(past, fit.rows[start:end]))
            observed.append(accepted[start:end])
    calibration = Calibration.identity()
    if raw and len(np.concatenate(raw)) >= MIN_ROWS and _both_classes(np.concatenate(observed)):
        calibration = _calibration(np.concatenate(raw), np.concatenate(observed), params)
    served = fit.model(slice(0, len(rows)), accepted, iterations)
    return FittedTrees(
        trees=TreeEnsemble.from_classifier(served, n_features=rows.shape[1]),
        calibration=calibration,
        iterations=iterations,
        calibration_rows=int(sum(len(r) for r in raw)),
    )


def fit_trees(
    rows: FloatArray,
    accepted: BoolArray,
    params: BoostingParams,
    *,
    iterations: int,
    seed: int,
    threads: int | None = None,
) -> TreeEnsemble:
    """Trees of `iterations` boosting iterations on all `rows`, uncalibrated."""
    model = _Fitter(rows, params, seed, threads, None).model(
        slice(0, len(rows)), accepted, iterations
    )
    return TreeEnsemble.from_classifier(model, n_features=rows.shape[1])


class _Fitter:
    """Fits scikit-learn's classifier on slices of the rows, with the same settings."""

    def __init__(
        self,
        rows: FloatArray,
        params: BoostingParams,
        seed: int,
        threads: int | None,
        monotonic: Sequence[int] | None,
    ) -> None:
        self.rows = rows
        self.params, self.seed, self.threads = params, seed, threads
        self.monotonic = list(monotonic) if monotonic is not None else None

    def model(
        self,
        part: slice,
        accepted: BoolArray,
        iterations: int,
        validation: slice | None = None,
    ) -> Any:
        params = self.params
        model = HistGradientBoostingClassifier(
            learning_rate=params.learning_rate,
            max_iter=iterations,
            max_leaf_nodes=params.max_leaf_nodes,
            max_depth=params.max_depth,
            min_samples_leaf=params.min_samples_leaf,
            l2_regularization=params.l2_regularization,
            early_stopping=validation is not None,
            n_iter_no_change=params.n_iter_no_change,
            scoring="loss",
            monotonic_cst=self.monotonic,
            categorical_features=None,
            random_state=self.seed,
        )
        # A column with no value in these rows is constant: scikit-learn cannot bin an
        # all-NaN column, and no split would use it either way, so it is fitted as zeros.
        rows = self.rows[part]
        empty = np.isnan(rows).all(axis=0)
        extra: dict[str, Any] = {}
        if validation is not None:
            extra = {
                "X_val": np.where(empty, 0.0, self.rows[validation]),
                "y_val": accepted[validation].astype(int),
            }
        with threadpool_limits(limits=self.threads):
            model.fit(np.where(empty, 0.0, rows), accepted[part].astype(int), **extra)
        return model


def _calibration(raw: FloatArray, accepted: BoolArray, params: BoostingParams) -> Calibration:
    """The map fitted on out-of-time predictions if it fits them significantly better than
    the trees' own probabilities (likelihood-ratio test at `params.calibration_test`), else
    the trees' own: boosting on log loss is calibrated unless the future drifts from the past,
    and a map fitted on a few hundred rows would add its own noise to every probability."""
    fitted = Calibration.fit(raw, accepted, params.calibration)
    own = Calibration.identity()
    if fitted.method == "sigmoid" and fitted.y[0] <= 0:
        return own  # a map that reverses the trees' order is noise, never a correction
    gain = _log_likelihood(fitted, raw, accepted) - _log_likelihood(own, raw, accepted)
    freedom = 2 if fitted.method == "sigmoid" else max(1, len(fitted.x) - 1)
    significant = 2.0 * gain > chi2.ppf(1.0 - params.calibration_test, freedom)
    return fitted if significant else own


def _log_likelihood(calibration: Calibration, raw: FloatArray, accepted: BoolArray) -> float:
    p = calibration.probability(raw)
    return float(np.sum(np.where(accepted, np.log(p), np.log1p(-p))))


def _raw(model: Any, rows: FloatArray) -> FloatArray:
    raw: FloatArray = np.asarray(model.decision_function(rows), dtype=np.float64)
    return raw


def _both_classes(accepted: BoolArray) -> bool:
    return bool(accepted.any() and not accepted.all())
