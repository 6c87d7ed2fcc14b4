"""Off-policy evaluation: the value a new (target) policy would have had, from logs of the
decisions the current (logging) policy took.

Every estimator takes, per logged decision i (1-D arrays of equal length n >= 2):

- `rewards`: the observed outcome of the logged action (e.g. 1 = clicked, or EUR);
- `logged_propensities`: the probability, in (0, 1], with which the logging policy took
  the logged action (as logged with the decision);
- `target_propensities`: the probability, in [0, 1], with which the target policy would
  take the logged action in the same context (0 when it never would).

and returns a `PolicyValueEstimate`: the estimated mean reward per decision under the
target policy, in the rewards' units, with a normal (Wald) confidence interval from the
per-decision influence values. The estimates assume the logged propensities are the true
ones and that the target policy only takes actions the logging policy could take.

The effective sample size is Kish's (sum w)^2 / sum w^2 of the importance weights
w = target / logged: how many on-policy decisions the logs are worth. A small one warns
that a few heavily weighted decisions carry the estimate and its normal interval.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from scipy import special

from experiments.errors import InvalidLogs

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike


class PolicyValueEstimate(BaseModel):
    """An estimated policy value (mean reward per decision, rewards' units) with its
    (1 - alpha) confidence interval, the number of logged decisions `n` and the effective
    sample size of the importance weights."""

    model_config = ConfigDict(frozen=True)

    estimator: Literal["ips", "snips", "dr"]
    value: float
    ci_low: float
    ci_high: float
    standard_error: float = Field(ge=0)
    n: int = Field(ge=2)
    effective_sample_size: float = Field(ge=0)


def ips(
    rewards: ArrayLike,
    logged_propensities: ArrayLike,
    target_propensities: ArrayLike,
    *,
    alpha: float = 0.05,
) -> PolicyValueEstimate:
    """Inverse propensity scoring: mean of w_i * r_i. Unbiased; high variance when the
    target policy favours actions the logging policy rarely took."""
    reward, weight = _weighted_logs(rewards, logged_propensities, target_propensities)
    return _estimate("ips", weight * reward, weight, alpha)


def snips(
    rewards: ArrayLike,
    logged_propensities: ArrayLike,
    target_propensities: ArrayLike,
    *,
    alpha: float = 0.05,
) -> PolicyValueEstimate:
    """Self-normalised IPS: sum(w_i r_i) / sum(w_i). Slightly biased, usually much less
    variable than IPS; the interval is the delta-method (linearised ratio) one. Raises
    `InvalidLogs` when the target policy takes none of the logged actions (sum w = 0)."""
    reward, weight = _weighted_logs(rewards, logged_propensities, target_propensities)
    mean_weight = float(weight.mean())
    if mean_weight == 0.0:
        raise InvalidLogs(
            "target_propensities are all 0: the target policy takes none of the logged "
            "actions, so SNIPS is undefined"
        )
    value = float(np.sum(weight * reward) / np.sum(weight))
    # Linearised ratio: the influence values average to exactly 0, so value + influence
    # has mean `value` and the standard error of the ratio estimator.
    influence = weight * (reward - value) / mean_weight
    return _estimate("snips", value + influence, weight, alpha)


def dr(
    rewards: ArrayLike,
    logged_propensities: ArrayLike,
    target_propensities: ArrayLike,
    reward_hat_logged: ArrayLike,
    reward_hat_target_expected: ArrayLike,
    *,
    alpha: float = 0.05,
) -> PolicyValueEstimate:
    """Doubly robust: mean of q_i + w_i * (r_i - rhat_i).

    `reward_hat_logged` is a reward model's prediction for the logged action,
    `reward_hat_target_expected` its prediction averaged over the target policy's action
    distribution in the same context (sum_a pi(a | x_i) rhat(x_i, a)), both in the rewards'
    units. Unbiased when either the propensities or the reward model are right, and less
    variable than IPS when the model is good.
    """
    reward, weight = _weighted_logs(rewards, logged_propensities, target_propensities)
    predicted_logged = _finite_vector("reward_hat_logged", reward_hat_logged, reward.size)
    predicted_target = _finite_vector(
        "reward_hat_target_expected", reward_hat_target_expected, reward.size
    )
    return _estimate("dr", predicted_target + weight * (reward - predicted_logged), weight, alpha)


def _weighted_logs(
    rewards: ArrayLike, logged_propensities: ArrayLike, target_propensities: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Validated rewards and importance weights target / logged."""
    reward = _finite_vector("rewards", rewards, None)
    if reward.size < 2:
        raise InvalidLogs(f"rewards needs at least 2 logged decisions, got {reward.size}")
    logged = _finite_vector("logged_propensities", logged_propensities, reward.size)
    target = _finite_vector("target_propensities", target_propensities, reward.size)
    if not ((logged > 0) & (logged <= 1)).all():
        bad = logged[~((logged > 0) & (logged <= 1))][0]
        raise InvalidLogs(f"logged_propensities must be in (0, 1], found {bad}")
    if not ((target >= 0) & (target <= 1)).all():
        bad = target[~((target >= 0) & (target <= 1))][0]
        raise InvalidLogs(f"target_propensities must be in [0, 1], found {bad}")
    return reward, target / logged


def _finite_vector(name: str, values: ArrayLike, size: int | None) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidLogs(f"{name} must be numbers: {error}") from error
    if array.ndim != 1:
        raise InvalidLogs(f"{name} must be 1-D, got shape {array.shape}")
    if size is not None and array.size != size:
        raise InvalidLogs(f"{name} has {array.size} entries, rewards has {size}")
    if not np.isfinite(array).all():
        raise InvalidLogs(
            f"{name} has {int((~np.isfinite(array)).sum())} missing or non-finite entries"
        )
    return array


def _estimate(
    estimator: Literal["ips", "snips", "dr"],
    per_decision: FloatArray,
    weight: FloatArray,
    alpha: float,
) -> PolicyValueEstimate:
    """Mean of per-decision values (or of value + influence) with a Wald interval."""
    if not 0.0 < alpha < 1.0:
        raise InvalidLogs(f"alpha must be in (0, 1), got {alpha}")
    n = per_decision.size
    value = float(per_decision.mean())
    standard_error = float(per_decision.std(ddof=1)) / math.sqrt(n)
    critical = float(special.ndtri(1.0 - alpha / 2.0))  # normal quantile
    squares = float(np.sum(weight**2))
    return PolicyValueEstimate(
        estimator=estimator,
        value=value,
        ci_low=value - critical * standard_error,
        ci_high=value + critical * standard_error,
        standard_error=standard_error,
        n=n,
        effective_sample_size=float(weight.sum()) ** 2 / squares if squares > 0 else 0.0,
    )
