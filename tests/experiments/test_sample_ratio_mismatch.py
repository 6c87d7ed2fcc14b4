"""Sample-ratio mismatch: broken assignment is flagged, healthy assignment is not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.analysis import analyze
from experiments.errors import InvalidUnits
from experiments.hashing import assign
from experiments.sample_ratio import check_sample_ratio


def units_assigned(weights: dict[str, float], n: int = 10_000) -> pd.DataFrame:
    variants = [assign("srm-test", f"customer-{i}", weights) for i in range(n)]
    return pd.DataFrame({"variant": variants, "value": np.ones(n)})


def test_hash_assignment_with_configured_weights_is_not_flagged() -> None:
    weights = {"control": 80.0, "new_offer": 20.0}
    units = units_assigned(weights)

    check = analyze(units, control="control", weights=weights).sample_ratio

    assert not check.mismatch
    assert check.expected_shares == pytest.approx({"control": 0.8, "new_offer": 0.2})


def test_analysing_against_the_wrong_weights_is_flagged() -> None:
    units = units_assigned({"control": 80.0, "new_offer": 20.0})

    assert analyze(units, control="control").sample_ratio.mismatch


def test_a_variant_losing_units_is_flagged() -> None:
    # Configured 50/50, but 5 % of the treatment's units were lost (e.g. a broken redirect).
    rng = np.random.default_rng(41)
    assigned = rng.choice(["control", "treatment"], size=50_000)
    lost = (assigned == "treatment") & (rng.random(50_000) < 0.05)
    units = pd.DataFrame({"variant": assigned[~lost], "value": 1.0})

    check = analyze(units, weights={"control": 1.0, "treatment": 1.0}).sample_ratio

    assert check.mismatch
    assert check.p_value < 0.001


def test_healthy_experiments_are_rarely_flagged() -> None:
    rng = np.random.default_rng(42)
    shares = np.array([0.5, 0.3, 0.2])

    flagged = [
        check_sample_ratio(
            dict(
                zip(["A", "B", "C"], (int(c) for c in rng.multinomial(5000, shares)), strict=True)
            ),
            {"A": 5.0, "B": 3.0, "C": 2.0},
        ).mismatch
        for _ in range(1000)
    ]

    assert sum(flagged) <= 5  # expected 1 in 1000


def test_chi_square_statistic_is_the_textbook_one() -> None:
    check = check_sample_ratio({"A": 520, "B": 480})

    assert check.chi_square == pytest.approx((20**2 / 500) * 2)
    assert check.p_value == pytest.approx(0.2059, abs=1e-4)
    assert not check.mismatch


def test_zero_weight_is_refused() -> None:
    with pytest.raises(InvalidUnits, match="'B'"):
        check_sample_ratio({"A": 10, "B": 10}, {"A": 1.0, "B": 0.0})
