"""Analyse an A/B/n experiment from its per-unit frame: `analyze(units) -> AnalysisResult`.

What is computed (see `experiments.units` for the frame's contract):

- per variant: units, mean (the rate for 0/1 metrics) and standard deviation;
- a sample-ratio-mismatch check against the traffic weights;
- with a `covariate` column, CUPED adjustment of the values (one theta for all variants),
  and the variance reduction it achieved; the lifts below are then on adjusted values;
- each treatment against the control:
  - a 0/1 metric without covariate: two-proportion z-test, Wald interval for the lift,
    and the exact Beta-Binomial chance to beat control (Beta(1, 1) priors);
  - otherwise: Welch t-test and interval, and the normal-approximation chance to beat
    control;
  - the relative lift with a delta-method interval (absent when the control mean is 0);
  - with `sequential=True`, the always-valid (mSPRT) p-value and confidence sequence,
    which then decide `significant`.

`alpha` applies to each comparison separately (no multiple-comparison correction); with
several treatments, divide it by their number for a family-wise guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from experiments.bayesian import chance_to_beat_control_binary, chance_to_beat_control_normal
from experiments.cuped import CupedAdjustment, cuped_adjust
from experiments.errors import InvalidUnits
from experiments.frequentist import Lift, TestName, two_proportion_z_test, welch_t_test
from experiments.sample_ratio import SampleRatioCheck, check_sample_ratio
from experiments.sequential import (
    AlwaysValidComparison,
    always_valid_comparison,
    default_mixture_sd,
)
from experiments.units import FloatArray, VariantSummary, read_units, summarize


class Comparison(BaseModel):
    """One treatment against the control.

    `absolute_lift` is in metric units (treatment minus control mean), `relative_lift` a
    fraction of the control mean; both with fixed-horizon (1 - alpha) intervals.
    `chance_to_beat_control` is the posterior probability that the treatment's mean is
    higher. `always_valid` is present for sequential analyses. `significant` is
    `always_valid.p_value < alpha` in a sequential analysis, `p_value < alpha` otherwise.
    """

    model_config = ConfigDict(frozen=True)

    treatment: str
    control: str
    test: TestName
    absolute_lift: Lift
    relative_lift: Lift | None
    p_value: float = Field(ge=0, le=1)
    chance_to_beat_control: float = Field(ge=0, le=1)
    always_valid: AlwaysValidComparison | None
    significant: bool


class AnalysisResult(BaseModel):
    """Everything `analyze` found; JSON-ready with `.model_dump(mode="json")`.

    `metric` is "binary" when every value is 0 or 1, "continuous" otherwise. Variants and
    comparisons keep the frame's order of first appearance.
    """

    model_config = ConfigDict(frozen=True)

    control: str
    alpha: float
    sequential: bool
    metric: Literal["binary", "continuous"]
    variants: list[VariantSummary]
    sample_ratio: SampleRatioCheck
    cuped: CupedAdjustment | None
    comparisons: list[Comparison]


def analyze(
    units: pd.DataFrame,
    control: str | None = None,
    weights: dict[str, float] | None = None,
    alpha: float = 0.05,
    sequential: bool = False,
) -> AnalysisResult:
    """Analyse a per-unit frame (one row per unit: `variant`, `value`, optional `covariate`).

    `control` defaults to the first variant in order of appearance. `weights` are the
    configured relative traffic weights per variant for the sample-ratio check (equal
    when None). `alpha` is the two-sided significance level of each comparison, in (0, 1).
    `sequential=True` adds always-valid results for analyses looked at more than once.
    Raises `InvalidUnits` naming the column, variant or option at fault.
    """
    if not (isinstance(alpha, float | int) and 0.0 < alpha < 1.0):
        raise InvalidUnits(f"alpha must be a probability in (0, 1), got {alpha!r}")
    experiment = read_units(units, control)
    sample_ratio = check_sample_ratio({v.name: v.units for v in experiment.variants}, weights)
    values: Mapping[str, FloatArray] = {v.name: v.values for v in experiment.variants}
    cuped = None
    if experiment.has_covariate:
        values, cuped = cuped_adjust(experiment)
    # CUPED-adjusted values are no longer 0/1: they are compared as means.
    as_proportions = experiment.is_binary and cuped is None
    mixture_sd = default_mixture_sd(_pooled_sd(values)) if sequential else None
    comparisons = [
        _compare(
            treatment.name,
            values[treatment.name],
            experiment.control,
            values[experiment.control],
            as_proportions=as_proportions,
            alpha=float(alpha),
            mixture_sd=mixture_sd,
        )
        for treatment in experiment.treatments
    ]
    return AnalysisResult(
        control=experiment.control,
        alpha=float(alpha),
        sequential=sequential,
        metric="binary" if experiment.is_binary else "continuous",
        variants=[summarize(v) for v in experiment.variants],
        sample_ratio=sample_ratio,
        cuped=cuped,
        comparisons=comparisons,
    )


def _compare(
    treatment_name: str,
    treatment: FloatArray,
    control_name: str,
    control: FloatArray,
    *,
    as_proportions: bool,
    alpha: float,
    mixture_sd: float | None,
) -> Comparison:
    if as_proportions:
        fixed = two_proportion_z_test(treatment, control, alpha)
        chance = chance_to_beat_control_binary(
            int(treatment.sum()), treatment.size, int(control.sum()), control.size
        )
    else:
        fixed = welch_t_test(treatment, control, alpha)
        chance = chance_to_beat_control_normal(
            fixed.absolute_lift.estimate, fixed.absolute_lift.standard_error
        )
    always_valid = None
    if mixture_sd is not None:
        always_valid = always_valid_comparison(
            fixed.absolute_lift.estimate, fixed.absolute_lift.standard_error**2, alpha, mixture_sd
        )
    deciding_p_value = fixed.p_value if always_valid is None else always_valid.p_value
    return Comparison(
        treatment=treatment_name,
        control=control_name,
        test=fixed.test,
        absolute_lift=fixed.absolute_lift,
        relative_lift=fixed.relative_lift,
        p_value=fixed.p_value,
        chance_to_beat_control=chance,
        always_valid=always_valid,
        significant=deciding_p_value < alpha,
    )


def _pooled_sd(values: Mapping[str, FloatArray]) -> float:
    """Pooled within-variant standard deviation, in metric units."""
    squares = sum(float(np.sum((v - v.mean()) ** 2)) for v in values.values())
    degrees = sum(v.size - 1 for v in values.values())
    return math.sqrt(squares / degrees)
