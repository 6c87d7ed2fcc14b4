"""Always-valid inference: peeking at every interim look keeps the error rates promised.

Each repetition is one experiment looked at LOOKS times as its units arrive (every look
re-analyses all units so far, as a team refreshing a dashboard would). A repetition is a
false positive if *any* look declares significance. With 200 repetitions the observed
rate has a standard deviation of 1.5 points around 0.05, hence the tolerance of 2 points.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from experiments.analysis import Comparison, analyze
from experiments.sequential import always_valid_comparison

REPETITIONS = 200
LOOKS = 10
UNITS_PER_LOOK = 200  # per variant


def peeked_comparisons(rng: np.random.Generator, lift: float, binary: bool) -> list[Comparison]:
    """One experiment's comparisons at each of its looks."""
    size = LOOKS * UNITS_PER_LOOK
    if binary:
        control = rng.binomial(1, 0.2, size).astype(float)
        treatment = rng.binomial(1, 0.2 + lift, size).astype(float)
    else:
        control = rng.normal(50.0, 10.0, size)
        treatment = rng.normal(50.0 + lift, 10.0, size)
    comparisons = []
    for look in range(1, LOOKS + 1):
        seen = look * UNITS_PER_LOOK
        units = pd.DataFrame(
            {
                "variant": ["control"] * seen + ["treatment"] * seen,
                "value": np.concatenate([control[:seen], treatment[:seen]]),
            }
        )
        comparisons.append(analyze(units, sequential=True).comparisons[0])
    return comparisons


@pytest.mark.parametrize("binary", [False, True], ids=["spend", "conversion"])
def test_peeking_ten_times_keeps_false_positives_at_most_alpha(binary: bool) -> None:
    rng = np.random.default_rng(21)
    experiments = [peeked_comparisons(rng, lift=0.0, binary=binary) for _ in range(REPETITIONS)]

    always_valid_rate = np.mean([any(c.significant for c in looks) for looks in experiments])
    naive_rate = np.mean([any(c.p_value < 0.05 for c in looks) for looks in experiments])

    assert always_valid_rate <= 0.05 + 0.02
    # The problem being solved is real: the fixed-horizon p-value, peeked at, fails often.
    assert naive_rate > 0.10


def test_confidence_sequence_covers_the_true_lift_at_every_look() -> None:
    rng = np.random.default_rng(22)
    true_lift = 1.0

    covered_throughout = [
        all(
            c.always_valid is not None
            and c.always_valid.ci_low <= true_lift <= c.always_valid.ci_high
            for c in peeked_comparisons(rng, lift=true_lift, binary=False)
        )
        for _ in range(REPETITIONS)
    ]

    assert np.mean(covered_throughout) >= 0.95 - 0.02


def test_a_real_lift_is_eventually_found() -> None:
    rng = np.random.default_rng(23)

    found = [
        any(
            c.significant and c.absolute_lift.estimate > 0
            for c in peeked_comparisons(rng, 1.5, False)
        )
        for _ in range(50)
    ]

    # 2000 units per arm, lift 0.15 standard deviations: fixed-horizon z about 4.7.
    assert np.mean(found) > 0.9


def test_p_value_is_the_inverse_mixture_likelihood_ratio() -> None:
    difference, variance, tau = 0.3, 0.01, 0.2

    result = always_valid_comparison(difference, variance, alpha=0.05, mixture_sd=tau)

    likelihood_ratio = math.sqrt(variance / (variance + tau**2)) * math.exp(
        difference**2 * tau**2 / (2 * variance * (variance + tau**2))
    )
    assert result.p_value == pytest.approx(1 / likelihood_ratio)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_interval_ends_are_where_the_p_value_reaches_alpha(alpha: float) -> None:
    difference, variance, tau = 0.3, 0.01, 0.2

    interval = always_valid_comparison(difference, variance, alpha=alpha, mixture_sd=tau)

    for end in (interval.ci_low, interval.ci_high):
        shifted = always_valid_comparison(difference - end, variance, alpha=alpha, mixture_sd=tau)
        assert shifted.p_value == pytest.approx(alpha)


def test_no_evidence_gives_p_value_one() -> None:
    assert always_valid_comparison(0.0, 0.04, alpha=0.05, mixture_sd=0.1).p_value == 1.0


@pytest.mark.parametrize(("variance", "tau"), [(-1.0, 0.1), (0.01, 0.0)])
def test_bad_arguments_are_refused(variance: float, tau: float) -> None:
    with pytest.raises(ValueError, match=r"variance|mixture_sd"):
        always_valid_comparison(0.1, variance, alpha=0.05, mixture_sd=tau)
