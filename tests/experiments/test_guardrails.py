"""Guardrails: metrics that must not get worse, judged pass / fail / inconclusive."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.errors import InvalidUnits
from experiments.guardrails import Guardrail, judge_guardrails


def rates(control_rate: float, treatment_rate: float, n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "variant": ["control"] * n + ["treatment"] * n,
            "value": np.concatenate(
                [rng.binomial(1, control_rate, n), rng.binomial(1, treatment_rate, n)]
            ),
        }
    )


def test_more_complaints_fail_fewer_pass_unclear_is_inconclusive() -> None:
    report = judge_guardrails(
        {
            "complaints_up": Guardrail(rates(0.02, 0.04, 5000, seed=1), "lower_is_better"),
            "complaints_down": Guardrail(rates(0.04, 0.02, 5000, seed=2), "lower_is_better"),
            "complaints_same": Guardrail(rates(0.03, 0.03, 500, seed=3), "lower_is_better"),
        }
    )

    verdicts = {v.metric: v.verdict for v in report.verdicts}
    assert verdicts == {
        "complaints_up": "fail",
        "complaints_down": "pass",
        "complaints_same": "inconclusive",
    }
    assert report.overall == "fail"


def test_direction_decides_what_counts_as_harm() -> None:
    more = rates(0.10, 0.14, 5000, seed=4)

    complaints = judge_guardrails({"complaints": Guardrail(more, "lower_is_better")})
    satisfaction = judge_guardrails({"satisfied": Guardrail(more, "higher_is_better")})

    assert complaints.overall == "fail"
    assert complaints.verdicts[0].harm == pytest.approx(0.04, abs=0.01)
    assert satisfaction.overall == "pass"
    assert satisfaction.verdicts[0].harm == pytest.approx(-0.04, abs=0.01)


def test_a_margin_lets_no_change_pass_once_harm_beyond_it_is_ruled_out() -> None:
    unchanged = rates(0.03, 0.03, 20000, seed=5)

    strict = judge_guardrails({"complaints": Guardrail(unchanged, "lower_is_better")})
    tolerant = judge_guardrails(
        {"complaints": Guardrail(unchanged, "lower_is_better", margin=0.005)}
    )

    assert strict.overall == "inconclusive"
    assert tolerant.overall == "pass"
    verdict = tolerant.verdicts[0]
    assert verdict.harm_ci_low < 0 < verdict.harm_ci_high <= 0.005


def test_sequential_judging_uses_the_wider_always_valid_interval() -> None:
    # Harm clearly established at a fixed horizon, not yet beyond any-time doubt.
    borderline = rates(0.050, 0.058, 12000, seed=6)

    fixed = judge_guardrails({"complaints": Guardrail(borderline, "lower_is_better")})
    sequential = judge_guardrails(
        {"complaints": Guardrail(borderline, "lower_is_better")}, sequential=True
    )

    assert fixed.overall == "fail"
    assert sequential.overall == "inconclusive"
    assert sequential.verdicts[0].harm_ci_low < fixed.verdicts[0].harm_ci_low


def test_every_treatment_is_judged_and_all_must_pass() -> None:
    rng = np.random.default_rng(7)
    units = pd.DataFrame(
        {
            "variant": np.repeat(["control", "calmer_copy", "louder_copy"], 5000),
            "value": rng.binomial(1, np.repeat([0.04, 0.02, 0.04], 5000)),
        }
    )

    report = judge_guardrails({"complaints": Guardrail(units, "lower_is_better", margin=0.004)})

    assert [(v.treatment, v.verdict) for v in report.verdicts] == [
        ("calmer_copy", "pass"),
        ("louder_copy", "inconclusive"),
    ]
    assert report.overall == "inconclusive"


def test_bad_guardrails_are_refused_naming_the_metric() -> None:
    fine = rates(0.03, 0.03, 100, seed=8)
    broken = fine.drop(columns="value")

    with pytest.raises(InvalidUnits, match="no guardrail"):
        judge_guardrails({})
    with pytest.raises(InvalidUnits, match=r"'complaints'.*margin"):
        judge_guardrails({"complaints": Guardrail(fine, "lower_is_better", margin=-0.01)})
    with pytest.raises(InvalidUnits, match=r"'opt_outs'.*'value'"):
        judge_guardrails({"opt_outs": Guardrail(broken, "lower_is_better")})
