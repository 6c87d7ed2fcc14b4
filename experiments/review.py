"""The review of an experiment: everything a reviewer needs to decide, from its joined logs.

`review_experiment(experiment, logs, at=...)` returns an `ExperimentReview`: per variant the
units, exposures, conversions and the metric with its interval; the analysis of the primary
metric (frequentist and Bayesian, CUPED with the pre-period covariate, always-valid when the
experiment is sequential); the sample-ratio check against the traffic weights; the
guardrails; the metric over time per variant; the off-policy estimate of a candidate policy
where one is given; and the verdict in plain words (`experiments.verdict`).
`experiments.report` renders it as HTML.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import special

from experiments.analysis import AnalysisResult, analyze
from experiments.definitions import LOWER_IS_BETTER, Experiment, GuardrailSpec
from experiments.errors import InvalidUnits
from experiments.guardrails import Guardrail, GuardrailVerdict, judge_guardrails
from experiments.logs import ExperimentLogs, LogSource, join_experiment_logs
from experiments.offpolicy import CandidatePolicy, OffPolicyEvaluation, evaluate_candidate
from experiments.sample_ratio import SampleRatioCheck, check_sample_ratio
from experiments.verdict import Verdict, judge

#: Points of the metric-over-time series per variant.
SERIES_POINTS = 30
#: Events (complaints, opt-outs) a rate guardrail needs before it is judged.
MIN_GUARDRAIL_EVENTS = 10
#: The guardrail columns of the per-unit frame.
_GUARDRAIL_COLUMNS = {
    "complaint_rate": "complaint",
    "opt_out_rate": "opt_out",
    "feedback_score": "feedback_score",
}

Status = Literal["scheduled", "running", "stopped"]


class VariantSummaryRow(BaseModel):
    """One row of the summary table. `mean` is the metric per unit (a rate for conversion,
    EUR for value), with its (1 - alpha) interval; `conversions` counts converted units
    (conversion) or conversions (value)."""

    model_config = ConfigDict(frozen=True)

    variant: str
    description: str
    weight: float
    personalisation: bool
    model_alias: str
    units: int
    exposures: int
    conversions: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None


class GuardrailRow(BaseModel):
    """A guardrail's mean per variant (None without data) and its verdicts per treatment."""

    model_config = ConfigDict(frozen=True)

    metric: str
    lower_is_better: bool
    margin: float
    means: dict[str, float | None]
    verdicts: list[GuardrailVerdict]
    note: str | None = None


class SeriesPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    units: int
    value: float


class VariantSeries(BaseModel):
    """The cumulative metric per unit of a variant over time (units exposed so far)."""

    model_config = ConfigDict(frozen=True)

    variant: str
    points: list[SeriesPoint]


class ExperimentReview(BaseModel):
    """The whole review; JSON-ready with `.model_dump(mode="json")`."""

    model_config = ConfigDict(frozen=True)

    experiment: Experiment
    as_of: datetime
    status: Status
    control: str
    metric: str
    variants: list[VariantSummaryRow]
    analysis: AnalysisResult | None
    analysis_note: str | None
    sample_ratio: SampleRatioCheck | None
    guardrails: list[GuardrailRow]
    series: list[VariantSeries]
    offpolicy: OffPolicyEvaluation | None
    crossovers: int
    verdict: Verdict


