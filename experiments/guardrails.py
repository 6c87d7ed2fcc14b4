"""Guardrails: metrics a treatment must not make worse (complaint rate, call-centre contacts,
opt-outs), judged with the same analysis as the primary metric.

For each guardrail and treatment, the lift interval (the always-valid one in a sequential
analysis) is turned into an interval for the *harm*: the lift itself when lower is better,
minus the lift when higher is better. With `margin` the largest harm the business accepts
(metric units, >= 0):

- pass: the whole harm interval is at or below the margin (harm beyond it is ruled out);
- fail: the whole harm interval is above the margin (harm beyond it is established);
- inconclusive: the interval straddles the margin: more data is needed.

With the default margin 0 a guardrail passes only when the treatment is shown to be no
worse, i.e. significantly better; set the margin to the harm you could live with. The
two-sided (1 - alpha) interval makes each one-sided verdict a test at level alpha / 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict

from experiments.analysis import Comparison, analyze
from experiments.errors import InvalidUnits

Direction = Literal["higher_is_better", "lower_is_better"]
Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Guardrail:
    """A guardrail metric: its per-unit frame (as for `analyze`), which direction is
    better, and the largest acceptable harm in metric units (e.g. 0.001 for +0.1
    percentage point of complaint rate)."""

    units: pd.DataFrame
    direction: Direction
    margin: float = 0.0


class GuardrailVerdict(BaseModel):
    """One guardrail for one treatment: the harm interval (metric units, positive = worse)
    and the verdict."""

    model_config = ConfigDict(frozen=True)

    metric: str
    treatment: str
    direction: Direction
    margin: float
    harm: float
    harm_ci_low: float
    harm_ci_high: float
    verdict: Verdict


class GuardrailReport(BaseModel):
    """All verdicts, and the overall one: fail if any fails, pass if all pass, else
    inconclusive."""

    model_config = ConfigDict(frozen=True)

    verdicts: list[GuardrailVerdict]
    overall: Verdict


def judge_guardrails(
    guardrails: Mapping[str, Guardrail],
    control: str | None = None,
    weights: dict[str, float] | None = None,
    alpha: float = 0.05,
    sequential: bool = False,
) -> GuardrailReport:
    """Judge each guardrail (by metric name) for each treatment against the control.

    Every frame is analysed with `analyze(units, control, weights, alpha, sequential)`;
    `InvalidUnits` is raised for an empty mapping, a negative margin, or a frame `analyze`
    rejects (the message then names the metric).
    """
    if not guardrails:
        raise InvalidUnits("no guardrail metrics to judge")
    verdicts: list[GuardrailVerdict] = []
    for metric, guardrail in guardrails.items():
        if not guardrail.margin >= 0:
            raise InvalidUnits(f"guardrail {metric!r}: margin must be >= 0, got {guardrail.margin}")
        try:
            result = analyze(guardrail.units, control, weights, alpha, sequential)
        except InvalidUnits as error:
            raise InvalidUnits(f"guardrail {metric!r}: {error}") from error
        verdicts.extend(_judge(metric, guardrail, c) for c in result.comparisons)
    outcomes = {v.verdict for v in verdicts}
    overall: Verdict = (
        "fail" if "fail" in outcomes else "pass" if outcomes == {"pass"} else "inconclusive"
    )
    return GuardrailReport(verdicts=verdicts, overall=overall)


def _judge(metric: str, guardrail: Guardrail, comparison: Comparison) -> GuardrailVerdict:
    lift = comparison.absolute_lift
    low, high = lift.ci_low, lift.ci_high
    if comparison.always_valid is not None:
        low, high = comparison.always_valid.ci_low, comparison.always_valid.ci_high
    sign = 1.0 if guardrail.direction == "lower_is_better" else -1.0
    harm_low, harm_high = sorted((sign * low, sign * high))
    verdict: Verdict = (
        "pass"
        if harm_high <= guardrail.margin
        else "fail"
        if harm_low > guardrail.margin
        else "inconclusive"
    )
    return GuardrailVerdict(
        metric=metric,
        treatment=comparison.treatment,
        direction=guardrail.direction,
        margin=guardrail.margin,
        harm=sign * lift.estimate,
        harm_ci_low=harm_low,
        harm_ci_high=harm_high,
        verdict=verdict,
    )
