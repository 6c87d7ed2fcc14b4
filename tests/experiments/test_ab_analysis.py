"""`analyze`: what it returns for a per-unit frame, and how it refuses bad frames."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.analysis import AnalysisResult, analyze
from experiments.errors import InvalidUnits


def conversion_units(seed: int = 1, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = rng.choice(["control", "fast_track", "reminder"], size=n)
    rate = np.select([variant == "fast_track", variant == "reminder"], [0.13, 0.10], 0.10)
    return pd.DataFrame({"variant": variant, "value": rng.binomial(1, rate)})


def spend_units(seed: int = 2, n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    variant = np.where(rng.random(n) < 0.5, "A", "B")
    spend = rng.gamma(2.0, 50.0, size=n) + np.where(variant == "B", 8.0, 0.0)
    return pd.DataFrame(
        {"unit_id": [f"c{i}" for i in range(n)], "variant": variant, "value": spend}
    )


def test_control_defaults_to_first_variant_in_order_of_appearance() -> None:
    units = pd.DataFrame({"variant": ["B", "A", "B", "A"], "value": [1.0, 2.0, 3.0, 4.0]})

    result = analyze(units)

    assert result.control == "B"
    assert [v.variant for v in result.variants] == ["B", "A"]
    assert [c.treatment for c in result.comparisons] == ["A"]


def test_explicit_control_and_summaries_match_pandas() -> None:
    units = conversion_units()

    result = analyze(units, control="control")

    expected = units.groupby("variant")["value"].agg(["size", "mean", "std"])
    for summary in result.variants:
        row = expected.loc[summary.variant]
        assert summary.units == row["size"]
        assert summary.mean == pytest.approx(row["mean"])
        assert summary.std == pytest.approx(row["std"])
    assert {c.treatment for c in result.comparisons} == {"fast_track", "reminder"}
    assert all(c.control == "control" for c in result.comparisons)


def test_binary_values_use_the_two_proportion_z_test() -> None:
    units = conversion_units()

    result = analyze(units, control="control")

    assert result.metric == "binary"
    fast = next(c for c in result.comparisons if c.treatment == "fast_track")
    treated = units.loc[units["variant"] == "fast_track", "value"]
    control = units.loc[units["variant"] == "control", "value"]
    pooled = units.loc[units["variant"].isin(["fast_track", "control"]), "value"].mean()
    z = (treated.mean() - control.mean()) / math.sqrt(
        pooled * (1 - pooled) * (1 / len(treated) + 1 / len(control))
    )
    assert fast.test == "two_proportion_z"
    assert fast.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert fast.absolute_lift.estimate == pytest.approx(treated.mean() - control.mean())
    assert fast.relative_lift is not None
    assert fast.relative_lift.estimate == pytest.approx(treated.mean() / control.mean() - 1)
    assert fast.significant is (fast.p_value < 0.05)


def test_continuous_values_use_welch_and_agree_with_scipy() -> None:
    units = spend_units()

    result = analyze(units)

    comparison = result.comparisons[0]
    b = units.loc[units["variant"] == comparison.treatment, "value"]
    a = units.loc[units["variant"] == result.control, "value"]
    welch = stats.ttest_ind(b, a, equal_var=False)
    interval = welch.confidence_interval(0.95)
    assert result.metric == "continuous"
    assert comparison.test == "welch_t"
    assert comparison.p_value == pytest.approx(welch.pvalue)
    assert comparison.absolute_lift.ci_low == pytest.approx(interval.low)
    assert comparison.absolute_lift.ci_high == pytest.approx(interval.high)


def test_alpha_sets_the_interval_level() -> None:
    units = spend_units()

    wide = analyze(units, alpha=0.01).comparisons[0].absolute_lift
    narrow = analyze(units, alpha=0.2).comparisons[0].absolute_lift

    assert wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low


def test_chance_to_beat_control_follows_the_evidence() -> None:
    result = analyze(conversion_units(n=20000), control="control")

    by_treatment = {c.treatment: c.chance_to_beat_control for c in result.comparisons}

    assert by_treatment["fast_track"] > 0.99
    assert 0.01 < by_treatment["reminder"] < 0.99


def test_result_is_json_serialisable_and_round_trips() -> None:
    units = spend_units().assign(covariate=lambda f: f["value"] * 0.5 + 3.0)

    result = analyze(units, weights={"A": 1, "B": 1}, sequential=True)
    text = json.dumps(result.model_dump(mode="json"))

    assert AnalysisResult.model_validate(json.loads(text)) == result
    assert json.loads(text)["comparisons"][0]["always_valid"]["p_value"] <= 1


def test_relative_lift_is_absent_when_the_control_mean_is_zero() -> None:
    units = pd.DataFrame({"variant": ["A"] * 4 + ["B"] * 4, "value": [0, 0, 0, 0, 0, 1, 0, 1]})

    comparison = analyze(units).comparisons[0]

    assert comparison.relative_lift is None
    assert comparison.absolute_lift.estimate == pytest.approx(0.5)


def test_variants_without_spread_report_the_observed_difference() -> None:
    units = pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [3.0, 3.0, 3.0, 3.0]})

    comparison = analyze(units).comparisons[0]

    assert comparison.p_value == 1.0
    assert comparison.absolute_lift.ci_low == comparison.absolute_lift.ci_high == 0.0
    assert not comparison.significant


def test_numeric_variant_labels_are_compared_as_text() -> None:
    units = pd.DataFrame({"variant": [1, 2, 1, 2, 1, 2], "value": [1.0, 2.0, 1.5, 2.5, 1.2, 2.2]})

    result = analyze(units, control="2")

    assert result.control == "2"
    assert result.comparisons[0].treatment == "1"


def test_sequential_adds_wider_always_valid_intervals_that_decide_significance() -> None:
    units = spend_units(n=4000)

    comparison = analyze(units, sequential=True).comparisons[0]

    assert comparison.always_valid is not None
    fixed = comparison.absolute_lift
    assert comparison.always_valid.ci_low < fixed.ci_low
    assert comparison.always_valid.ci_high > fixed.ci_high
    assert comparison.always_valid.p_value >= comparison.p_value
    assert comparison.significant is (comparison.always_valid.p_value < 0.05)


def test_invalid_units_is_a_value_error() -> None:
    assert issubclass(InvalidUnits, ValueError)


@pytest.mark.parametrize(
    ("units", "control", "weights", "alpha", "names"),
    [
        (pd.DataFrame({"variant": ["A", "B"]}), None, None, 0.05, "'value'"),
        (pd.DataFrame({"value": [1.0, 2.0]}), None, None, 0.05, "'variant'"),
        (
            pd.DataFrame({"variant": ["A"] * 3, "value": [1.0, 2, 3]}),
            None,
            None,
            0.05,
            "2 variants",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 4]}),
            "C",
            None,
            0.05,
            "'C'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B"], "value": [1.0, 2, 3]}),
            None,
            None,
            0.05,
            "variant 'B' has 1 unit",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, np.nan, 4]}),
            None,
            None,
            0.05,
            "1 in variant 'B'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, np.inf, 3, 4]}),
            None,
            None,
            0.05,
            "1 in variant 'A'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": ["1", "2", "x", "4"]}),
            None,
            None,
            0.05,
            "'x' in variant 'B'",
        ),
        (
            pd.DataFrame(
                {
                    "variant": ["A", "A", "B", "B"],
                    "value": [1.0, 2, 3, 4],
                    "covariate": [1, None, 2, 3],
                }
            ),
            None,
            None,
            0.05,
            "'covariate'",
        ),
        (
            pd.DataFrame({"variant": ["A", None, "B", "B"], "value": [1.0, 2, 3, 4]}),
            None,
            None,
            0.05,
            "'variant'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 4]}),
            None,
            {"A": 1.0, "B": 1.0, "C": 1.0},
            0.05,
            "'C'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 4]}),
            None,
            {"A": 1.0},
            0.05,
            "'B'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 4]}),
            None,
            {"A": 1.0, "B": -1.0},
            0.05,
            "'B'",
        ),
        (
            pd.DataFrame({"variant": ["A", "A", "B", "B"], "value": [1.0, 2, 3, 4]}),
            None,
            None,
            1.5,
            "alpha",
        ),
    ],
    ids=[
        "missing value column",
        "missing variant column",
        "one variant",
        "unknown control",
        "variant with one unit",
        "missing value",
        "infinite value",
        "non-numeric value",
        "missing covariate",
        "missing variant label",
        "weight for a variant without units",
        "variant without weight",
        "negative weight",
        "alpha out of range",
    ],
)
def test_bad_input_is_refused_naming_the_culprit(
    units: pd.DataFrame,
    control: str | None,
    weights: dict[str, float] | None,
    alpha: float,
    names: str,
) -> None:
    with pytest.raises(InvalidUnits, match=re.escape(names)):
        analyze(units, control=control, weights=weights, alpha=alpha)


def test_a_non_frame_is_refused() -> None:
    with pytest.raises(InvalidUnits, match="DataFrame"):
        analyze([{"variant": "A", "value": 1.0}])  # type: ignore[arg-type]
