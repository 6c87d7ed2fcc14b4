"""Calibration: a monotone map from a classifier's log-odds to acceptance probabilities.

Fitted on a later period than the trees (the last part of the training period), so the
probabilities match the acceptance rates of the most recent decisions, not the fit's:

* `isotonic`: scikit-learn's `IsotonicRegression` (increasing, clipped), kept as its
  thresholds and applied with `np.interp`, exactly as scikit-learn predicts it;
* `sigmoid`: Platt scaling, p = 1 / (1 + exp(-(slope * raw + intercept))).

Probabilities are kept within [`EPSILON`, 1 - `EPSILON`], so a Beta posterior built from them
has positive parameters and a log loss stays finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

FloatArray = npt.NDArray[np.float64]
Method = Literal["isotonic", "sigmoid"]
EPSILON = 1e-4


class InvalidCalibration(ValueError):
    """Arrays that do not describe a calibration."""


@dataclass(frozen=True, eq=False)
class Calibration:
    """`method` with its parameters: the isotonic knots (x increasing, y in [0, 1]) or the
    sigmoid's (slope, intercept) in `y`."""

    method: Method
    x: FloatArray
    y: FloatArray

    @classmethod
    def fit(cls, raw: FloatArray, accepted: npt.NDArray[Any], method: Method) -> Calibration:
        labels = np.asarray(accepted, dtype=np.float64)
        if method == "isotonic":
            isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            isotonic.fit(raw, labels)
            x = np.asarray(isotonic.X_thresholds_, dtype=np.float64)
            y = np.asarray(isotonic.y_thresholds_, dtype=np.float64)
            return cls(method, x, y)
        platt = LogisticRegression(C=1e6)  # Platt scaling: barely regularised
        platt.fit(raw.reshape(-1, 1), labels.astype(int))
        slope, intercept = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        return cls(method, np.zeros(0), np.array([slope, intercept]))

    @classmethod
    def identity(cls) -> Calibration:
        """The classifier's own probability: the sigmoid of its log-odds."""
        return cls("sigmoid", np.zeros(0), np.array([1.0, 0.0]))

    def probability(self, raw: FloatArray) -> FloatArray:
        if self.method == "isotonic":
            p = np.interp(raw, self.x, self.y)
        else:
            slope, intercept = self.y
            p = 1.0 / (1.0 + np.exp(-(slope * raw + intercept)))
        clipped: FloatArray = np.clip(p, EPSILON, 1.0 - EPSILON)
        return clipped

    def arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        code = np.array([_METHODS.index(self.method)], dtype=np.int64)
        return {f"{prefix}method": code, f"{prefix}x": self.x, f"{prefix}y": self.y}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[Any]], prefix: str) -> Calibration:
        try:
            code = int(np.asarray(arrays[f"{prefix}method"]).reshape(-1)[0])
            x = np.asarray(arrays[f"{prefix}x"], dtype=np.float64)
            y = np.asarray(arrays[f"{prefix}y"], dtype=np.float64)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise InvalidCalibration(f"unreadable calibration: {error}") from error
        if not 0 <= code < len(_METHODS):
            raise InvalidCalibration(f"unknown calibration method code {code}")
        method = _METHODS[code]
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise InvalidCalibration("calibration parameters must be finite")
        if method == "sigmoid" and y.shape != (2,):
            raise InvalidCalibration("a sigmoid calibration has a slope and an intercept")
        if method == "isotonic" and (
            x.ndim != 1 or x.shape != y.shape or len(x) == 0 or (np.diff(x) < 0).any()
        ):
            raise InvalidCalibration("isotonic knots must be 1-D, of one length, x increasing")
        return cls(method, x, y)


_METHODS: tuple[Method, ...] = ("isotonic", "sigmoid")
