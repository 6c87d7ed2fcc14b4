"""Experiment definitions (YAML and validation that names the field), the population filter,
and what applying a variant does to a decision: its policy, and personalisation off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.arbitration import Exploration
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import decide
from engine.decision import DecisionRequest, ExperimentExposure
from engine.events import Channel, Event, EventType
from engine.fold import fold
from engine.next_best_action import DecisionPolicy
from experiments.assignment import (
    ExperimentAssigner,
    ExperimentRouter,
    depersonalised,
    variant_policy,
)
from experiments.definitions import (
    Experiment,
    InvalidExperiment,
    Variant,
    load_experiments,
    validated,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOGUE = load_catalogue(RETAIL_BANK_CATALOGUE)
POLICY = DecisionPolicy(catalogue=CATALOGUE, exploration=Exploration(strategy="off"))

YAML = """
experiments:
  - id: nba-holdout
    hypothesis: Personalised offers convert more than a holdout.
    start: 2026-03-02T09:00:00Z
    stop: 2026-03-30T09:00:00Z
    variants:
      - {name: holdout, weight: 10, personalisation: false}
      - name: challenger
        weight: 90
        model_alias: challenger
        exploration_epsilon: 0.2
        actions: [savings_plan, travel_insurance]
    population: {segments: [affluent, premium], channels: [web, mobile_app], sample_percent: 50}
    primary_metric: value
    guardrails: [{metric: complaint_rate, margin: 0.01}]
