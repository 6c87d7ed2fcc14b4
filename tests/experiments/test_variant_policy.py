"""A variant's policy is the serving policy with only what the variant sets changed: the
catalogue subset (`actions`) and the exploration rate (`exploration_epsilon`). Every other
field, the objective first, stays as the deployment runs it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from engine.arbitration import Exploration
from engine.catalogue import RETAIL_BANK_CATALOGUE, load_catalogue
from engine.channel_preference import ChannelPrior
from engine.config import EngineConfig
from engine.decide import decide
from engine.decision import Decision, DecisionRequest
from engine.events import Channel
from engine.fold import fold
from engine.next_best_action import DecisionPolicy
from engine.policy import ContactPolicy
from engine.profile import Profile
from experiments.assignment import ExperimentAssigner, variant_policy
from experiments.definitions import Variant, validated
from tests.engine.builders import T0, event, withdrawal

CATALOGUE = load_catalogue(RETAIL_BANK_CATALOGUE)
#: A base policy whose every field differs from the default, so that a field rebuilt from a
#: default instead of copied from the base shows.
BASE = DecisionPolicy(
    catalogue=CATALOGUE,
    contact=ContactPolicy(version="contact-test", quiet_hours=(22, 7), decline_limit=3),
    exploration=Exploration(strategy="thompson", epsilon=0.1, max_actions=2, thompson_draws=64),
    objective="acceptance",
)
NOON = T0.replace(hour=12)


def test_the_base_differs_from_the_defaults_in_every_field() -> None:
    defaults = DecisionPolicy(catalogue=CATALOGUE.model_copy(update={"version": "other"}))
    differing = [
        name
        for name in DecisionPolicy.model_fields
        if getattr(BASE, name) != getattr(defaults, name)
    ]
    assert differing == list(DecisionPolicy.model_fields)


def others_as_in_base(policy: DecisionPolicy, changed: set[str]) -> dict[str, Any]:
    """The fields outside `changed` that differ from the base's (empty when all are kept)."""
    return {
        name: getattr(policy, name)
        for name in DecisionPolicy.model_fields
        if name not in changed and getattr(policy, name) != getattr(BASE, name)
    }


def test_actions_change_only_the_catalogue() -> None:
    applied = variant_policy(
        BASE, Variant(name="B", weight=1, actions=["travel_insurance", "savings_plan", "yacht"])
    )

    assert applied.policy is not None
    # Catalogue order kept, unknown ids ignored, the rest of the catalogue as it was.
    assert [a.id for a in applied.policy.catalogue.actions] == ["savings_plan", "travel_insurance"]
    assert applied.policy.catalogue.version == CATALOGUE.version
    assert others_as_in_base(applied.policy, {"catalogue"}) == {}
    assert applied.policy.objective == "acceptance"


@pytest.mark.parametrize(
    ("epsilon", "strategy"), [(0.25, "epsilon_greedy"), (0.0, "off"), (1.0, "epsilon_greedy")]
)
def test_an_exploration_rate_changes_only_the_exploration(epsilon: float, strategy: str) -> None:
    applied = variant_policy(BASE, Variant(name="B", weight=1, exploration_epsilon=epsilon))

    assert applied.policy is not None
    exploration = applied.policy.exploration
    assert (exploration.strategy, exploration.epsilon) == (strategy, epsilon)
    # The exploration's other settings stay too.
    assert (exploration.max_actions, exploration.thompson_draws) == (2, 64)
    assert others_as_in_base(applied.policy, {"exploration"}) == {}


def test_both_change_catalogue_and_exploration_and_nothing_else() -> None:
    variant = Variant(name="B", weight=1, exploration_epsilon=0.3, actions=["savings_plan"])

    applied = variant_policy(BASE, variant)

    assert applied.policy is not None
    assert [a.id for a in applied.policy.catalogue.actions] == ["savings_plan"]
    assert applied.policy.exploration.epsilon == 0.3
    assert others_as_in_base(applied.policy, {"catalogue", "exploration"}) == {}


