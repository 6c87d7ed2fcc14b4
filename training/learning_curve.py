"""The learning curve: how the propensity model's holdout log loss and AUC move with the
number of training rows (is more data still helping, or is the model the limit?).

Each point refits the trees on the latest share of the training rows (the rows nearest the
holdout), with the served model's number of boosting iterations and its calibration, so that
the points differ by data alone; the last point is the served model itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.metrics import log_loss, roc_auc_score

from training.boosting import BoostingParams, fit_trees
from training.propensity import PropensityModel

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class LearningPoint:
    """Training rows, and log loss on them (in sample) and on the holdout, holdout AUC."""

    rows: int
    fit_log_loss: float
    holdout_log_loss: float
    holdout_auc: float


def learning_curve(
    model: PropensityModel,
    train_rows: FloatArray,
    train_accepted: BoolArray,
    holdout_rows: FloatArray,
    holdout_accepted: BoolArray,
    params: BoostingParams,
    *,
    iterations: int,
    points: int,
    seed: int,
    threads: int | None = None,
) -> list[LearningPoint]:
    """`points` points, at the latest 1/points, 2/points, ... of the training rows (design
    rows of `model`, in time order); a share with one class only is skipped."""
    curve: list[LearningPoint] = []
    for number in range(1, points + 1):
        size = max(2, round(len(train_rows) * number / points))
        rows, accepted = train_rows[-size:], train_accepted[-size:]
        if len(np.unique(accepted)) < 2:
            continue
        refitted = model
        if number < points:
            trees = fit_trees(
                rows, accepted, params, iterations=iterations, seed=seed, threads=threads
            )
            refitted = PropensityModel(model.encoder, model.actions, trees, model.calibration)
        curve.append(_point(refitted, rows, accepted, holdout_rows, holdout_accepted))
    return curve


def _point(
    model: PropensityModel,
    rows: FloatArray,
    accepted: BoolArray,
    holdout_rows: FloatArray,
    holdout_accepted: BoolArray,
) -> LearningPoint:
    fitted = model.probability(rows)
    held = model.probability(holdout_rows)
    two_classes = len(np.unique(holdout_accepted)) == 2
    return LearningPoint(
        rows=len(rows),
        fit_log_loss=float(log_loss(accepted, fitted, labels=[False, True])),
        holdout_log_loss=float(log_loss(holdout_accepted, held, labels=[False, True])),
        holdout_auc=float(roc_auc_score(holdout_accepted, held)) if two_classes else math.nan,
    )
