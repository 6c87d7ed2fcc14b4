"""Experiment definitions: what is compared, on whom, and how it is judged.

An `Experiment` has an id, a hypothesis, a start and an optional stop, and two or more
variants with relative traffic weights. Each `Variant` is a policy configuration:

- `model_alias`: the registered model that scores actions ("champion", "challenger"...);
- `exploration_epsilon`: epsilon-greedy exploration at this rate (0 turns exploration off;
  None keeps the serving policy's exploration);
- `personalisation`: False makes the variant a holdout control (see
  `experiments.assignment.depersonalised` for exactly what is switched off);
- `actions`: a subset of the catalogue's action ids (None: the whole catalogue).

The `population` filter says who takes part (value segments, touchpoint channels, a sample
percentage); `primary_metric` and `guardrails` say how the review judges the variants.

Definitions come from `POST /v1/experiments` or from a YAML file (`load_experiments`); unknown
keys are refused and every error names the field at fault, e.g. `variants.1.weight`.
"""

from __future__ import annotations

import math
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.catalogue import Catalogue
from engine.events import Channel
from engine.facts import ValueSegment
from experiments.errors import ExperimentsError
from experiments.hashing import assign, unit_uniform

ExperimentId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
VariantName = Annotated[
    str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]
ModelAlias = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
PrimaryMetric = Literal["conversion", "value"]
GuardrailMetric = Literal["complaint_rate", "opt_out_rate", "feedback_score"]

#: Whether a lower value of each guardrail metric is better (the review's harm direction).
LOWER_IS_BETTER: dict[GuardrailMetric, bool] = {
    "complaint_rate": True,
    "opt_out_rate": True,
    "feedback_score": False,
}


class InvalidExperiment(ExperimentsError, ValueError):
    """A definition is inconsistent (with itself, its file or the catalogue).

    `field` is the dotted path of the offending key (`variants.1.actions.0`; '' for the whole
    definition), `reason` says why.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}" if field else reason)


def _at(field: str, reason: str) -> PydanticCustomError:
    """A validation error that names its field below the model's own location."""
    return PydanticCustomError(
        "experiment", "{field}: {reason}", {"field": field, "reason": reason}
    )


class Variant(BaseModel):
    """One arm of an experiment: a policy configuration and its relative traffic weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: VariantName
    weight: float = Field(
        ge=0, le=1_000_000, allow_inf_nan=False, description="Relative traffic weight; 0: none."
    )
    description: str = Field("", max_length=500)
    model_alias: ModelAlias = Field(
        "champion", description="The registry alias of the model that scores actions."
    )
    exploration_epsilon: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Epsilon-greedy exploration at this rate (0: none); None keeps the "
        "serving policy's exploration.",
    )
    personalisation: bool = Field(
        True, description="False: a holdout control that gets the non-personalised experience."
    )
    actions: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, min_length=1, description="The catalogue's action ids this variant may offer."
    )

    @model_validator(mode="after")
    def _distinct_actions(self) -> Variant:
        if self.actions is not None and len(set(self.actions)) != len(self.actions):
            raise _at("actions", "must not repeat an action id")
        return self


class PopulationFilter(BaseModel):
    """Who takes part. A customer outside it is decided for by the serving policy, unlogged
    as an exposure. All conditions must hold; None means no condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segments: list[ValueSegment] | None = Field(
        None, min_length=1, description="Value segments (mass, affluent, premium)."
    )
    channels: list[Channel] | None = Field(
        None, min_length=1, description="Touchpoint channels the decision is asked from."
    )
    sample_percent: float = Field(
        100.0,
        gt=0,
        le=100,
        description="Share of the customers (by a hash of the customer id) that take part.",
    )

    def admits(self, salt: str, customer_id: str, *, segment: str, channel: str) -> bool:
        """True if this customer, in this segment, asking from this channel, takes part.

        The sample is a fixed hash of (salt, customer): raising `sample_percent` only adds
        customers, lowering it only removes some.
        """
        if self.segments is not None and segment not in self.segments:
            return False
        if self.channels is not None and channel not in self.channels:
            return False
        # Variant names are never empty, so this draw is independent of every variant's draw.
        return unit_uniform(salt, "", customer_id) * 100.0 < self.sample_percent


