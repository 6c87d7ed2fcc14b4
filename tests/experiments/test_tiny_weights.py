"""Traffic weights too small to analyse are refused where they are set, and the SRM check
never divides by an expected count that rounds to nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest

from experiments.definitions import InvalidExperiment, validated
from experiments.sample_ratio import check_sample_ratio


def test_a_weight_whose_share_underflows_is_checked_without_dividing_by_zero() -> None:
    check = check_sample_ratio({"A": 100, "B": 3}, {"A": 1_000_000, "B": 5e-324})

    assert check.chi_square == math.inf
    assert check.p_value == 0.0
    assert check.mismatch


def test_a_variant_expected_to_get_nothing_and_getting_nothing_fits() -> None:
    check = check_sample_ratio({"A": 100, "B": 0}, {"A": 1_000_000, "B": 5e-324})

    assert check.chi_square == pytest.approx(0.0, abs=1e-9)
    assert not check.mismatch


def definition(treatment_weight: float) -> dict[str, Any]:
    return {
        "id": "tiny",
        "hypothesis": "A sliver of traffic tells us something.",
        "start": "2026-01-01T00:00:00+00:00",
        "variants": [
            {"name": "control", "weight": 1_000_000},
            {"name": "treatment", "weight": treatment_weight},
        ],
    }


def test_an_experiment_with_a_share_too_small_to_analyse_is_refused() -> None:
    with pytest.raises(InvalidExperiment) as refused:
        validated(definition(5e-324))
    assert refused.value.field == "variants.1.weight"
    assert "at least 0.0001 of it" in refused.value.reason


def test_new_weights_too_small_to_analyse_are_refused() -> None:
    experiment = validated(definition(1000))
    with pytest.raises(InvalidExperiment) as refused:
        experiment.with_weights({"control": 1_000_000, "treatment": 5e-324})
    assert refused.value.field == "weights.treatment"


def test_a_zero_weight_is_still_allowed() -> None:
    experiment = validated(definition(0))
    assert experiment.weights == {"control": 1_000_000, "treatment": 0}
