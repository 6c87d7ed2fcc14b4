"""Off-policy estimators: contracts, and a simulated bandit whose true policy value is known."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from experiments.errors import InvalidLogs
from experiments.ope import PolicyValueEstimate, dr, ips, snips

FloatArray = npt.NDArray[np.float64]

# A small world: 4 customer segments, 3 actions (e.g. offer, reminder, nothing), known
# click probabilities per segment and action.
SEGMENT_SHARES = np.array([0.4, 0.3, 0.2, 0.1])
CLICK_PROBABILITY = np.array(
    [[0.10, 0.05, 0.02], [0.04, 0.12, 0.03], [0.20, 0.10, 0.05], [0.02, 0.03, 0.15]]
)
LOGGING_POLICY = np.array([[0.5, 0.3, 0.2], [0.3, 0.4, 0.3], [0.4, 0.4, 0.2], [0.3, 0.3, 0.4]])
TARGET_POLICY = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
TRUE_TARGET_VALUE = float(SEGMENT_SHARES @ np.sum(TARGET_POLICY * CLICK_PROBABILITY, axis=1))


@dataclass(frozen=True)
class Logs:
    rewards: FloatArray
    logged_propensities: FloatArray
    target_propensities: FloatArray
    segments: npt.NDArray[np.int64]
    actions: npt.NDArray[np.int64]


def simulate_logs(rng: np.random.Generator, n: int = 4000) -> Logs:
    segments = rng.choice(len(SEGMENT_SHARES), size=n, p=SEGMENT_SHARES)
    uniforms = rng.random(n)[:, None]
    actions = (uniforms > np.cumsum(LOGGING_POLICY[segments], axis=1)).sum(axis=1)
    rewards = rng.binomial(1, CLICK_PROBABILITY[segments, actions]).astype(np.float64)
    return Logs(
        rewards=rewards,
        logged_propensities=LOGGING_POLICY[segments, actions],
        target_propensities=TARGET_POLICY[segments, actions],
        segments=segments,
        actions=actions,
    )


def dr_with(reward_model: FloatArray) -> Callable[[Logs], PolicyValueEstimate]:
    """DR using `reward_model[segment, action]` as the predicted click probability."""

    def estimate(logs: Logs) -> PolicyValueEstimate:
        return dr(
            logs.rewards,
            logs.logged_propensities,
            logs.target_propensities,
            reward_model[logs.segments, logs.actions],
            np.sum(TARGET_POLICY[logs.segments] * reward_model[logs.segments], axis=1),
        )

    return estimate


ESTIMATORS: dict[str, Callable[[Logs], PolicyValueEstimate]] = {
    "ips": lambda logs: ips(logs.rewards, logs.logged_propensities, logs.target_propensities),
    "snips": lambda logs: snips(logs.rewards, logs.logged_propensities, logs.target_propensities),
    "dr_right_model": dr_with(CLICK_PROBABILITY),
    "dr_wrong_model": dr_with(np.full_like(CLICK_PROBABILITY, 0.3)),
}


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_interval_covers_the_true_policy_value_95_percent_of_the_time(name: str) -> None:
    # 200 seeded repetitions: see test_ab_validity for why [0.92, 0.98].
    rng = np.random.default_rng(51)
    estimates = [ESTIMATORS[name](simulate_logs(rng)) for _ in range(200)]

    coverage = np.mean([e.ci_low <= TRUE_TARGET_VALUE <= e.ci_high for e in estimates])
    values = np.array([e.value for e in estimates])

    assert 0.92 <= coverage <= 0.98
    assert abs(values.mean() - TRUE_TARGET_VALUE) < 3 * values.std() / np.sqrt(len(values))


def test_a_good_reward_model_narrows_the_doubly_robust_interval() -> None:
    # Spend in EUR that the segment and action mostly explain: the reward model removes
    # the importance weights' variance and leaves only the small residual noise.
    rng = np.random.default_rng(52)
    logs = simulate_logs(rng)
    expected_spend = 100.0 * CLICK_PROBABILITY
    spend = expected_spend[logs.segments, logs.actions] + rng.normal(0.0, 1.0, logs.rewards.size)
    true_value = float(SEGMENT_SHARES @ np.sum(TARGET_POLICY * expected_spend, axis=1))

    with_model = dr(
        spend,
        logs.logged_propensities,
        logs.target_propensities,
        expected_spend[logs.segments, logs.actions],
        np.sum(TARGET_POLICY[logs.segments] * expected_spend[logs.segments], axis=1),
    )
    without = ips(spend, logs.logged_propensities, logs.target_propensities)

    assert with_model.standard_error < 0.5 * without.standard_error
    assert with_model.ci_low <= true_value <= with_model.ci_high


def test_on_policy_logs_give_the_plain_mean_and_full_effective_sample_size() -> None:
    logs = simulate_logs(np.random.default_rng(53))

    estimate = ips(logs.rewards, logs.logged_propensities, logs.logged_propensities)

    assert estimate.value == pytest.approx(logs.rewards.mean())
    assert estimate.effective_sample_size == pytest.approx(logs.rewards.size)
    assert estimate.n == logs.rewards.size


def test_effective_sample_size_shrinks_as_policies_diverge() -> None:
    logs = simulate_logs(np.random.default_rng(54))

    estimate = snips(logs.rewards, logs.logged_propensities, logs.target_propensities)

    assert 0.2 * estimate.n < estimate.effective_sample_size < 0.9 * estimate.n


def test_accepts_lists_and_reports_the_estimator() -> None:
    estimate = snips([1, 0, 1, 0], [0.5, 0.5, 0.25, 0.25], [1.0, 0.0, 0.5, 0.5])

    assert estimate.estimator == "snips"
    assert estimate.value == pytest.approx((2 + 2) / (2 + 0 + 2 + 2))


GOOD = np.array([1.0, 0.0, 1.0])
HALF = np.array([0.5, 0.5, 0.5])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((GOOD, HALF[:2], HALF), "logged_propensities has 2 entries"),
        ((GOOD, HALF, np.ones((3, 1))), "target_propensities must be 1-D"),
        ((GOOD, np.array([0.5, 0.0, 0.5]), HALF), r"logged_propensities must be in \(0, 1\]"),
        ((GOOD, np.array([0.5, 1.5, 0.5]), HALF), r"logged_propensities must be in \(0, 1\]"),
        ((GOOD, HALF, np.array([0.5, -0.1, 0.5])), r"target_propensities must be in \[0, 1\]"),
        ((np.array([1.0, np.nan, 0.0]), HALF, HALF), "rewards has 1 missing"),
        ((np.array([1.0]), HALF[:1], HALF[:1]), "at least 2"),
        ((np.array(["a", "b", "c"]), HALF, HALF), "rewards must be numbers"),
    ],
)
def test_bad_logs_are_refused_naming_the_argument(
    arguments: tuple[FloatArray, FloatArray, FloatArray], message: str
) -> None:
    for estimator in (ips, snips):
        with pytest.raises(InvalidLogs, match=message):
            estimator(*arguments)
    with pytest.raises(InvalidLogs, match=message):
        dr(*arguments, HALF[: arguments[0].size], HALF[: arguments[0].size])


def test_dr_checks_its_reward_predictions() -> None:
    with pytest.raises(InvalidLogs, match="reward_hat_target_expected has 2 entries"):
        dr(GOOD, HALF, HALF, HALF, HALF[:2])
    with pytest.raises(InvalidLogs, match="reward_hat_logged has 1 missing"):
        dr(GOOD, HALF, HALF, np.array([0.1, np.inf, 0.1]), HALF)


def test_snips_is_undefined_when_the_target_never_takes_a_logged_action() -> None:
    with pytest.raises(InvalidLogs, match="SNIPS is undefined"):
        snips(GOOD, HALF, np.zeros(3))


def test_invalid_logs_is_a_value_error() -> None:
    assert issubclass(InvalidLogs, ValueError)