class GuardrailSpec(BaseModel):
    """A metric the treatment must not make worse by more than `margin` (metric units:
    a share of customers for the rates, score points for `feedback_score`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: GuardrailMetric
    margin: float = Field(0.0, ge=0, allow_inf_nan=False)


def _default_guardrails() -> list[GuardrailSpec]:
    return [
        GuardrailSpec(metric="complaint_rate", margin=0.005),
        GuardrailSpec(metric="opt_out_rate", margin=0.005),
        GuardrailSpec(metric="feedback_score", margin=0.25),
    ]


class Experiment(BaseModel):
    """A randomised comparison of decision policies (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: ExperimentId
    hypothesis: str = Field(min_length=1, max_length=2000)
    start: AwareDatetime
    stop: AwareDatetime | None = Field(None, description="None: runs until stopped.")
    salt: str | None = Field(
        None, max_length=64, description="Assignment hash salt; the id when None."
    )
    variants: list[Variant] = Field(min_length=2, max_length=10)
    control: VariantName | None = Field(None, description="The first variant when None.")
    population: PopulationFilter = Field(default_factory=PopulationFilter)
    primary_metric: PrimaryMetric = Field(
        "conversion",
        description="conversion: share of customers who accepted or converted an offered "
        "action; value: EUR converted per customer.",
    )
    guardrails: list[GuardrailSpec] = Field(default_factory=_default_guardrails, max_length=3)
    covariate_days: int = Field(
        28, ge=0, le=365, description="Pre-period (days before start) of the CUPED covariate."
    )
    alpha: float = Field(0.05, gt=0, lt=0.5)
    sequential: bool = Field(
        True, description="Always-valid inference, so the review can be looked at any time."
    )
    min_units: int = Field(
        100, ge=2, description="Customers per variant before a verdict other than keep running."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [variant.name for variant in self.variants]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise _at(f"variants.{index}.name", f"repeats the variant name {name!r}")
        if not any(variant.weight > 0 for variant in self.variants):
            raise _at("variants", "at least one variant needs a positive weight")
        small = _too_small_share([variant.weight for variant in self.variants])
        if small is not None:
            raise _at(f"variants.{small[0]}.weight", small[1])
        if self.control is not None and self.control not in names:
            raise _at("control", f"is not a variant; variants are {names}")
        if self.stop is not None and self.stop <= self.start:
            raise _at("stop", "must be after start")
        metrics = [guardrail.metric for guardrail in self.guardrails]
        for index, metric in enumerate(metrics):
            if metric in metrics[:index]:
                raise _at(f"guardrails.{index}.metric", f"repeats the guardrail {metric!r}")
        return self

    @property
    def assignment_salt(self) -> str:
        return self.id if self.salt is None else self.salt

    @property
    def control_variant(self) -> str:
        return self.variants[0].name if self.control is None else self.control

    @property
    def weights(self) -> dict[str, float]:
        return {variant.name: variant.weight for variant in self.variants}

    def variant(self, name: str) -> Variant:
        """The variant named `name`; KeyError if there is none."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    def is_running(self, at: datetime) -> bool:
        """True from `start` (included) to `stop` (excluded)."""
        return self.start <= at and (self.stop is None or at < self.stop)

    def assign(self, customer_id: str) -> str:
        """The customer's variant: a fixed hash of (salt, variant name, customer) raced by
        weight (`experiments.hashing`), the same on every touchpoint and server."""
        return assign(self.assignment_salt, customer_id, self.weights)

    def with_weights(self, weights: dict[str, float]) -> Experiment:
        """A copy with new traffic weights; they must name exactly the variants."""
        if set(weights) != set(self.weights):
            raise InvalidExperiment(
                "weights", f"must name exactly the variants {sorted(self.weights)}"
            )
        for name, weight in weights.items():
            if not (math.isfinite(weight) and 0 <= weight <= 1_000_000):
                raise InvalidExperiment(f"weights.{name}", "must be a number in [0, 1000000]")
        small = _too_small_share([float(weights[v.name]) for v in self.variants])
        if small is not None:
            raise InvalidExperiment(f"weights.{self.variants[small[0]].name}", small[1])
        variants = [v.model_copy(update={"weight": float(weights[v.name])}) for v in self.variants]
        return validated(self.model_dump(mode="json") | {"variants": _dumped(variants)})

    def stopped(self, at: datetime) -> Experiment:
        """A copy that stops at `at` (or keeps an earlier stop); `at` must be after start."""
        if at <= self.start:
            raise InvalidExperiment("stop", "must be after start")
        stop = at if self.stop is None else min(self.stop, at)
        return self.model_copy(update={"stop": stop})

    def check_catalogue(self, catalogue: Catalogue) -> None:
        """Raise `InvalidExperiment` naming the first action id a variant names that the
        catalogue does not hold."""
        known = {action.id for action in catalogue.actions}
        for index, variant in enumerate(self.variants):
            for position, action_id in enumerate(variant.actions or []):
                if action_id not in known:
                    raise InvalidExperiment(
                        f"variants.{index}.actions.{position}",
                        f"{action_id!r} is not in the catalogue {catalogue.version}",
                    )


def _dumped(variants: list[Variant]) -> list[dict[str, Any]]:
    return [variant.model_dump(mode="json") for variant in variants]


def validated(data: Any) -> Experiment:
    """An `Experiment` from plain data; `InvalidExperiment` names the first bad field."""
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise InvalidExperiment(*first_problem(exc.errors(include_url=False))) from None


def first_problem(errors: list[Any]) -> tuple[str, str]:
    """(dotted field, reason) of the first pydantic error."""
    error = errors[0]
    location = [str(part) for part in error.get("loc", ())]
    context = error.get("ctx") or {}
    if "field" in context:
        return ".".join([*location, str(context["field"])]), str(context["reason"])
    return ".".join(location), str(error["msg"])


def load_experiments(path: str | PathLike[str]) -> list[Experiment]:
    """Experiments from a YAML file: a mapping `{experiments: [...]}` or a plain list.

    Read with `yaml.safe_load` (plain data only). Raises `InvalidExperiment` naming the field,
    e.g. `experiments.1.variants.0.weight`, or the file when it cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidExperiment("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidExperiment("", f"{path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and set(data) == {"experiments"}:
        data = data["experiments"]
    if not isinstance(data, list):
        raise InvalidExperiment("", f"{path} must hold a list under the key 'experiments'")
    experiments: list[Experiment] = []
    for index, item in enumerate(data):
        try:
            experiment = validated(item)
        except InvalidExperiment as exc:
            raise InvalidExperiment(
                _joined(f"experiments.{index}", exc.field), exc.reason
            ) from None
        if any(known.id == experiment.id for known in experiments):
            raise InvalidExperiment(f"experiments.{index}.id", f"repeats {experiment.id!r}")
        experiments.append(experiment)
    return experiments


def _joined(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if field else prefix


#: The smallest share of traffic a variant with a positive weight may get: below it, hashing
#: would almost never assign it and no analysis (SRM, lift) can say anything about it.
MIN_TRAFFIC_SHARE = 1e-4


def _too_small_share(weights: list[float]) -> tuple[int, str] | None:
    """The position of the first positive weight giving less than MIN_TRAFFIC_SHARE of the
    traffic, and why it is refused; None when every share is usable."""
    total = sum(weights)
    for index, weight in enumerate(weights):
        if weight > 0 and weight / total < MIN_TRAFFIC_SHARE:
            return index, (
                f"gives {weight / total:.2g} of the traffic; a variant needs 0 or at least "
                f"{MIN_TRAFFIC_SHARE:g} of it"
            )
    return None
