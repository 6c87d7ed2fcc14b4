"""The verdict of a review, in plain words: ship, don't ship or keep running, and why.

In order, the first rule that applies decides:

1. no analysis yet (too few customers) -> keep running;
2. a sample-ratio mismatch -> don't ship: assignment or logging is broken and no comparison
   can be trusted; find the cause and restart;
3. a variant below the experiment's `min_units` -> keep running;
4. every treatment either fails a guardrail or is significantly worse -> don't ship;
5. the best treatment with a significant gain and no failed guardrail: ship it if every one
   of its guardrails passes, else keep running until they rule out harm beyond their margins
   (a guardrail without enough data to be judged holds a ship back too);
6. no significant difference: keep running while the experiment runs (its intervals are
   always valid when it is sequential, so looking again is safe), don't ship once it stopped.

"Significant" uses the always-valid p-value in a sequential experiment; intervals quoted are
the ones that decide (always-valid, or fixed-horizon otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from experiments.analysis import AnalysisResult, Comparison
from experiments.definitions import Experiment
from experiments.guardrails import GuardrailVerdict
from experiments.sample_ratio import SampleRatioCheck

Decision = Literal["ship", "don't ship", "keep running"]


class Verdict(BaseModel):
    """What to do (`decision`), about which treatment (`variant`, None when no treatment is in
    question), a one-sentence `headline` and the `reasons` behind it."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    variant: str | None
    headline: str
    reasons: list[str]


def judge(
    experiment: Experiment,
    *,
    status: str,
    units: dict[str, int],
    analysis: AnalysisResult | None,
    sample_ratio: SampleRatioCheck | None,
    guardrails: list[GuardrailVerdict],
    unjudged: Sequence[str] = (),
) -> Verdict:
    """The verdict by the rules of the module docstring. `unjudged` names the guardrails
    without enough data to be judged: they hold back a ship like an inconclusive one."""
    counts = ", ".join(f"{n:,} in {name}" for name, n in units.items())
    if analysis is None:
        return Verdict(
            decision="keep running",
            variant=None,
            headline="Keep running: not enough data to compare the variants yet.",
            reasons=[f"Customers so far: {counts or 'none'}."],
        )
    if sample_ratio is not None and sample_ratio.mismatch:
        expected = ", ".join(f"{s:.0%} {n}" for n, s in sample_ratio.expected_shares.items())
        return Verdict(
            decision="don't ship",
            variant=None,
            headline="Don't ship: the traffic split is broken, so no comparison can be trusted.",
            reasons=[
                f"Customers per variant ({counts}) do not match the weights ({expected}): "
                f"sample-ratio mismatch, p = {sample_ratio.p_value:.2g}.",
                "Assignment or exposure logging loses or adds customers in one variant. "
                "Find the cause, fix it and restart the experiment.",
            ],
        )
    small = [
        name
        for name, n in units.items()
        if experiment.variant(name).weight > 0 and n < experiment.min_units
    ]
    if small:
        return Verdict(
            decision="keep running",
            variant=None,
            headline=f"Keep running: each variant needs {experiment.min_units:,} customers.",
            reasons=[f"Customers so far: {counts}."],
        )
    return _compare(experiment, status, analysis, guardrails, list(unjudged))


def _compare(
    experiment: Experiment,
    status: str,
    analysis: AnalysisResult,
    guardrails: list[GuardrailVerdict],
    unjudged: list[str],
) -> Verdict:
    failed = {v.treatment: v for v in guardrails if v.verdict == "fail"}
    better = [c for c in analysis.comparisons if c.significant and _lift(c)[0] > 0]
    worse = [c for c in analysis.comparisons if c.significant and _lift(c)[0] < 0]
    shippable = [c for c in better if c.treatment not in failed]
    if shippable:
        best = max(shippable, key=lambda c: _lift(c)[0])
        return _better(experiment, analysis, best, guardrails, unjudged)
    bad = set(failed) | {c.treatment for c in worse}
    if bad == {c.treatment for c in analysis.comparisons}:
        reasons = [_guardrail_text(v) for v in failed.values()]
        reasons += [_describe(experiment, analysis, c)["text"] for c in worse]
        return Verdict(
            decision="don't ship",
            variant=None,
            headline="Don't ship: every treatment is worse than the control or breaks a guardrail.",
            reasons=reasons,
        )
    neutral = [_describe(experiment, analysis, c)["text"] for c in analysis.comparisons]
    if status == "stopped":
        return Verdict(
            decision="don't ship",
            variant=None,
            headline="Don't ship: the experiment ended without a significant gain.",
            reasons=neutral,
        )
    return Verdict(
        decision="keep running",
        variant=None,
        headline="Keep running: no significant difference yet.",
        reasons=[
            *neutral,
            "The intervals are always valid: looking again later is safe."
            if analysis.sequential
            else "Wait for the planned sample size before looking again.",
        ],
    )


