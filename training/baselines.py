"""What a trained bundle is compared with, learned from the same training period:

* `PopularityScorer`: each action's acceptance rate over everyone (shrunk toward the rate of all
  actions), each request kind's default acceptance rate;
* `OnlineRatesScorer`: what the engine serves without a model, `engine.arbitration.
  AcceptanceRates` by action and value segment, from the training period's outcomes; it has no
  opinion on defaults (the habit thresholds alone decide, so every logged default is offered).

Both score logged examples as `training.evaluate.FrameScorer` asks.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.affinity import answer_rates
from training.default_acceptance import DEFAULT_PREFIX

FloatArray = npt.NDArray[np.float64]
#: Pseudo-count pulling a rate toward its parent's.
SHRINKAGE = 20.0


class PopularityScorer:
    """Acceptance by action, and of defaults by request kind, for everyone alike."""

    def __init__(self, examples: pd.DataFrame) -> None:
        actions = examples.loc[examples["item_kind"] == "action"]
        defaults = examples.loc[examples["item_kind"] == "default"]
        self.action_rate = _shrunk_rates(actions, actions["item_id"])
        self.default_rate = _shrunk_rates(
            defaults, defaults["item_id"].astype(str).str.removeprefix(DEFAULT_PREFIX)
        )
        self.overall_action = _mean(actions["accepted"])
        self.overall_default = _mean(defaults["accepted"])

    def predict_actions(self, examples: pd.DataFrame) -> FloatArray:
        rates = examples["item_id"].map(self.action_rate).astype(float)
        probability: FloatArray = np.asarray(rates.fillna(self.overall_action), dtype=np.float64)
        return probability

    def predict_defaults(self, examples: pd.DataFrame) -> FloatArray | None:
        kinds = examples["item_id"].astype(str).str.removeprefix(DEFAULT_PREFIX)
        rates = kinds.map(self.default_rate).astype(float)
        probability: FloatArray = np.asarray(rates.fillna(self.overall_default), dtype=np.float64)
        return probability


class OnlineRatesScorer:
    """The engine's online smoothed rates, learned from the training period's outcomes."""

    def __init__(self, examples: pd.DataFrame) -> None:
        self.rates = answer_rates(examples)

    def predict_actions(self, examples: pd.DataFrame) -> FloatArray:
        return np.array(
            [
                self.rates.rate(str(action), str(segment))
                for action, segment in zip(examples["item_id"], examples["segment"], strict=True)
            ],
            dtype=np.float64,
        )

    def predict_defaults(self, examples: pd.DataFrame) -> FloatArray | None:
        return None


def _shrunk_rates(rows: pd.DataFrame, keys: pd.Series[str]) -> dict[str, float]:
    overall = _mean(rows["accepted"])
    grouped = rows["accepted"].astype(float).groupby(keys.to_numpy()).agg(["size", "sum"])
    return {
        str(key): (float(accepted) + SHRINKAGE * overall) / (float(shown) + SHRINKAGE)
        for key, (shown, accepted) in grouped.iterrows()
    }


def _mean(values: pd.Series[bool]) -> float:
    return float(values.astype(float).mean()) if len(values) else 0.05
