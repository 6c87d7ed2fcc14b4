"""Default acceptance: the probability that a personalised default is accepted, given the
strength of the habit behind it.

One row per offered default: the habit's smoothed share of matching requests (`confidence`),
its matching requests (`matches`) and the requests considered (`window`), whether the
touchpoint named this request kind (a customer at the ATM asking for cash, not just passing
by), and one-hot request kind and touchpoint kind. The classifier is constrained to be
non-decreasing in `confidence` and `matches` (a stronger habit is never less likely to be
accepted), and the calibration is monotone, so the probability is too.

Training reads the habit strength that the decision logged with the default
(`training.dataset.DEFAULT_COLUMNS`); serving reads the same fields of `UsualRequest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from engine.habits import UsualRequest
from training.boosting import BoostingParams, fit_calibrated_trees
from training.calibration import Calibration
from training.dataset import DEFAULT_CHANNEL, DEFAULT_CONFIDENCE, DEFAULT_MATCHES, DEFAULT_WINDOW
from training.tree_ensemble import TreeEnsemble

FloatArray = npt.NDArray[np.float64]
STRENGTH = ("confidence", "matches", "window", "requested")
#: Monotone constraints of `STRENGTH`: non-decreasing in confidence and matches.
_STRENGTH_MONOTONIC = (1, 1, 0, 0)
DEFAULT_PREFIX = "default:"


@dataclass(frozen=True, eq=False)
class DefaultAcceptanceModel:
    """Request kinds and touchpoint kinds known (one-hot, in this order), trees, calibration."""

    requests: tuple[str, ...]
    channels: tuple[str, ...]
    trees: TreeEnsemble
    calibration: Calibration

    @property
    def names(self) -> list[str]:
        return _names(self.requests, self.channels)

    def habit_probability(
        self, habits: Sequence[UsualRequest], requested: str | None
    ) -> list[float]:
        """P(accepted) of each habit offered as a default, `requested` the request kind the
        touchpoint named (or None)."""
        rows = _rows(
            np.array([[h.confidence, h.matches, h.window] for h in habits], dtype=np.float64),
            [h.request == requested for h in habits],
            [h.request for h in habits],
            [h.channel for h in habits],
            self.requests,
            self.channels,
        )
        return [float(p) for p in self.calibration.probability(self.trees.raw(rows))]

    def frame_probability(self, defaults: pd.DataFrame) -> FloatArray:
        """P(accepted) of each default row of the examples."""
        return self.calibration.probability(
            self.trees.raw(frame_rows(defaults, self.requests, self.channels))
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {**self.trees.arrays(), **self.calibration.arrays("calibration_")}

    def describe(self) -> dict[str, Any]:
        return {"requests": list(self.requests), "channels": list(self.channels)}

    @classmethod
    def from_saved(
        cls, arrays: Mapping[str, npt.NDArray[Any]], description: Mapping[str, Any]
    ) -> DefaultAcceptanceModel:
        requests = tuple(str(r) for r in description["requests"])
        channels = tuple(str(c) for c in description["channels"])
        trees = TreeEnsemble.from_arrays(arrays)
        if trees.n_features != len(_names(requests, channels)):
            raise ValueError("the default-acceptance trees do not match their feature list")
        return cls(requests, channels, trees, Calibration.from_arrays(arrays, "calibration_"))


def fit_default_acceptance(
    defaults: pd.DataFrame,
    params: BoostingParams,
    *,
    validation_start: int,
    seed: int,
    threads: int | None = None,
) -> DefaultAcceptanceModel | None:
    """Fitted on the default rows of the training period (in time order, the latest from
    `validation_start` for early stopping); None unless they hold both an accepted and a
    refused default."""
    accepted = defaults["accepted"].to_numpy(dtype=bool)
    if accepted.all() or not accepted.any():
        return None
    requests = tuple(sorted(set(_request_kinds(defaults["item_id"]))))
    channels = tuple(sorted(set(defaults[DEFAULT_CHANNEL].dropna().astype(str))))
    monotonic = [*_STRENGTH_MONOTONIC, *([0] * (len(requests) + len(channels)))]
    fitted = fit_calibrated_trees(
        frame_rows(defaults, requests, channels),
        accepted,
        params,
        validation_start=validation_start,
        seed=seed,
        threads=threads,
        monotonic=monotonic,
    )
    return DefaultAcceptanceModel(requests, channels, fitted.trees, fitted.calibration)


def frame_rows(
    defaults: pd.DataFrame, requests: Sequence[str], channels: Sequence[str]
) -> FloatArray:
    strength = defaults[[DEFAULT_CONFIDENCE, DEFAULT_MATCHES, DEFAULT_WINDOW]].to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    kinds = _request_kinds(defaults["item_id"])
    named = defaults["context.request"].tolist()
    return _rows(
        strength,
        [kind == asked for kind, asked in zip(kinds, named, strict=True)],
        kinds,
        [str(c) for c in defaults[DEFAULT_CHANNEL].tolist()],
        requests,
        channels,
    )


def _rows(
    strength: FloatArray,
    requested: Sequence[bool],
    kinds: Sequence[str],
    channels: Sequence[str],
    known_requests: Sequence[str],
    known_channels: Sequence[str],
) -> FloatArray:
    """The one encoding of training and serving: strength, requested, one-hots."""
    asked = np.array(requested, dtype=np.float64).reshape(-1, 1)
    kind_block = np.array([[k == r for r in known_requests] for k in kinds], dtype=np.float64)
    channel_block = np.array([[c == k for k in known_channels] for c in channels], dtype=np.float64)
    return np.hstack(
        [
            strength.reshape(-1, 3),
            asked,
            kind_block.reshape(len(kinds), len(known_requests)),
            channel_block.reshape(len(channels), len(known_channels)),
        ]
    )


def _names(requests: Sequence[str], channels: Sequence[str]) -> list[str]:
    return [*STRENGTH, *(f"request={r}" for r in requests), *(f"channel={c}" for c in channels)]


def _request_kinds(item_ids: pd.Series[Any]) -> list[str]:
    return [str(item).removeprefix(DEFAULT_PREFIX) for item in item_ids]
