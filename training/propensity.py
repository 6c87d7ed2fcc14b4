"""Propensity: P(accept | the customer's features, the action, the touchpoint, the context).

A calibrated gradient-boosted classifier (`training.boosting`) over one row per (decision,
action): the decision's encoded features (`training.feature_encoding`: profile facts, the
asking touchpoint's kind and id, the request, products held, the market), the action one-hot,
and what the answers logged before the decision say of the customer and the action
(`training.affinity.AFFINITY_FEATURES`: the ALS affinity, the customer's past answers, the
action's rate in the customer's segment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.affinity import AFFINITY_FEATURES
from training.calibration import Calibration
from training.feature_encoding import FeatureEncoder, action_block
from training.tree_ensemble import TreeEnsemble

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class PropensityModel:
    """The encoder, the actions it knows (one-hot, in this order), the trees and calibration."""

    encoder: FeatureEncoder
    actions: tuple[str, ...]
    trees: TreeEnsemble
    calibration: Calibration

    @staticmethod
    def column_names(encoder: FeatureEncoder, actions: Sequence[str]) -> list[str]:
        return [*encoder.names, *(f"action={a}" for a in actions), *AFFINITY_FEATURES]

    @property
    def names(self) -> list[str]:
        return self.column_names(self.encoder, self.actions)

    @staticmethod
    def design(
        encoded: FloatArray,
        action_ids: Sequence[str],
        actions: Sequence[str],
        affinity: FloatArray,
    ) -> FloatArray:
        """The classifier's rows: encoded features, action one-hot, affinity features."""
        return np.hstack([encoded, action_block(action_ids, actions), affinity])

    def probability(self, rows: FloatArray) -> FloatArray:
        """P(accept) of each design row."""
        return self.calibration.probability(self.trees.raw(rows))

    def frame_probability(self, examples: pd.DataFrame, affinity: FloatArray) -> FloatArray:
        """P(accept) of each example's `item_id` given its features and affinity features."""
        encoded = self.encoder.encode_frame(examples)
        action_ids = examples["item_id"].astype(str).tolist()
        return self.probability(self.design(encoded, action_ids, self.actions, affinity))

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {**self.trees.arrays(), **self.calibration.arrays("calibration_")}

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.encoder.describe(), "actions": list(self.actions)}

    @classmethod
    def from_saved(
        cls, arrays: Mapping[str, npt.NDArray[Any]], description: Mapping[str, Any]
    ) -> PropensityModel:
        """Read back `arrays()` and `describe()`; ValueError if they do not fit together."""
        encoder = FeatureEncoder.from_description(description["encoder"])
        actions = tuple(str(action) for action in description["actions"])
        trees = TreeEnsemble.from_arrays(arrays)
        expected = len(cls.column_names(encoder, actions))
        if trees.n_features != expected:
            raise ValueError(f"the trees read {trees.n_features} columns, the encoder {expected}")
        return cls(encoder, actions, trees, Calibration.from_arrays(arrays, "calibration_"))
