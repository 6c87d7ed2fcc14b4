"""Bayesian chance to beat control: the exact Beta-Binomial sum against Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.bayesian import chance_to_beat_control_binary, chance_to_beat_control_normal

DRAWS = 400_000


@pytest.mark.parametrize(
    ("treatment_successes", "treatment_units", "control_successes", "control_units"),
    [
        (30, 100, 20, 100),
        (5, 1000, 9, 1000),
        (990, 1000, 985, 1000),  # rates near 1: summed over failures
        (0, 10, 0, 10),
        (50, 60, 3, 70),
        (120, 2500, 100, 2000),
    ],
)
def test_exact_sum_matches_seeded_monte_carlo(
    treatment_successes: int, treatment_units: int, control_successes: int, control_units: int
) -> None:
    rng = np.random.default_rng(31)
    treatment = rng.beta(1 + treatment_successes, 1 + treatment_units - treatment_successes, DRAWS)
    control = rng.beta(1 + control_successes, 1 + control_units - control_successes, DRAWS)
    monte_carlo = float(np.mean(treatment > control))

    exact = chance_to_beat_control_binary(
        treatment_successes, treatment_units, control_successes, control_units
    )

    tolerance = 4 * np.sqrt(max(monte_carlo * (1 - monte_carlo), 1e-6) / DRAWS)
    assert exact == pytest.approx(monte_carlo, abs=tolerance)


def test_swapping_variants_gives_the_complement() -> None:
    forward = chance_to_beat_control_binary(40, 400, 55, 420)
    backward = chance_to_beat_control_binary(55, 420, 40, 400)

    assert forward + backward == pytest.approx(1.0)
    assert chance_to_beat_control_binary(7, 70, 7, 70) == pytest.approx(0.5)


def test_large_counts_fall_back_to_the_normal_approximation_smoothly() -> None:
    # Either side of 100,000 successes: exact sum below, normal approximation above.
    exact = chance_to_beat_control_binary(99_000, 400_000, 98_500, 400_000)
    approximated = chance_to_beat_control_binary(101_000, 404_000, 100_500, 404_000)

    assert 0.85 < exact < 0.95
    assert approximated == pytest.approx(exact, abs=0.005)


def test_normal_chance_is_the_posterior_probability_of_a_positive_difference() -> None:
    assert chance_to_beat_control_normal(1.96, 1.0) == pytest.approx(0.975, abs=1e-3)
    assert chance_to_beat_control_normal(0.0, 2.0) == pytest.approx(0.5)
    assert chance_to_beat_control_normal(-1.0, 0.0) == 0.0


def test_impossible_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="treatment successes"):
        chance_to_beat_control_binary(11, 10, 1, 10)
