"""The per-unit frame an experiment is analysed from, its validation and per-variant summary.

Contract of the frame: one row per unit (a customer, an account: whatever was randomised),
with columns

- `variant`: the variant the unit was assigned to (any label; compared as text),
- `value`: the unit's metric over the experiment window (e.g. EUR spent, or 0/1 for
  "converted"); finite numbers only,
- `covariate` (optional): the same or a correlated metric measured before the unit was
  exposed (the pre-period), used for CUPED variance reduction; finite numbers only.

Other columns (e.g. `unit_id`) are ignored. Variants keep their order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from experiments.errors import InvalidUnits

VARIANT = "variant"
VALUE = "value"
COVARIATE = "covariate"

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VariantUnits:
    """One variant's units: metric values and, if the frame had one, pre-period covariates."""

    name: str
    values: FloatArray
    covariates: FloatArray | None

    @property
    def units(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True)
class ExperimentUnits:
    """A validated per-unit frame, split by variant (in order of first appearance).

    `is_binary` is true when every value of every variant is 0 or 1 (a rate metric).
    """

    variants: tuple[VariantUnits, ...]
    control: str
    is_binary: bool

    @property
    def has_covariate(self) -> bool:
        return self.variants[0].covariates is not None

    def variant(self, name: str) -> VariantUnits:
        return next(v for v in self.variants if v.name == name)

    @property
    def treatments(self) -> tuple[VariantUnits, ...]:
        return tuple(v for v in self.variants if v.name != self.control)


class VariantSummary(BaseModel):
    """Units, mean and standard deviation of one variant's raw (unadjusted) values.

    For a 0/1 metric the mean is the rate (a probability in [0, 1]). `std` is the sample
    standard deviation (n - 1 denominator), in the metric's units.
    """

    model_config = ConfigDict(frozen=True)

    variant: str
    units: int = Field(ge=2)
    mean: float
    std: float = Field(ge=0)


def summarize(variant: VariantUnits) -> VariantSummary:
    """Units, mean and sample standard deviation of a variant's raw values."""
    return VariantSummary(
        variant=variant.name,
        units=variant.units,
        mean=float(np.mean(variant.values)),
        std=float(np.std(variant.values, ddof=1)),
    )


def read_units(units: pd.DataFrame, control: str | None = None) -> ExperimentUnits:
    """Validate a per-unit frame and split it by variant.

    `control` names the control variant; by default the first variant in order of
    appearance. Raises `InvalidUnits` naming the column or variant when: a required column
    is missing, a column is not numeric or holds missing/non-finite numbers, a variant label
    is missing, there are fewer than two variants, a variant has fewer than two units, or
    the control is not one of the variants.
    """
    if not isinstance(units, pd.DataFrame):
        raise InvalidUnits(f"units must be a pandas DataFrame, got {type(units).__name__}")
    missing = [c for c in (VARIANT, VALUE) if c not in units.columns]
    if missing:
        raise InvalidUnits(
            f"units is missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"expected {VARIANT!r}, {VALUE!r} and optionally {COVARIATE!r}"
        )
    if units[VARIANT].isna().any():
        count = int(units[VARIANT].isna().sum())
        raise InvalidUnits(f"column {VARIANT!r} has {count} row(s) without a variant label")
    labels = units[VARIANT].astype(str).to_numpy(dtype=object)
    codes, uniques = pd.factorize(labels)  # uniques in order of first appearance
    names = [str(name) for name in uniques]
    if len(names) < 2:
        raise InvalidUnits(
            f"column {VARIANT!r} needs at least 2 variants to compare, found {names}"
        )
    values = _finite_column(units, VALUE, labels)
    covariates = _finite_column(units, COVARIATE, labels) if COVARIATE in units.columns else None
    chosen_control = names[0] if control is None else str(control)
    if chosen_control not in names:
        raise InvalidUnits(f"control {chosen_control!r} is not a variant; variants are {names}")

    variants = []
    for code, name in enumerate(names):
        in_variant = codes == code
        count = int(in_variant.sum())
        if count < 2:
            raise InvalidUnits(f"variant {name!r} has {count} unit(s); at least 2 are needed")
        variants.append(
            VariantUnits(
                name=name,
                values=values[in_variant],
                covariates=None if covariates is None else covariates[in_variant],
            )
        )
    is_binary = bool(np.isin(values, (0.0, 1.0)).all())
    return ExperimentUnits(variants=tuple(variants), control=chosen_control, is_binary=is_binary)


def _finite_column(units: pd.DataFrame, column: str, labels: npt.NDArray[np.object_]) -> FloatArray:
    """The column as float64, or `InvalidUnits` naming the variants with bad entries."""
    raw = units[column]
    if raw.dtype == object or isinstance(raw.dtype, pd.StringDtype):
        numeric = pd.to_numeric(raw, errors="coerce")
        not_numbers = (numeric.isna() & raw.notna()).to_numpy()
        if not_numbers.any():
            example = raw[not_numbers].iloc[0]
            raise InvalidUnits(
                f"column {column!r} must be numeric; found {example!r} in variant "
                f"{labels[not_numbers][0]!r}"
            )
        raw = numeric
    elif not (pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw)):
        raise InvalidUnits(f"column {column!r} must be numeric, got dtype {raw.dtype}")
    array = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(array)
    if bad.any():
        per_variant = pd.Series(labels[bad]).value_counts(sort=False)
        where = ", ".join(f"{count} in variant {name!r}" for name, count in per_variant.items())
        raise InvalidUnits(f"column {column!r} has missing or non-finite values: {where}")
    return array
