"""Sticky assignment: deterministic, shares follow weights, reweighting moves few units."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.errors import InvalidWeights
from experiments.hashing import assign, unit_uniform

variant_names = st.lists(
    st.text(alphabet="abcdefghij_", min_size=1, max_size=8), min_size=1, max_size=5, unique=True
)
positive_weights = st.floats(min_value=0.05, max_value=100.0, allow_nan=False)


@st.composite
def weight_maps(draw: st.DrawFn) -> dict[str, float]:
    names = draw(variant_names)
    return {name: draw(positive_weights) for name in names}


salts = st.text(min_size=0, max_size=20)
unit_ids = st.text(min_size=0, max_size=30)


@given(salt=salts, unit_id=unit_ids, weights=weight_maps())
def test_same_input_same_variant_whatever_the_order_of_weights(
    salt: str, unit_id: str, weights: dict[str, float]
) -> None:
    variant = assign(salt, unit_id, weights)

    assert variant in weights
    assert assign(salt, unit_id, dict(weights)) == variant
    assert assign(salt, unit_id, dict(reversed(weights.items()))) == variant


@settings(max_examples=20, deadline=None)
@given(salt=salts, weights=weight_maps())
def test_shares_match_weights(salt: str, weights: dict[str, float]) -> None:
    units = 4000
    counts = dict.fromkeys(weights, 0)
    for i in range(units):
        counts[assign(salt, f"customer-{i}", weights)] += 1

    total = sum(weights.values())
    for name, weight in weights.items():
        share = weight / total
        # 5 binomial standard deviations (+ a floor for tiny shares): a real bias of a few
        # points fails, sampling noise over 20 examples x 5 variants does not.
        tolerance = 5 * math.sqrt(share * (1 - share) / units) + 0.002
        assert abs(counts[name] / units - share) <= tolerance


@settings(max_examples=30, deadline=None)
@given(
    salt=salts,
    weights=weight_maps().filter(lambda w: len(w) >= 2),
    grown=st.integers(min_value=0, max_value=4),
    factor=st.floats(min_value=1.0, max_value=20.0),
)
def test_growing_a_variant_never_moves_units_out_of_it(
    salt: str, weights: dict[str, float], grown: int, factor: float
) -> None:
    name = list(weights)[grown % len(weights)]
    new_weights = {**weights, name: weights[name] * factor}
    units = [f"customer-{i}" for i in range(1500)]

    before = [assign(salt, unit, weights) for unit in units]
    after = [assign(salt, unit, new_weights) for unit in units]

    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert all(new == name for _, new in moved), "units only move into the grown variant"
    old_share = weights[name] / sum(weights.values())
    new_share = new_weights[name] / sum(new_weights.values())
    # Only as many units move as the grown variant's new share requires.
    assert len(moved) / len(units) <= new_share - old_share + 5 * math.sqrt(0.25 / len(units))


def test_moves_match_the_share_change_exactly_in_expectation() -> None:
    units = [f"customer-{i}" for i in range(20000)]
    before = [assign("ramp", u, {"control": 90, "offer": 10}) for u in units]
    after = [assign("ramp", u, {"control": 50, "offer": 50}) for u in units]

    moved = sum(old != new for old, new in zip(before, after, strict=True)) / len(units)

    assert moved == pytest.approx(0.40, abs=0.015)


def test_adding_a_variant_only_takes_units_into_it() -> None:
    units = [f"customer-{i}" for i in range(5000)]
    before = [assign("s", u, {"A": 1, "B": 1}) for u in units]
    after = [assign("s", u, {"A": 1, "B": 1, "C": 1}) for u in units]

    assert all(new in (old, "C") for old, new in zip(before, after, strict=True))


def test_zero_weight_variant_gets_no_units() -> None:
    assert {assign("s", f"c{i}", {"A": 1.0, "B": 0.0}) for i in range(500)} == {"A"}


def test_salt_makes_experiments_independent() -> None:
    units = [f"customer-{i}" for i in range(4000)]
    first = [assign("exp-1", u, {"A": 1, "B": 1}) for u in units]
    second = [assign("exp-2", u, {"A": 1, "B": 1}) for u in units]

    agreement = sum(a == b for a, b in zip(first, second, strict=True)) / len(units)

    assert agreement == pytest.approx(0.5, abs=0.04)


def test_hash_inputs_are_unambiguous() -> None:
    assert unit_uniform("ab", "c", "d") != unit_uniform("a", "bc", "d")
    assert 0.0 < unit_uniform("", "", "") < 1.0


@pytest.mark.parametrize(
    "weights",
    [{}, {"A": -1.0}, {"A": math.nan}, {"A": math.inf}, {"A": 0.0, "B": 0.0}, {"": 1.0}],
    ids=["empty", "negative", "nan", "infinite", "all zero", "unnamed"],
)
def test_unusable_weights_are_refused(weights: dict[str, float]) -> None:
    with pytest.raises(InvalidWeights):
        assign("s", "customer-1", weights)
