"""Sample-ratio-mismatch (SRM) check: did each variant get the traffic it was meant to?

A mismatch means assignment or exposure logging is broken (a redirect losing users, a bot
filter hitting one variant...), and the experiment's comparisons cannot be trusted however
significant they look. The check is a chi-square goodness-of-fit test of the observed units
per variant against the configured traffic weights, flagged at p < 0.001: strict, because
it runs on every experiment and every look and a false alarm stops a healthy test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict
from scipy import special

from experiments.errors import InvalidUnits

SRM_P_VALUE_THRESHOLD = 0.001


class SampleRatioCheck(BaseModel):
    """Observed vs expected units per variant and the chi-square verdict.

    `expected_shares` are the configured weights normalised to sum to 1; `mismatch` is
    true when `p_value` < 0.001.
    """

    model_config = ConfigDict(frozen=True)

    observed_units: dict[str, int]
    expected_shares: dict[str, float]
    chi_square: float
    p_value: float
    mismatch: bool


def check_sample_ratio(
    observed_units: Mapping[str, int], weights: Mapping[str, float] | None = None
) -> SampleRatioCheck:
    """Chi-square test of units per variant against traffic weights (equal when None).

    `weights` are relative traffic weights (any positive scale, e.g. {"A": 50, "B": 50})
    and must name exactly the observed variants (names compared as text, as in the
    per-unit frame). Raises `InvalidUnits` naming the variant when they do not, or when a
    weight is not a positive finite number.
    """
    names = list(observed_units)
    if weights is None:
        weights = dict.fromkeys(names, 1.0)
    weights = {str(name): _traffic_weight(str(name), w) for name, w in weights.items()}
    unknown = [name for name in weights if name not in observed_units]
    unweighted = [name for name in names if name not in weights]
    if unknown:
        raise InvalidUnits(
            f"weights name variant(s) {unknown} that have no units; units have {names}"
        )
    if unweighted:
        raise InvalidUnits(f"variant(s) {unweighted} have units but no traffic weight")
    total_weight = sum(weights[name] for name in names)
    shares = {name: weights[name] / total_weight for name in names}
    total_units = sum(observed_units.values())
    chi_square = sum(
        _chi_square_term(observed_units[name], shares[name] * total_units) for name in names
    )
    p_value = float(special.chdtrc(len(names) - 1, chi_square))  # chi-square survival
    return SampleRatioCheck(
        observed_units={name: int(observed_units[name]) for name in names},
        expected_shares=shares,
        chi_square=float(chi_square),
        p_value=float(p_value),
        mismatch=bool(p_value < SRM_P_VALUE_THRESHOLD),
    )


def _chi_square_term(observed: int, expected: float) -> float:
    """(observed - expected)^2 / expected; a variant expected to get (next to) nothing that got
    units is as far from its share as can be, and one that got none fits it."""
    if expected <= 0 or not math.isfinite(observed / expected):
        return math.inf if observed > 0 else 0.0
    return (observed - expected) ** 2 / expected


def _traffic_weight(variant: str, weight: float) -> float:
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InvalidUnits(
            f"traffic weight of variant {variant!r} must be a positive number, got {weight!r}"
        )
    return value
