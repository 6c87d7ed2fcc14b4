"""Always-valid inference for teams that look at results before the planned end.

A fixed-horizon p-value checked at every look rejects a true null far more often than
alpha (10 looks at alpha = 0.05 give roughly a 15-20 % false-positive rate). The mixture
sequential probability ratio test (mSPRT; Johari, Pekelis, Walsh 2017) and its confidence
sequence (the normal-mixture boundary of Howard, Ramdas, McAuliffe, Sekhon 2021) stay
valid however often and whenever one looks: the chance that the always-valid p-value *ever*
drops to alpha under no effect is at most alpha, and the confidence sequence covers the
true lift at all looks simultaneously with probability at least 1 - alpha.

The statistic is the observed difference in means D with plug-in variance V (the squared
standard error). Under a normal mixture N(0, tau^2) over the true lift, the likelihood
ratio against "no lift" is

    Lambda = sqrt(V / (V + tau^2)) * exp(D^2 tau^2 / (2 V (V + tau^2)))

and the always-valid p-value is min(1, 1 / Lambda). Inverting the test gives the interval
D +- sqrt(V (V + tau^2) / tau^2 * (2 log(1 / alpha) + log((V + tau^2) / V))).

`tau` (the mixture standard deviation, in metric units) says what size of lift is
plausible: power is best for lifts near it and the guarantee holds for any value. The
price of validity is a wider interval than the fixed-horizon one at every look.
Callers that keep the p-values of earlier looks should report their running minimum.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

# Default mixture standard deviation, as a fraction of the metric's pooled per-unit
# standard deviation: lifts of about a tenth of a standard deviation are typical of
# product experiments and the boundary depends on tau only logarithmically.
DEFAULT_MIXTURE_SD_PER_UNIT_SD = 0.1


class AlwaysValidComparison(BaseModel):
    """Always-valid p-value and confidence-sequence interval for the absolute lift.

    The interval is in the metric's units (treatment mean minus control mean) at level
    1 - alpha; `mixture_sd` is the tau used, in the same units.
    """

    model_config = ConfigDict(frozen=True)

    p_value: float = Field(ge=0, le=1)
    ci_low: float
    ci_high: float
    mixture_sd: float = Field(gt=0)


def always_valid_comparison(
    difference: float, variance: float, alpha: float, mixture_sd: float
) -> AlwaysValidComparison:
    """mSPRT p-value and normal-mixture confidence sequence for a difference in means.

    `difference` is treatment mean minus control mean, `variance` its squared standard
    error (>= 0), `mixture_sd` tau (> 0), all in metric units; `alpha` in (0, 1). With no
    spread at all (variance 0) the observed difference is certain.
    """
    if not mixture_sd > 0:
        raise ValueError(f"mixture_sd must be positive, got {mixture_sd}")
    if variance < 0:
        raise ValueError(f"variance must be non-negative, got {variance}")
    if variance == 0.0:
        return AlwaysValidComparison(
            p_value=1.0 if difference == 0.0 else 0.0,
            ci_low=difference,
            ci_high=difference,
            mixture_sd=mixture_sd,
        )
    tau2 = mixture_sd**2
    log_likelihood_ratio = 0.5 * math.log(variance / (variance + tau2)) + difference**2 * tau2 / (
        2.0 * variance * (variance + tau2)
    )
    radius = math.sqrt(
        variance
        * (variance + tau2)
        / tau2
        * (2.0 * math.log(1.0 / alpha) + math.log((variance + tau2) / variance))
    )
    return AlwaysValidComparison(
        p_value=math.exp(-max(0.0, log_likelihood_ratio)),
        ci_low=difference - radius,
        ci_high=difference + radius,
        mixture_sd=mixture_sd,
    )


def default_mixture_sd(pooled_sd: float) -> float:
    """The default tau for a metric whose pooled per-unit standard deviation is `pooled_sd`.

    Falls back to 1 metric unit when the metric has no spread (tau must be positive).
    """
    tau = DEFAULT_MIXTURE_SD_PER_UNIT_SD * pooled_sd
    return tau if tau > 0 else 1.0