def review_experiment(
    experiment: Experiment,
    logs: ExperimentLogs,
    *,
    at: datetime,
    candidate: CandidatePolicy | None = None,
    offpolicy: OffPolicyEvaluation | None = None,
) -> ExperimentReview:
    """Review `experiment` as of `at` from its joined logs.

    The off-policy section is `offpolicy` when given (computed elsewhere, e.g. with a trained
    model's propensities), else the evaluation of `candidate` over the logged decisions, else
    absent.
    """
    units = logs.units
    control = experiment.control_variant
    counts = {str(k): int(v) for k, v in units.groupby("variant", sort=False).size().items()}
    sample_ratio = _sample_ratio(experiment, counts)
    analysis, note = _analysis(experiment, units)
    guardrails = [_guardrail(experiment, spec, units) for spec in experiment.guardrails]
    if offpolicy is None and candidate is not None:
        offpolicy = evaluate_candidate(logs.decisions, candidate, alpha=experiment.alpha)
    status = _status(experiment, at)
    return ExperimentReview(
        experiment=experiment,
        as_of=at,
        status=status,
        control=control,
        metric=experiment.primary_metric,
        variants=[_summary_row(experiment, name, units) for name in experiment.weights],
        analysis=analysis,
        analysis_note=note,
        sample_ratio=sample_ratio,
        guardrails=guardrails,
        series=_series(experiment, logs, at),
        offpolicy=offpolicy,
        crossovers=logs.crossovers,
        verdict=judge(
            experiment,
            status=status,
            units={name: int(counts.get(name, 0)) for name in experiment.weights},
            analysis=analysis,
            sample_ratio=sample_ratio,
            guardrails=[v for row in guardrails for v in row.verdicts],
            unjudged=[row.metric for row in guardrails if not row.verdicts],
        ),
    )


def review_logged_experiment(
    experiment: Experiment,
    source: LogSource,
    *,
    at: datetime,
    candidate: CandidatePolicy | None = None,
) -> ExperimentReview:
    """Join the logs of `source` for `experiment` as of `at`, and review them."""
    logs = join_experiment_logs(experiment, source, at=at)
    return review_experiment(experiment, logs, at=at, candidate=candidate)


def _status(experiment: Experiment, at: datetime) -> Status:
    if at < experiment.start:
        return "scheduled"
    return "running" if experiment.is_running(at) else "stopped"


def _sample_ratio(experiment: Experiment, counts: dict[str, int]) -> SampleRatioCheck | None:
    """Units per variant against the current weights (variants of weight 0 left out); None
    before any unit."""
    weights = {name: w for name, w in experiment.weights.items() if w > 0}
    if sum(counts.get(name, 0) for name in weights) == 0 or len(weights) < 2:
        return None
    observed = {name: int(counts.get(name, 0)) for name in weights}
    return check_sample_ratio(observed, weights)


def _analysis(experiment: Experiment, units: pd.DataFrame) -> tuple[AnalysisResult | None, str]:
    """The primary metric's analysis over the variants with at least 2 units, or why not."""
    counts = units.groupby("variant", sort=False).size()
    kept = [name for name in experiment.weights if counts.get(name, 0) >= 2]
    control = experiment.control_variant
    if control not in kept or len(kept) < 2:
        return None, "not enough data: the control and a treatment need 2 customers each"
    frame = units[units["variant"].isin(kept)][["variant", "value", "covariate"]]
    frame = frame.sort_values("variant", key=lambda v: v.map(kept.index), kind="stable")
    if experiment.covariate_days == 0 or frame["covariate"].std() == 0:
        frame = frame.drop(columns="covariate")  # no pre-period spread: nothing to adjust by
    weights = {name: experiment.weights[name] for name in kept}
    try:
        result = analyze(
            frame,
            control=control,
            weights=weights if all(w > 0 for w in weights.values()) else None,
            alpha=experiment.alpha,
            sequential=experiment.sequential,
        )
    except InvalidUnits as exc:
        return None, str(exc)
    left_out = [name for name in experiment.weights if name not in kept]
    note = f"left out for lack of customers: {', '.join(left_out)}" if left_out else ""
    return result, note