"""


def definition(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "exp-1",
        "hypothesis": "B converts more.",
        "start": T0.isoformat(),
        "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}],
    }
    return data | changes


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiments.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- definitions --------------------------------------------------------------------------------


def test_a_yaml_file_defines_experiments_with_every_part(tmp_path: Path) -> None:
    [experiment] = load_experiments(write(tmp_path, YAML))

    assert experiment.id == "nba-holdout"
    assert experiment.stop == T0 + timedelta(days=28)
    assert experiment.control_variant == "holdout"
    assert experiment.assignment_salt == "nba-holdout"
    assert experiment.weights == {"holdout": 10, "challenger": 90}
    challenger = experiment.variant("challenger")
    assert (challenger.model_alias, challenger.exploration_epsilon) == ("challenger", 0.2)
    assert challenger.actions == ["savings_plan", "travel_insurance"]
    assert not experiment.variant("holdout").personalisation
    assert experiment.population.sample_percent == 50
    assert experiment.primary_metric == "value"
    assert [(g.metric, g.margin) for g in experiment.guardrails] == [("complaint_rate", 0.01)]
    experiment.check_catalogue(CATALOGUE)


def test_defaults_are_the_first_variant_as_control_and_three_guardrails() -> None:
    experiment = validated(definition())

    assert experiment.control_variant == "A"
    assert [g.metric for g in experiment.guardrails] == [
        "complaint_rate",
        "opt_out_rate",
        "feedback_score",
    ]
    assert experiment.variant("B") == Variant(name="B", weight=1)
    assert experiment.sequential
    assert experiment.covariate_days == 28


def two(
    first: dict[str, Any] | None = None, second: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Two variants A and B of weight 1, with changes."""
    return {
        "variants": [
            {"name": "A", "weight": 1} | (first or {}),
            {"name": "B", "weight": 1} | (second or {}),
        ]
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (two(second={"weight": -1}), "variants.1.weight"),
        (two(second={"name": "A"}), "variants.1.name"),
        (two({"weight": 0}, {"weight": 0}), "variants"),
        (two({"colour": "red"}), "variants.0.colour"),
        ({"variants": [{"name": "A", "weight": 1}]}, "variants"),
        (two({"exploration_epsilon": 2}), "variants.0.exploration_epsilon"),
        (two({"actions": ["x", "x"]}), "variants.0.actions"),
        (two({"name": "has space"}), "variants.0.name"),
        ({"control": "C"}, "control"),
        ({"stop": (T0 - timedelta(days=1)).isoformat()}, "stop"),
        ({"start": "2026-03-02T09:00:00"}, "start"),
        ({"id": "Has Spaces"}, "id"),
        ({"population": {"sample_percent": 0}}, "population.sample_percent"),
        ({"population": {"segments": ["gold"]}}, "population.segments.0"),
        ({"guardrails": [{"metric": "complaint_rate"}] * 2}, "guardrails.1.metric"),
        ({"primary_metric": "clicks"}, "primary_metric"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_invalid_definitions_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidExperiment) as refused:
        validated(definition(**changes))

    assert refused.value.field == field


def test_file_errors_name_the_experiment_and_the_field(tmp_path: Path) -> None:
    bad = YAML.replace("weight: 90", "weight: lots")
    with pytest.raises(InvalidExperiment) as refused:
        load_experiments(write(tmp_path, bad))
    assert refused.value.field == "experiments.0.variants.1.weight"

    twice = YAML + YAML.split("experiments:\n", 1)[1]
    with pytest.raises(InvalidExperiment) as repeated:
        load_experiments(write(tmp_path, twice))
    assert repeated.value.field == "experiments.1.id"

    with pytest.raises(InvalidExperiment, match="not valid YAML"):
        load_experiments(write(tmp_path, "experiments: [unclosed"))
    with pytest.raises(InvalidExperiment, match="cannot read"):
        load_experiments(tmp_path / "missing.yaml")


def test_a_yaml_tag_is_data_never_code(tmp_path: Path) -> None:
    with pytest.raises(InvalidExperiment, match="not valid YAML"):
        load_experiments(write(tmp_path, "experiments: !!python/object/apply:os.system [ls]"))


def test_an_action_the_catalogue_lacks_is_named() -> None:
    variants = [
        {"name": "A", "weight": 1},
        {"name": "B", "weight": 1, "actions": ["savings_plan", "yacht"]},
    ]
    with pytest.raises(InvalidExperiment) as refused:
        validated(definition(variants=variants)).check_catalogue(CATALOGUE)

    assert refused.value.field == "variants.1.actions.1"


def test_new_weights_must_name_every_variant_and_keep_the_rest() -> None:
    experiment = validated(definition(population={"sample_percent": 20}))

    ramped = experiment.with_weights({"A": 0, "B": 5})

    assert ramped.weights == {"A": 0, "B": 5}
    assert ramped.population == experiment.population
    with pytest.raises(InvalidExperiment) as refused:
        experiment.with_weights({"A": 1})
    assert refused.value.field == "weights"
    with pytest.raises(InvalidExperiment) as negative:
        experiment.with_weights({"A": 1, "B": -2})
    assert negative.value.field == "weights.B"


def test_an_experiment_runs_from_start_to_stop() -> None:
    experiment = validated(definition(stop=(T0 + timedelta(days=7)).isoformat()))

    assert not experiment.is_running(T0 - timedelta(seconds=1))
    assert experiment.is_running(T0)
    assert not experiment.is_running(T0 + timedelta(days=7))
    assert experiment.stopped(T0 + timedelta(days=1)).stop == T0 + timedelta(days=1)
    assert experiment.stopped(T0 + timedelta(days=9)).stop == T0 + timedelta(days=7)


# -- the population -----------------------------------------------------------------------------


def test_the_sample_only_grows_when_its_percentage_grows() -> None:
    customers = [f"cust-{i}" for i in range(4000)]
    small = validated(definition(population={"sample_percent": 20})).population
    large = validated(definition(population={"sample_percent": 50})).population

    def sample(population: Any) -> set[str]:
        return {
            c for c in customers if population.admits("exp-1", c, segment="mass", channel="web")
        }

    in_small, in_large = sample(small), sample(large)

    assert in_small <= in_large
    assert len(in_small) / len(customers) == pytest.approx(0.20, abs=0.025)
    assert len(in_large) / len(customers) == pytest.approx(0.50, abs=0.025)


def test_segments_and_channels_filter_the_population() -> None:
    population = validated(
        definition(population={"segments": ["premium"], "channels": ["atm", "web"]})
    ).population

    assert population.admits("s", "c1", segment="premium", channel="atm")
    assert not population.admits("s", "c1", segment="mass", channel="atm")
    assert not population.admits("s", "c1", segment="premium", channel="call_center")


# -- applying a variant -------------------------------------------------------------------------


def test_a_variant_sets_exploration_and_the_catalogue_subset() -> None:
    variant = Variant(
        name="B", weight=1, exploration_epsilon=0.25, actions=["savings_plan", "yacht"]
    )

    applied = variant_policy(POLICY, variant)

    assert applied.policy is not None
    assert [a.id for a in applied.policy.catalogue.actions] == ["savings_plan"]
    assert applied.policy.exploration.strategy == "epsilon_greedy"
    assert applied.policy.exploration.epsilon == 0.25
    assert applied.policy.contact == POLICY.contact
    assert (applied.personalised, applied.model_alias) == (True, "champion")
    assert variant_policy(POLICY, Variant(name="A", weight=1)).policy is POLICY
    no_exploration = variant_policy(POLICY, Variant(name="C", weight=1, exploration_epsilon=0))
    assert no_exploration.policy is not None
    assert no_exploration.policy.exploration.strategy == "off"
    holdout = variant_policy(POLICY, Variant(name="H", weight=1, personalisation=False))
    assert (holdout.personalised, holdout.model_alias) == (False, None)


def event(index: int, type_: EventType, days_ago: float, **attributes: Any) -> Event:
    channel = Channel.ATM if type_ is EventType.REQUEST else Channel.CALL_CENTER
    return Event(
        event_id=f"e{index}",
        customer_id="cust-1",
        touchpoint=f"{channel.value}-1",
        channel=channel,
        type=type_,
        occurred_at=T0 - timedelta(days=days_ago),
        attributes=attributes,
    )


def premium_customer_with_a_complaint() -> list[Event]:
    """A weekly 400 EUR withdrawal (a premium habit), marketing consent, a stated contact
    channel, and an open complaint."""
    withdrawals = [
        event(i, EventType.REQUEST, 7 * (i + 1), request="cash_withdrawal", amount=400,
              currency="EUR", receipt=False)
        for i in range(8)
    ]  # fmt: skip
    return [
        *withdrawals,
        event(20, EventType.CONSENT_CHANGED, 30, purpose="marketing", status="granted"),
        event(21, EventType.PREFERENCE_STATED, 20, key="contact_channel", value="sms"),
        event(22, EventType.COMPLAINT_OPENED, 1, case_id="case-1"),
    ]


def holdout_and_personalised() -> Experiment:
    return validated(
        definition(
            variants=[
                {"name": "holdout", "weight": 1, "personalisation": False},
                {"name": "personalised", "weight": 0},
            ]
        )
    )


def test_personalisation_off_keeps_what_was_stated_and_owed_and_drops_what_was_learned() -> None:
    config = EngineConfig()
    profile = fold(None, premium_customer_with_a_complaint(), config)
    request = DecisionRequest(customer_id="cust-1", touchpoint="atm-1", channel=Channel.ATM)
    assigner = ExperimentAssigner([holdout_and_personalised()], policy=POLICY)

    treatment = assigner(profile, request)
    assert treatment is not None
    holdout = decide(
        treatment.profile, request, prior=ChannelPrior(), config=config, decision_id="d1",
        at=T0, policy=treatment.policy, scorer=treatment.scorer,
    )  # fmt: skip
    personal = decide(
        profile, request, prior=ChannelPrior(), config=config, decision_id="d1", at=T0,
        policy=POLICY,
    )  # fmt: skip

    assert treatment.exposures == [ExperimentExposure(experiment_id="exp-1", variant="holdout")]
    assert personal.defaults
    assert personal.segment == "premium"
    assert holdout.defaults == []  # no habit pre-filled
    assert holdout.segment == "mass"  # no learned segment
    assert holdout.known_customer
    assert holdout.channel is not None
    assert holdout.channel.source == "stated"
    assert holdout.channel.channel == "sms"  # what the customer said still holds
    assert holdout.open_problems == ["complaint"]  # service before sales still holds
    assert holdout.actions[0].id == personal.actions[0].id == "resolve_complaint"
    stripped = depersonalised(profile)
    assert stripped is not None
    assert (stripped.habits, stripped.contact_channels, stripped.channel_usage) == ({}, {}, {})
    assert stripped.consents == profile.consents
    assert stripped.cases == profile.cases


def test_the_assigner_skips_anonymous_decisions_and_customers_outside_the_population() -> None:
    experiment = validated(definition(population={"channels": ["web"]}))
    assigner = ExperimentAssigner([experiment], policy=POLICY)

    def ask(customer: str, channel: Channel) -> list[ExperimentExposure] | None:
        request = DecisionRequest(customer_id=customer, touchpoint="t", channel=channel)
        treatment = assigner(None, request)
        return None if treatment is None else treatment.exposures

    assert ask("anonymous", Channel.WEB) is None
    assert ask("cust-1", Channel.ATM) is None
    assert ask("cust-1", Channel.WEB) == [
        ExperimentExposure(experiment_id="exp-1", variant=experiment.assign("cust-1"))
    ]


def test_a_decision_takes_part_in_the_first_running_experiment_that_admits_it() -> None:
    half = validated(definition(id="first", population={"sample_percent": 50}))
    everyone = validated(definition(id="second"))
    router = ExperimentRouter(running=lambda at: [half, everyone], policy=POLICY)
    assigner = router.assigner(T0)
    assert assigner is not None

    seen: dict[str, int] = {"first": 0, "second": 0}
    for i in range(2000):
        request = DecisionRequest(customer_id=f"c{i}", touchpoint="t", channel=Channel.WEB)
        treatment = assigner(None, request)
        assert treatment is not None
        seen[treatment.exposures[0].experiment_id] += 1

    assert seen["first"] / 2000 == pytest.approx(0.5, abs=0.04)
    assert ExperimentRouter(running=lambda at: [], policy=POLICY).assigner(T0) is None


def test_the_variant_model_comes_from_its_alias() -> None:
    experiment = validated(
        definition(
            variants=[
                {"name": "A", "weight": 0},
                {"name": "B", "weight": 1, "model_alias": "challenger"},
            ]
        )
    )
    asked: list[str] = []

    def scorers(alias: str) -> None:
        asked.append(alias)

    assigner = ExperimentAssigner([experiment], policy=POLICY, scorers=scorers)
    request = DecisionRequest(customer_id="c1", touchpoint="t", channel=Channel.WEB)
    treatment = assigner(None, request)

    assert treatment is not None
    assert treatment.scorer is None
    assert asked == ["challenger"]
