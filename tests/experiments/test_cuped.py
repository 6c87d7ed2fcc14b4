"""CUPED: a correlated pre-period covariate shrinks the variance, and nothing else changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.analysis import analyze
from experiments.cuped import cuped_adjust
from experiments.errors import InvalidUnits
from experiments.units import read_units

TRUE_LIFT = 2.0


def spend_with_history(rng: np.random.Generator, correlation: float, n: int = 2000) -> pd.DataFrame:
    """Spend this month (EUR) whose correlation with last month's spend is `correlation`."""
    variant = np.where(rng.random(n) < 0.5, "control", "treatment")
    last_month = rng.normal(100.0, 20.0, size=n)
    noise = rng.normal(0.0, 20.0, size=n)
    this_month = (
        100.0
        + correlation * (last_month - 100.0)
        + np.sqrt(1 - correlation**2) * noise
        + np.where(variant == "treatment", TRUE_LIFT, 0.0)
    )
    return pd.DataFrame({"variant": variant, "value": this_month, "covariate": last_month})


def test_a_correlated_covariate_removes_about_rho_squared_of_the_variance() -> None:
    units = spend_with_history(np.random.default_rng(3), correlation=0.7, n=8000)

    adjusted = analyze(units)
    raw = analyze(units.drop(columns="covariate"))

    assert adjusted.cuped is not None
    assert adjusted.cuped.theta == pytest.approx(0.7, abs=0.05)
    assert adjusted.cuped.variance_reduction == pytest.approx(0.49, abs=0.04)
    width = adjusted.comparisons[0].absolute_lift.standard_error
    raw_width = raw.comparisons[0].absolute_lift.standard_error
    assert width / raw_width == pytest.approx(np.sqrt(1 - 0.49), abs=0.04)


def test_an_unrelated_covariate_changes_next_to_nothing() -> None:
    units = spend_with_history(np.random.default_rng(4), correlation=0.0, n=8000)

    result = analyze(units)

    assert result.cuped is not None
    assert result.cuped.variance_reduction < 0.005
    assert abs(result.cuped.theta) < 0.05


def test_over_repetitions_cuped_is_unbiased_less_variable_and_covers() -> None:
    rng = np.random.default_rng(5)
    raw_lifts, cuped_lifts, covered = [], [], []
    for _ in range(200):
        units = spend_with_history(rng, correlation=0.8)
        cuped = analyze(units, control="control").comparisons[0].absolute_lift
        raw = analyze(units.drop(columns="covariate"), control="control")
        raw_lifts.append(raw.comparisons[0].absolute_lift.estimate)
        cuped_lifts.append(cuped.estimate)
        covered.append(cuped.ci_low <= TRUE_LIFT <= cuped.ci_high)

    # Variance ratio expected 1 - 0.8^2 = 0.36; its spread across seeds is about 0.03.
    assert np.var(cuped_lifts) / np.var(raw_lifts) == pytest.approx(0.36, abs=0.1)
    assert abs(np.mean(cuped_lifts) - TRUE_LIFT) < 3 * np.std(cuped_lifts) / np.sqrt(200)
    assert 0.92 <= np.mean(covered) <= 0.98


def test_theta_is_one_slope_pooled_within_variants() -> None:
    # Within each variant y = 2x + noise, but the treatment's x and y are both shifted:
    # an overall regression would mix that shift into the slope.
    rng = np.random.default_rng(6)
    x = rng.normal(size=1000)
    shift = np.repeat([0.0, 5.0], 500)
    units = pd.DataFrame(
        {
            "variant": np.repeat(["control", "treatment"], 500),
            "covariate": x + shift,
            "value": 2.0 * x - 3.0 * shift + rng.normal(scale=0.1, size=1000),
        }
    )

    _, adjustment = cuped_adjust(read_units(units))

    assert adjustment.theta == pytest.approx(2.0, abs=0.02)
    assert adjustment.variance_reduction > 0.99


def test_binary_metric_with_covariate_is_compared_as_adjusted_means() -> None:
    rng = np.random.default_rng(7)
    last_month = rng.binomial(1, 0.3, size=4000)
    converted = rng.binomial(1, np.where(last_month == 1, 0.5, 0.1))
    units = pd.DataFrame(
        {"variant": np.tile(["A", "B"], 2000), "value": converted, "covariate": last_month}
    )

    result = analyze(units)

    assert result.metric == "binary"
    assert result.comparisons[0].test == "welch_t"
    assert result.cuped is not None
    assert result.cuped.variance_reduction > 0.1
    # Raw summaries stay rates: adjustment only enters the comparisons.
    assert result.variants[0].mean == pytest.approx(converted[::2].mean())


def test_cuped_without_covariate_is_refused() -> None:
    units = pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 4]})

    with pytest.raises(InvalidUnits, match="covariate"):
        cuped_adjust(read_units(units))


def test_a_constant_covariate_leaves_values_unchanged() -> None:
    units = pd.DataFrame(
        {"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 5], "covariate": [7.0] * 4}
    )

    adjusted, adjustment = cuped_adjust(read_units(units))

    assert adjustment.theta == 0.0
    assert adjustment.variance_reduction == 0.0
    np.testing.assert_array_equal(adjusted["B"], [3.0, 5.0])
