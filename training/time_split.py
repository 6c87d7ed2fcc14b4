"""Splitting logged examples by time, never by chance: models are trained on the past and
measured on the future, as they will serve.

The holdout is the latest `holdout_fraction` of the decisions, the validation window the latest
`validation_fraction` of the rest; the decisions of one instant stay on one side, and every
item of a decision with its decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd


class NotEnoughData(ValueError):
    """The examples cannot train or evaluate a model (too few, or one class only)."""


@dataclass(frozen=True)
class TimeSplit:
    """The examples by decision time: `train` = `fit` then `validation`, then `holdout`. Each
    part is in time order, and a training row's index is its position in `train`."""

    train: pd.DataFrame
    fit: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    validation_start: pd.Timestamp
    holdout_start: pd.Timestamp


def split_by_time(
    examples: pd.DataFrame, *, holdout_fraction: float, validation_fraction: float
) -> TimeSplit:
    """Holdout, then validation, by decision time: the decisions of one instant stay together."""
    ordered = examples.sort_values(["decided_at", "decision_id"], kind="stable")
    ordered = ordered.reset_index(drop=True)
    holdout_start = _start_of_latest(ordered, holdout_fraction)
    # Prefixes of the time order: a training row's index is its position in `train`.
    train = ordered.iloc[: int((ordered["decided_at"] < holdout_start).sum())]
    holdout = ordered.iloc[len(train) :]
    validation_start = _start_of_latest(train, validation_fraction)
    fit = train.iloc[: int((train["decided_at"] < validation_start).sum())]
    validation = train.iloc[len(fit) :]
    for name, part in (("fit", fit), ("validation", validation), ("holdout", holdout)):
        if _actions(part).empty:
            raise NotEnoughData(f"no action answered in the {name} period: more decisions")
    if len(np.unique(_accepted(_actions(fit)))) < 2:
        raise NotEnoughData("the fit period's actions were all accepted or all refused")
    return TimeSplit(train, fit, validation, holdout, validation_start, holdout_start)


def _start_of_latest(examples: pd.DataFrame, fraction: float) -> pd.Timestamp:
    """When the latest `fraction` of the decisions of `examples` starts."""
    times = examples.drop_duplicates("decision_id")["decided_at"].sort_values(kind="stable")
    if len(times) < 2:
        raise NotEnoughData(f"{len(times)} decisions: too few to split by time")
    position = min(max(1, math.floor(len(times) * (1 - fraction))), len(times) - 1)
    start: pd.Timestamp = times.iloc[position]
    return start


def _actions(part: pd.DataFrame) -> pd.DataFrame:
    return part.loc[part["item_kind"] == "action"]


def _accepted(rows: pd.DataFrame) -> npt.NDArray[np.bool_]:
    return rows["accepted"].to_numpy(dtype=bool)