def _better(
    experiment: Experiment,
    analysis: AnalysisResult,
    best: Comparison,
    guardrails: list[GuardrailVerdict],
    unjudged: list[str],
) -> Verdict:
    """Ship the best significant gain if its guardrails pass, else keep running."""
    pending = [v for v in guardrails if v.treatment == best.treatment and v.verdict != "pass"]
    gain = _describe(experiment, analysis, best)
    if not pending and not unjudged:
        return Verdict(
            decision="ship",
            variant=best.treatment,
            headline=f"Ship {best.treatment}: it {gain['verb']} {experiment.primary_metric} "
            f"and every guardrail holds.",
            reasons=[gain["text"], _guardrails_hold(best.treatment, guardrails)],
        )
    names = ", ".join([*(v.metric for v in pending), *unjudged])
    return Verdict(
        decision="keep running",
        variant=best.treatment,
        headline=f"Keep running: {best.treatment} looks better, but {names} cannot yet "
        "rule out harm.",
        reasons=[
            gain["text"],
            *(_guardrail_text(v) for v in pending),
            *(f"{metric}: not enough data yet to judge." for metric in unjudged),
        ],
    )


def _lift(comparison: Comparison) -> tuple[float, float, float]:
    """(estimate, low, high) of the absolute lift, by the interval that decides."""
    lift = comparison.absolute_lift
    if comparison.always_valid is not None:
        return lift.estimate, comparison.always_valid.ci_low, comparison.always_valid.ci_high
    return lift.estimate, lift.ci_low, lift.ci_high


def _describe(
    experiment: Experiment, analysis: AnalysisResult, comparison: Comparison
) -> dict[str, str]:
    means = {v.variant: v.mean for v in analysis.variants}
    estimate, low, high = _lift(comparison)
    level = f"{1 - analysis.alpha:.0%}"
    kind = "always-valid " if comparison.always_valid is not None else ""
    p_value = comparison.always_valid.p_value if comparison.always_valid else comparison.p_value
    control, treatment = comparison.control, comparison.treatment
    text = (
        f"{treatment}: {format_metric(experiment, means[treatment])} against "
        f"{format_metric(experiment, means[control])} in {control}, a lift of "
        f"{format_lift(experiment, estimate)} ({level} {kind}interval "
        f"{format_lift(experiment, low)} to {format_lift(experiment, high)}, "
        f"p = {p_value:.2g}); chance to beat {control}: "
        f"{format_chance(comparison.chance_to_beat_control)}."
    )
    return {"verb": "raises" if estimate > 0 else "lowers", "text": text}


def _guardrails_hold(treatment: str, guardrails: list[GuardrailVerdict]) -> str:
    mine = [v for v in guardrails if v.treatment == treatment]
    if not mine:
        return "No guardrail is defined."
    held = ", ".join(
        f"{v.metric} (harm at most {format_guardrail(v.metric, v.harm_ci_high, signed=True)})"
        for v in mine
    )
    return f"Guardrails hold, harm ruled out beyond their margins: {held}."


def _guardrail_text(verdict: GuardrailVerdict) -> str:
    def show(value: float) -> str:
        return format_guardrail(verdict.metric, value, signed=True)

    interval = f"[{show(verdict.harm_ci_low)}, {show(verdict.harm_ci_high)}]"
    margin = format_guardrail(verdict.metric, verdict.margin)
    if verdict.verdict == "fail":
        return (
            f"{verdict.treatment} makes {verdict.metric} worse: harm {show(verdict.harm)} "
            f"{interval}, beyond the accepted {margin}."
        )
    return (
        f"{verdict.metric} in {verdict.treatment}: harm {show(verdict.harm)} {interval} "
        f"cannot yet be ruled out beyond the accepted {margin}."
    )


def format_guardrail(metric: str, value: float | None, *, signed: bool = False) -> str:
    """A guardrail value or difference: percentage points for the rates, score points for
    `feedback_score` (a level, unsigned, or a difference, signed)."""
    if value is None:
        return "n/a"
    sign = "+" if signed else ""
    if metric == "feedback_score":
        return f"{value:{sign}.2f}" + (" pts" if signed else "")
    return f"{value * 100:{sign}.2f}" + (" pp" if signed else " %")


def format_chance(probability: float) -> str:
    """A probability as a percentage that never rounds to a certainty it is not."""
    if probability > 0.999:
        return "> 99.9%"
    if probability < 0.001:
        return "< 0.1%"
    return f"{probability:.1%}"


def format_metric(experiment: Experiment, value: float | None) -> str:
    """A value of the primary metric: a percentage for conversion, EUR for value."""
    if value is None:
        return "n/a"
    if experiment.primary_metric == "conversion":
        return f"{value:.2%}"
    return f"{value:,.2f} EUR"


def format_lift(experiment: Experiment, value: float) -> str:
    """An absolute lift: percentage points for conversion, EUR for value."""
    if experiment.primary_metric == "conversion":
        return f"{value * 100:+.2f} pp"
    return f"{value:+,.2f} EUR"
