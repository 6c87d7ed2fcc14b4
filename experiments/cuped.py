"""CUPED: variance reduction with a pre-period covariate (Deng, Xu, Kohavi, Walker 2013).

Each unit's value y is replaced by y - theta * (x - mean(x)), where x is the unit's
pre-period covariate (measured before exposure, so the treatment cannot have changed it).
Randomisation makes mean(x) equal across variants in expectation, so the adjusted
difference in means estimates the same lift; its variance shrinks by the share of y's
variance that x explains (about corr(x, y)^2).

theta is the pooled within-variant regression slope of y on x: one theta for all
variants, estimated from deviations around each variant's own means so that the treatment
effect itself does not leak into it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from experiments.errors import InvalidUnits
from experiments.units import ExperimentUnits, FloatArray


class CupedAdjustment(BaseModel):
    """How the values were adjusted and how much variance that removed.

    `theta` is in metric units per covariate unit; `covariate_mean` is the mean covariate
    over all units; `variance_reduction` is the fraction (in [0, 1]) of the pooled
    within-variant variance of the metric removed by the adjustment: the variance of each
    lift estimate shrinks by about this fraction.
    """

    model_config = ConfigDict(frozen=True)

    theta: float
    covariate_mean: float
    variance_reduction: float = Field(ge=0, le=1)


def cuped_adjust(experiment: ExperimentUnits) -> tuple[dict[str, FloatArray], CupedAdjustment]:
    """Adjusted values per variant name, and the adjustment made.

    Needs the frame's `covariate` column (`InvalidUnits` otherwise). A covariate without
    spread within variants explains nothing: theta is then 0 and the values are unchanged.
    """
    if not experiment.has_covariate:
        raise InvalidUnits("CUPED needs the pre-period 'covariate' column")
    values = [v.values for v in experiment.variants]
    covariates = [_covariates(v.covariates) for v in experiment.variants]
    cross = sum(
        float(np.dot(y - y.mean(), x - x.mean())) for y, x in zip(values, covariates, strict=True)
    )
    spread = sum(float(np.sum((x - x.mean()) ** 2)) for x in covariates)
    theta = cross / spread if spread > 0 else 0.0
    covariate_mean = float(np.mean(np.concatenate(covariates)))
    adjusted = {
        v.name: y - theta * (x - covariate_mean)
        for v, y, x in zip(experiment.variants, values, covariates, strict=True)
    }
    raw_ss = sum(float(np.sum((y - y.mean()) ** 2)) for y in values)
    adjusted_ss = sum(float(np.sum((y - y.mean()) ** 2)) for y in adjusted.values())
    reduction = 1.0 - adjusted_ss / raw_ss if raw_ss > 0 else 0.0
    return adjusted, CupedAdjustment(
        theta=theta,
        covariate_mean=covariate_mean,
        # Least squares cannot increase the pooled residual variance; clip rounding noise.
        variance_reduction=float(np.clip(reduction, 0.0, 1.0)),
    )


def _covariates(covariates: FloatArray | None) -> FloatArray:
    if covariates is None:  # has_covariate guarantees every variant has them
        raise InvalidUnits("CUPED needs the pre-period 'covariate' column")
    return covariates
