"""Bayesian chance that a treatment beats control (has the higher mean).

For 0/1 metrics each variant's rate gets a Beta(1, 1) (uniform) prior and a Beta-Binomial
posterior; the chance is computed exactly, with no sampling. For continuous metrics the
posterior of the difference in means is taken as normal around the observed difference
(flat prior, large-sample approximation).

"Beats" means "has the higher mean"; for a metric where lower is better, the chance that
the treatment is better is one minus this.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

# Past this many successes and failures in both variants the exact sum gets slow (tens of
# milliseconds) while the Beta posteriors are indistinguishable from normals (the two
# answers agree to about 1e-8 at this size).
_EXACT_SUM_LIMIT = 100_000


def chance_to_beat_control_binary(
    treatment_successes: int, treatment_units: int, control_successes: int, control_units: int
) -> float:
    """P(treatment rate > control rate) under independent Beta(1, 1) priors.

    Counts are non-negative integers with successes <= units. Uses the closed form
    P(B > A) = sum_{i < a_B} Beta(a_A + i, b_A + b_B) / ((b_B + i) Beta(1 + i, b_B) Beta(a_A, b_A))
    for posteriors A ~ Beta(a_A, b_A), B ~ Beta(a_B, b_B) (Evan Miller's formula), arranged
    so that the sum is as short as possible. Past millions of successes and failures in
    both variants it switches to the normal approximation of the two Beta posteriors.
    """
    for name, count, units in (
        ("treatment", treatment_successes, treatment_units),
        ("control", control_successes, control_units),
    ):
        if not 0 <= count <= units:
            raise ValueError(f"{name} successes must be in [0, units], got {count} of {units}")
    a_t, b_t = 1 + treatment_successes, 1 + treatment_units - treatment_successes
    a_c, b_c = 1 + control_successes, 1 + control_units - control_successes
    # Four equivalent sums (swap variants, or count failures instead of successes via
    # 1 - rate ~ Beta(b, a)); take the shortest.
    shortest = min(a_t, a_c, b_t, b_c)
    if shortest > _EXACT_SUM_LIMIT:
        return _normal_beta_approximation(a_t, b_t, a_c, b_c)
    if shortest == a_t:
        return _probability_b_beats_a(a_c, b_c, a_t, b_t)
    if shortest == a_c:
        return 1.0 - _probability_b_beats_a(a_t, b_t, a_c, b_c)
    if shortest == b_c:
        return _probability_b_beats_a(b_t, a_t, b_c, a_c)
    return 1.0 - _probability_b_beats_a(b_c, a_c, b_t, a_t)


def chance_to_beat_control_normal(difference: float, standard_error: float) -> float:
    """P(true difference > 0) when the difference's posterior is N(difference, standard_error^2).

    `difference` is treatment minus control in the metric's units. With no spread at all
    (standard_error 0) the answer is 1, 0 or 0.5 by the sign of the difference.
    """
    if standard_error == 0.0:
        return 1.0 if difference > 0 else 0.0 if difference < 0 else 0.5
    return float(special.ndtr(difference / standard_error))  # normal cdf


def _probability_b_beats_a(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    i = np.arange(a_b, dtype=np.float64)
    log_terms = (
        special.betaln(a_a + i, b_a + b_b)
        - np.log(b_b + i)
        - special.betaln(1.0 + i, b_b)
        - special.betaln(a_a, b_a)
    )
    return float(np.clip(np.exp(special.logsumexp(log_terms)), 0.0, 1.0))


def _normal_beta_approximation(a_t: int, b_t: int, a_c: int, b_c: int) -> float:
    def mean_var(a: int, b: int) -> tuple[float, float]:
        total = a + b
        return a / total, a * b / (total**2 * (total + 1))

    mean_t, var_t = mean_var(a_t, b_t)
    mean_c, var_c = mean_var(a_c, b_c)
    return chance_to_beat_control_normal(mean_t - mean_c, math.sqrt(var_t + var_c))
