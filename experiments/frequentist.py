"""Fixed-horizon tests of treatment vs control: Welch t-test, two-proportion z-test, lifts.

All functions take the treatment's and the control's per-unit values (1-D float arrays) and
a two-sided significance level `alpha` (a probability in (0, 1)). They are valid when the
sample size was fixed in advance and the data are looked at once; for repeated looks use
`experiments.sequential`.

Distribution functions are scipy.special's ufuncs (`ndtr`/`ndtri`: normal cdf and
quantile; `stdtr`/`stdtrit`: Student t cdf and quantile): same numbers as scipy.stats, at a
fraction of the per-call cost, which matters when analyses run on every dashboard refresh.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import special

from experiments.units import FloatArray

TestName = Literal["welch_t", "two_proportion_z"]


class Lift(BaseModel):
    """A lift estimate with its two-sided (1 - alpha) confidence interval.

    Absolute lifts are in the metric's units (treatment mean minus control mean); relative
    lifts are fractions of the control mean (0.05 means +5 %).
    """

    model_config = ConfigDict(frozen=True)

    estimate: float
    ci_low: float
    ci_high: float
    standard_error: float


class MeanComparison(BaseModel):
    """The result of a fixed-horizon test of treatment mean vs control mean."""

    model_config = ConfigDict(frozen=True)

    test: TestName
    absolute_lift: Lift
    relative_lift: Lift | None
    p_value: float


def welch_t_test(treatment: FloatArray, control: FloatArray, alpha: float) -> MeanComparison:
    """Welch's unequal-variance t-test and t-interval for the difference in means.

    The relative lift interval uses the delta method with a normal critical value. Both
    arrays need at least 2 values.
    """
    mean_t, mean_c = float(np.mean(treatment)), float(np.mean(control))
    var_mean_t = float(np.var(treatment, ddof=1)) / treatment.size
    var_mean_c = float(np.var(control, ddof=1)) / control.size
    se = math.sqrt(var_mean_t + var_mean_c)
    difference = mean_t - mean_c
    if se == 0.0:
        return _degenerate("welch_t", mean_t, mean_c)
    degrees = (var_mean_t + var_mean_c) ** 2 / (
        var_mean_t**2 / (treatment.size - 1) + var_mean_c**2 / (control.size - 1)
    )
    t_stat = difference / se
    critical = float(special.stdtrit(degrees, 1.0 - alpha / 2.0))
    return MeanComparison(
        test="welch_t",
        absolute_lift=Lift(
            estimate=difference,
            ci_low=difference - critical * se,
            ci_high=difference + critical * se,
            standard_error=se,
        ),
        relative_lift=relative_lift(mean_t, var_mean_t, mean_c, var_mean_c, alpha),
        p_value=float(2.0 * special.stdtr(degrees, -abs(t_stat))),
    )


def two_proportion_z_test(
    treatment: FloatArray, control: FloatArray, alpha: float
) -> MeanComparison:
    """Two-proportion z-test for 0/1 values, with Wald intervals for the lift.

    The p-value uses the pooled rate under the null hypothesis of equal rates; the
    interval for the difference of rates uses the unpooled standard error, and the relative
    lift the delta method.
    """
    n_t, n_c = treatment.size, control.size
    rate_t, rate_c = float(np.mean(treatment)), float(np.mean(control))
    difference = rate_t - rate_c
    pooled = (rate_t * n_t + rate_c * n_c) / (n_t + n_c)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_t + 1.0 / n_c))
    var_mean_t = rate_t * (1.0 - rate_t) / n_t
    var_mean_c = rate_c * (1.0 - rate_c) / n_c
    se = math.sqrt(var_mean_t + var_mean_c)
    if pooled_se == 0.0 or se == 0.0:
        return _degenerate("two_proportion_z", rate_t, rate_c)
    critical = float(special.ndtri(1.0 - alpha / 2.0))
    return MeanComparison(
        test="two_proportion_z",
        absolute_lift=Lift(
            estimate=difference,
            ci_low=difference - critical * se,
            ci_high=difference + critical * se,
            standard_error=se,
        ),
        relative_lift=relative_lift(rate_t, var_mean_t, rate_c, var_mean_c, alpha),
        p_value=float(2.0 * special.ndtr(-abs(difference) / pooled_se)),
    )


def relative_lift(
    mean_treatment: float,
    var_mean_treatment: float,
    mean_control: float,
    var_mean_control: float,
    alpha: float,
) -> Lift | None:
    """Relative lift `mean_treatment / mean_control - 1` with a delta-method interval.

    `var_mean_*` are the variances of the two means (squared standard errors), the two
    means independent. None when the control mean is 0 (the lift is undefined).
    """
    if mean_control == 0.0:
        return None
    ratio = mean_treatment / mean_control
    se = math.sqrt(
        var_mean_treatment / mean_control**2
        + mean_treatment**2 * var_mean_control / mean_control**4
    )
    critical = float(special.ndtri(1.0 - alpha / 2.0))
    return Lift(
        estimate=ratio - 1.0,
        ci_low=ratio - 1.0 - critical * se,
        ci_high=ratio - 1.0 + critical * se,
        standard_error=se,
    )


def _degenerate(test: TestName, mean_t: float, mean_c: float) -> MeanComparison:
    """Both variants without spread: the observed difference is all there is to report."""
    difference = mean_t - mean_c
    point = Lift(estimate=difference, ci_low=difference, ci_high=difference, standard_error=0.0)
    relative = None
    if mean_c != 0.0:
        ratio = mean_t / mean_c - 1.0
        relative = Lift(estimate=ratio, ci_low=ratio, ci_high=ratio, standard_error=0.0)
    return MeanComparison(
        test=test,
        absolute_lift=point,
        relative_lift=relative,
        p_value=1.0 if difference == 0.0 else 0.0,
    )