@pytest.mark.parametrize(
    "variant",
    [
        Variant(name="A", weight=1),
        Variant(name="M", weight=1, model_alias="challenger"),
        Variant(name="H", weight=1, personalisation=False),
    ],
)
def test_a_variant_that_sets_no_policy_field_serves_the_base_itself(variant: Variant) -> None:
    applied = variant_policy(BASE, variant)

    assert applied.policy is BASE
    assert applied.personalised is variant.personalisation
    assert applied.model_alias == (variant.model_alias if variant.personalisation else None)


def test_the_subset_policy_recomputes_what_it_derives_from_the_catalogue() -> None:
    # The base's cached derivations cover its whole catalogue; a variant's must cover its own.
    assert len(BASE.purposes) == len(CATALOGUE.actions)
    assert BASE.limited  # computed (and cached) on the base before the variant is built

    applied = variant_policy(BASE, Variant(name="B", weight=1, actions=["savings_plan"]))

    assert applied.policy is not None
    assert applied.policy.purposes == {"savings_plan": "marketing"}
    assert applied.policy.limited <= {"savings_plan"}


def test_no_serving_policy_stays_none() -> None:
    applied = variant_policy(None, Variant(name="B", weight=1, exploration_epsilon=0.3))

    assert applied.policy is None


# -- a deployment that ranks by acceptance keeps ranking by acceptance in its variants --------


def marketing_customer() -> Profile:
    """A premium customer of four months who accepts marketing: offered a valuable savings
    plan (180 EUR, weight 1) and a likelier-weighted app onboarding (25 EUR, weight 1.2)."""
    history = [withdrawal(T0 - timedelta(days=120 - 20 * d), amount=400) for d in range(7)]
    return fold(None, [*history, event("consent_changed", purpose="marketing", status="granted")])


def decided(policy: DecisionPolicy | None) -> Decision:
    return decide(
        marketing_customer(),
        DecisionRequest(customer_id="cust-1", touchpoint="web-1", channel=Channel.WEB),
        prior=ChannelPrior(),
        config=EngineConfig(),
        decision_id="dec-1",
        at=NOON,
        policy=policy,
    )


@pytest.mark.parametrize(
    "variant",
    [
        {"name": "B", "weight": 1, "exploration_epsilon": 0},
        {"name": "B", "weight": 1, "actions": ["savings_plan", "mobile_app_onboarding"]},
    ],
    ids=["exploration only", "actions only"],
)
def test_a_variant_of_an_acceptance_deployment_ranks_by_acceptance(
    variant: dict[str, Any],
) -> None:
    serving = DecisionPolicy(
        catalogue=CATALOGUE, exploration=Exploration(strategy="off"), objective="acceptance"
    )
    experiment = validated(
        {
            "id": "exp-1",
            "hypothesis": "h",
            "start": T0 - timedelta(days=1),
            "stop": T0 + timedelta(days=30),
            "variants": [variant, {"name": "A", "weight": 0}],
            "primary_metric": "value",
        }
    )
    request = DecisionRequest(customer_id="cust-1", touchpoint="web-1", channel=Channel.WEB)
    treatment = ExperimentAssigner([experiment], policy=serving)(marketing_customer(), request)
    assert treatment is not None
    assert treatment.policy is not None
    assert treatment.policy is not serving  # the variant did change the policy

    in_variant = decided(treatment.policy)
    by_value = decided(serving.model_copy(update={"objective": "expected_value"}))

    assert treatment.policy.objective == "acceptance"
    assert in_variant.policy_version.endswith("/acceptance")
    scored = [c for c in in_variant.candidates if c.status != "dropped"]
    assert scored
    assert all(c.factors["lever"] == c.factors["weight"] for c in scored)  # value left out
    # The likelier offer leads, as in the deployment itself; by value the other one would.
    assert [a.id for a in in_variant.actions] == [a.id for a in decided(serving).actions]
    assert [a.id for a in in_variant.actions] == ["mobile_app_onboarding", "savings_plan"]
    assert [a.id for a in by_value.actions] == ["savings_plan", "mobile_app_onboarding"]