def _guardrail(experiment: Experiment, spec: GuardrailSpec, units: pd.DataFrame) -> GuardrailRow:
    column = _GUARDRAIL_COLUMNS[spec.metric]
    lower = LOWER_IS_BETTER[spec.metric]
    data = units[["variant", column]].dropna().rename(columns={column: "value"})
    means = {
        name: (float(values.mean()) if len(values) else None)
        for name in experiment.weights
        for values in [data.loc[data["variant"] == name, "value"]]
    }
    counts = data.groupby("variant").size()
    control = experiment.control_variant
    kept = [name for name in experiment.weights if counts.get(name, 0) >= 2]
    events = float(data.loc[data["variant"].isin(kept), "value"].sum())
    note = None
    if control not in kept or len(kept) < 2:
        note = "not enough data"
    elif spec.metric != "feedback_score" and events < MIN_GUARDRAIL_EVENTS:
        # The normal intervals of a rate need events: with none, the interval is [0, 0].
        note = f"{events:.0f} events so far; {MIN_GUARDRAIL_EVENTS} needed"
    if note is not None:
        return GuardrailRow(
            metric=spec.metric,
            lower_is_better=lower,
            margin=spec.margin,
            means=means,
            verdicts=[],
            note=note,
        )
    guardrail = Guardrail(
        units=data[data["variant"].isin(kept)],
        direction="lower_is_better" if lower else "higher_is_better",
        margin=spec.margin,
    )
    report = judge_guardrails(
        {spec.metric: guardrail},
        control=control,
        alpha=experiment.alpha,
        sequential=experiment.sequential,
    )
    return GuardrailRow(
        metric=spec.metric,
        lower_is_better=lower,
        margin=spec.margin,
        means=means,
        verdicts=report.verdicts,
    )


def _summary_row(experiment: Experiment, name: str, units: pd.DataFrame) -> VariantSummaryRow:
    variant = experiment.variant(name)
    rows = units[units["variant"] == name]
    values = rows["value"].to_numpy(dtype=np.float64)
    mean = low = high = None
    if values.size:
        mean = float(values.mean())
        low, high = _mean_interval(values, experiment.primary_metric, experiment.alpha)
    return VariantSummaryRow(
        variant=name,
        description=variant.description,
        weight=variant.weight,
        personalisation=variant.personalisation,
        model_alias=variant.model_alias,
        units=int(values.size),
        exposures=int(rows["exposures"].sum()),
        conversions=int((values > 0).sum()),
        mean=mean,
        ci_low=low,
        ci_high=high,
    )


def _mean_interval(values: np.ndarray, metric: str, alpha: float) -> tuple[float, float]:
    """Wilson interval for a rate, normal interval for a mean (metric units)."""
    n = values.size
    z = float(special.ndtri(1 - alpha / 2))
    mean = float(values.mean())
    if metric == "conversion":
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        radius = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return centre - radius, centre + radius
    if n < 2:
        return mean, mean
    radius = z * float(values.std(ddof=1)) / math.sqrt(n)
    return mean - radius, mean + radius


def _series(experiment: Experiment, logs: ExperimentLogs, at: datetime) -> list[VariantSeries]:
    """The cumulative metric per unit exposed so far, at SERIES_POINTS evenly spaced times
    from the first exposure to the end of the window."""
    units = logs.units
    if units.empty:
        return []
    exposed_at = np.array([t.timestamp() for t in units["first_exposed_at"]])
    end = (at if experiment.stop is None else min(at, experiment.stop)).timestamp()
    first = float(exposed_at.min())
    end = max(end, float(exposed_at.max()))
    grid = np.linspace(first, end, SERIES_POINTS)
    events = logs.metric_events
    event_at = np.array([t.timestamp() for t in events["at"]], dtype=np.float64)
    series = []
    for name in experiment.weights:
        exposed = np.sort(exposed_at[(units["variant"] == name).to_numpy()])
        if exposed.size == 0:
            continue
        mine = (events["variant"] == name).to_numpy()
        order = np.argsort(event_at[mine], kind="stable")
        times = event_at[mine][order]
        cumulative = np.cumsum(events["amount"].to_numpy(dtype=np.float64)[mine][order])
        points = []
        for when in grid:
            exposed_by = int(np.searchsorted(exposed, when, side="right"))
            if exposed_by == 0:
                continue
            reached = int(np.searchsorted(times, when, side="right"))
            total = float(cumulative[reached - 1]) if reached else 0.0
            points.append(
                SeriesPoint(
                    at=datetime.fromtimestamp(float(when), tz=UTC),
                    units=exposed_by,
                    value=total / exposed_by,
                )
            )
        series.append(VariantSeries(variant=name, points=points))
    return series
